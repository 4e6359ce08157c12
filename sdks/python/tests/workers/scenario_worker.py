"""A worker process for the process tests: ``scenario_worker.py SCENARIO QUEUE``.

It reads ``STEADFAST_URL`` and ``STEADFAST_KEY``, runs one scenario's
handler under ``Worker.run()`` (so SIGTERM and SIGINT shut it down), and
reports what it sees as JSON lines on stdout.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Dict

import steadfast


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def first_step(ctx: steadfast.JobContext) -> Any:
    return ctx.step("a", lambda key: {"from": f"attempt {ctx.attempt}"})


def crash_mid_step(ctx: steadfast.JobContext, payload: Any) -> Any:
    first_step(ctx)

    def charge(key: str) -> None:
        say(started="charge", key=key)
        threading.Event().wait()  # until the test SIGKILLs this process

    return ctx.step("charge", charge)


def resume(ctx: steadfast.JobContext, payload: Any) -> Dict[str, Any]:
    a = first_step(ctx)
    # A real step would ask the downstream here whether the charge happened.
    charge = ctx.step("charge", lambda key: {"reconciled": ctx.uncertain("charge"), "key": key})
    return {"a": a, "charge": charge}


def zombie(ctx: steadfast.JobContext, payload: Any) -> str:
    first_step(ctx)
    say(leased=True)
    sys.stdin.readline()  # the test freezes this process, then says "go"
    try:
        ctx.step("b", lambda key: "from the zombie")
        outcome = "checkpointed"
    except steadfast.LeaseLost:
        outcome = "LeaseLost"
    say(step_b=outcome, lease_lost=ctx.lease_lost)
    return "from the zombie"


def graceful(ctx: steadfast.JobContext, payload: Any) -> str:
    say(started=ctx.id)
    time.sleep(1.0)  # work in flight when SIGTERM comes
    return "finished after SIGTERM"


SCENARIOS = {
    "crash-mid-step": crash_mid_step,
    "resume": resume,
    "zombie": zombie,
    "graceful": graceful,
}


def main() -> None:
    scenario, queue = sys.argv[1], sys.argv[2]
    worker = steadfast.Worker(
        steadfast.Client(), concurrency=1, worker_id=f"py-{scenario}", poll_wait=0.5
    )
    worker.handler(queue)(SCENARIOS[scenario])
    worker.run()
    say(stopped=True)


if __name__ == "__main__":
    main()
