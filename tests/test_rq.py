"""RQ: a real redis-server (started here on a free loopback port) and a real forking worker."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import JsonPostSink, Receiver
from support import free_port, wait_for_port

import edgemetrics
from edgemetrics.events import Job

REDIS = shutil.which("redis-server")


def fail_on_purpose() -> None:
    raise ValueError("bad job")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REDIS is None:
        pytest.fail("redis-server is needed: apt-get install redis-server")
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_rq_jobs_from_a_forking_worker_arrive(redis_url: str) -> None:
    from edgemetrics.integrations import rq as em_rq
    from redis import Redis
    from rq import Queue, Worker

    receiver = Receiver()
    edgemetrics.configure(sink=JsonPostSink(receiver.port), flush_interval=0.05)
    em_rq.setup(service="jobs")
    connection = Redis.from_url(redis_url)
    queue = Queue("thumbs", connection=connection)
    queue.enqueue("os.path.basename", "/videos/v1.mp4")
    queue.enqueue(fail_on_purpose)
    time.sleep(0.3)  # a queue delay the events must show
    # The default Worker forks a work horse per job: the events cross that fork.
    try:
        Worker([queue], connection=connection).work(burst=True)
        edgemetrics.flush()
        events, pids = receiver.snapshot()
    finally:
        edgemetrics.shutdown()
        receiver.close()
    jobs = sorted((e for e in events if isinstance(e, Job)), key=lambda j: j.job_name)
    assert len(pids) == 2  # one work horse per job, each flushed before os._exit
    assert [(j.job_name, j.outcome, j.queue, j.service) for j in jobs] == [
        ("os.path.basename", "success", "thumbs", "jobs"),
        ("test_rq.fail_on_purpose", "error", "thumbs", "jobs"),
    ]
    assert all(j.queue_delay_ms >= 250 for j in jobs)
