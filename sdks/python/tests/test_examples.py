"""The examples run as documented, against a real server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import Server, wait_state

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_the_quickstart_runs_its_signup_to_the_end(server: Server) -> None:
    env = {**os.environ, "STEADFAST_URL": server.url, "STEADFAST_KEY": server.admin_key}
    example = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "grace@example.com"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert example.stdout is not None
        first = example.stdout.readline()
        found = re.match(r"enqueued (\S+) \(queued\)", first)
        assert found, first
        done = wait_state(server.client(), found.group(1), "succeeded")
        assert done.output is not None
        assert done.output["account"]["user_id"] == "u-grace"
        assert len(done.output["mails"]) == 2
        assert [s.name for s in done.steps or []] == [
            "create-account",
            "send-welcome",
            "sleep:before-tips",
            "send-tips",
        ]
    finally:
        example.send_signal(signal.SIGINT)
        _, errors = example.communicate(timeout=30)
    assert example.returncode == 0, errors
    assert "account u-grace ready" in errors
