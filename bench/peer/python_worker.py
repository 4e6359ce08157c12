"""The Python worker of the `steadfast-py` benchmark adapter: the harness's
no-op job (one record line per job, the same `record` every Python peer
calls) under `steadfast.Worker`, as a user would write it.

Run by bench/peer/peer.sh with the SDK's venv (bench/compare.sh makes it).
STEADFAST_URL and STEADFAST_KEY say where the server is. The shape:
STEADFAST_PY_PROCESSES worker processes (default 2, one per core, as
Dramatiq and Celery run by default), each with STEADFAST_PY_CONCURRENCY
jobs at once (default 256) and STEADFAST_PY_HANDLER `sync` (a plain
function, run in the worker's threads; the default) or `async`.
On SIGTERM each process writes its CPU time and job count to
$REC_DIR/../steadfast-py-worker-<pid>.json, for CPU microseconds per job.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(os.environ["PEERS_ROOT"]) / "common"))
import steadfast
from pyrec import record

# next() on a count is atomic under the GIL: handler threads count safely.
counter = itertools.count(1)


def serve() -> None:
    concurrency = int(os.environ.get("STEADFAST_PY_CONCURRENCY", "256"))
    handler = os.environ.get("STEADFAST_PY_HANDLER", "sync")
    worker = steadfast.Worker(steadfast.Client(), concurrency=concurrency, shutdown_grace=10)
    queue = os.environ.get("STEADFAST_BENCH_QUEUE", "bench")

    if handler == "async":

        @worker.handler(queue)
        async def noop_async(ctx: steadfast.AsyncJobContext, p: dict[str, Any]) -> None:
            next(counter)
            record(p["i"], p["t"], time.time())

    else:

        @worker.handler(queue)
        def noop(ctx: steadfast.JobContext, p: dict[str, Any]) -> None:
            next(counter)
            record(p["i"], p["t"], time.time())

    started = time.time()
    worker.run()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "worker_cpu_s": usage.ru_utime + usage.ru_stime,
        "jobs": next(counter) - 1,
        "wall_s": time.time() - started,
        "concurrency": concurrency,
        "handler": handler,
    }
    out = Path(os.environ["REC_DIR"]).parent / f"steadfast-py-worker-{os.getpid()}.json"
    out.write_text(json.dumps(report))


def main() -> None:
    processes = int(os.environ.get("STEADFAST_PY_PROCESSES", "2"))
    if processes <= 1:
        serve()
        return
    env = {**os.environ, "STEADFAST_PY_PROCESSES": "1"}
    children = [subprocess.Popen([sys.executable, __file__], env=env) for _ in range(processes)]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.wait()


if __name__ == "__main__":
    main()
