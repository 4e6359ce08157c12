"""docs/python.md's "survives kill -9" walkthrough, run as a reader would:
its code block saved as a file, started, SIGKILLed mid-step, started again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from conftest import Server, eventually

GUIDE = Path(__file__).parents[3] / "docs" / "python.md"


def walkthrough() -> str:
    text = GUIDE.read_text()
    section = text[text.index("Save this as `refunds.py`") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the walkthrough's code block"
    return found.group(1)


def test_the_guides_workflow_survives_kill_9(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server("--lease-ttl-secs", "1", "--retry-base-ms", "10")
    script = tmp_path / "refunds.py"
    script.write_text(walkthrough())
    env = {**os.environ, "STEADFAST_URL": server.url, "STEADFAST_KEY": server.admin_key}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )

    first = start()
    assert first.stdout is not None
    assert "kill me now" in first.stdout.readline()
    first.send_signal(signal.SIGKILL)
    first.wait()

    second = start()
    try:
        client = server.client()
        [job] = client.list_jobs(queue="refunds").jobs
        done = eventually(
            lambda: (lambda j: j if j.state == "succeeded" else None)(client.get(job.id)),
            what="the refund to finish",
        )
    finally:
        second.send_signal(signal.SIGINT)
        _, log = second.communicate(timeout=60)
    assert done.output == {"refund": "re_o-1"}
    assert [a.outcome for a in done.attempts or []] == ["lease_expired", "succeeded"]
    assert "an earlier attempt died mid-refund" in log
    steps = {s.name: s for s in done.steps or []}
    assert steps["look-up"].attempt == 1, "the stored step was not run again"
