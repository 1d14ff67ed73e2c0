"""A host process that tracks events through the real exporter (for the delivery tests).

Event ids are ``{proc:08x}{thread:08x}{seq:016x}`` so the tests know exactly what was sent.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import edgemetrics
from edgemetrics.decorators import track_purchase
from edgemetrics.events import View


def event_id(proc: int, thread: int, seq: int) -> str:
    return f"{proc:08x}{thread:08x}{seq:016x}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--proc", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--events", type=int, default=1000, help="per thread; 0 = forever")
    parser.add_argument("--pause-every", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--flush-interval", type=float, default=0.2)
    parser.add_argument("--purchase", action="store_true")
    parser.add_argument("--fork", action="store_true")
    parser.add_argument("--drain-wait", type=float, default=0.0)
    args = parser.parse_args()
    from edgemetrics.exporter import RetryPolicy

    client = edgemetrics.configure(
        url=args.url,
        secret=os.environ["EDGEMETRICS_SECRET"],
        spool=args.spool,
        flush_interval=args.flush_interval,
        retry=RetryPolicy(base=0.05, cap=0.3),
        health_interval=None,
    )
    if args.purchase:

        @track_purchase(lambda result: result)
        def buy() -> dict[str, object]:
            return {
                "amount_minor": 1299,
                "currency": "EUR",
                "transaction_id": "tx-kill",
                "event_id": event_id(args.proc, 0, 1),
            }

        buy()
        print("PURCHASE_RETURNED", flush=True)
        time.sleep(60)  # the test kills us here
        return 0

    if args.fork:
        # Buffered in the parent (the flush interval is long), then fork: the child must
        # not send these a second time.
        for seq in range(100):
            edgemetrics.track(View(content_id="v1", event_id=event_id(args.proc, 0, seq)))
        pid = os.fork()
        if pid == 0:
            for seq in range(50):
                edgemetrics.track(View(content_id="v1", event_id=event_id(args.proc + 1, 0, seq)))
            edgemetrics.shutdown(timeout=5.0)
            os._exit(0)
        os.waitpid(pid, 0)
        edgemetrics.shutdown(timeout=5.0)
        print("DONE fork", flush=True)
        return 0

    def work(thread: int) -> None:
        seq = 0
        while args.events == 0 or seq < args.events:
            edgemetrics.track(View(content_id="v1", creator_id="c1", event_id=event_id(args.proc, thread, seq)))
            seq += 1
            if args.pause_every and seq % args.pause_every == 0:
                time.sleep(args.pause)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
    for t in threads:
        t.start()
    print("STARTED", flush=True)
    for t in threads:
        t.join()
    if args.drain_wait:
        # Stay up until the backlog (ours and other processes') is delivered.
        edgemetrics.flush(args.drain_wait)
        deadline = time.monotonic() + args.drain_wait
        while time.monotonic() < deadline and client.spool is not None:
            if client.spool.stats().batches == 0:
                break
            time.sleep(0.1)
    edgemetrics.shutdown(timeout=2.0)
    c = client.counters
    print(f"DONE tracked={args.threads * args.events} exported={c.exported} spooled={c.spooled_events}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
