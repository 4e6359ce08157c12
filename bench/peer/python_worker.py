"""The Python worker of the `steadfast-py` benchmark adapter: the harness's
no-op job (one record line per job, the same `record` every Python peer
calls) under `steadfast.Worker`, as a user would write it.

Run by bench/peer/peer.sh with the SDK's venv (bench/compare.sh makes it).
STEADFAST_URL and STEADFAST_KEY say where the server is;
STEADFAST_PY_CONCURRENCY and STEADFAST_PY_HANDLER (`sync` or `async`)
shape it. On SIGTERM it writes the process's CPU time and job count to
$REC_DIR/../steadfast-py-worker.json, for CPU microseconds per job.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(os.environ["PEERS_ROOT"]) / "common"))
import steadfast
from pyrec import record

# next() on a count is atomic under the GIL: handler threads count safely.
counter = itertools.count(1)


def main() -> None:
    concurrency = int(os.environ.get("STEADFAST_PY_CONCURRENCY", "64"))
    worker = steadfast.Worker(
        steadfast.Client(), concurrency=concurrency, shutdown_grace=10
    )
    queue = os.environ.get("STEADFAST_BENCH_QUEUE", "bench")

    if os.environ.get("STEADFAST_PY_HANDLER", "sync") == "async":

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
        "handler": os.environ.get("STEADFAST_PY_HANDLER", "sync"),
    }
    (Path(os.environ["REC_DIR"]).parent / "steadfast-py-worker.json").write_text(
        json.dumps(report)
    )


if __name__ == "__main__":
    main()
