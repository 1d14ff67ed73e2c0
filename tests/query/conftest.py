from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time as _time
from collections.abc import Iterator

import pytest
from hypothesis import Phase, settings
from support import free_port

from edgemetrics.store import EmbeddedStore


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    store = EmbeddedStore(tmp_path_factory.mktemp("q") / "em.duckdb")
    yield store
    store.close()


# EM_NO_SHRINK=1: report the first failing example as found (debugging aid).
settings.register_profile("noshrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])
if os.environ.get("EM_NO_SHRINK"):
    settings.load_profile("noshrink")


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL server from Debian's binaries (apt package ``postgresql``), in a temp
    dir on a free loopback port, run as the ``postgres`` user when we are root; stopped after."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL binaries missing: apt-get install postgresql")
    bindir = os.path.dirname(found[-1])
    root = tempfile.mkdtemp(prefix="em-pg-")
    data = os.path.join(root, "data")
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root.
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_user,
            f"{bindir}/initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_user,
            f"{bindir}/pg_ctl",
            "-D",
            data,
            "-l",
            os.path.join(root, "log"),
            "-w",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    try:
        import psycopg

        deadline = _time.monotonic() + 30
        while True:
            try:
                psycopg.connect(dsn).close()
                break
            except psycopg.OperationalError:
                if _time.monotonic() > deadline:
                    raise
                _time.sleep(0.2)
        yield dsn
    finally:
        subprocess.run(
            [*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
