"""Real worker processes: SIGKILLed between a step's side effect and its
checkpoint, frozen past their lease with SIGSTOP, and stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator

import pytest

from conftest import Server, binary, eventually, wait_state

WORKER = Path(__file__).parent / "workers" / "scenario_worker.py"


class WorkerProcess:
    def __init__(self, server: Server, scenario: str, queue: str) -> None:
        env = {**os.environ, "STEADFAST_URL": server.url, "STEADFAST_KEY": server.admin_key}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), scenario, queue],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def read(self) -> Dict[str, Any]:
        """The worker's next report (blocks until it makes one)."""
        line = self.stdout.readline()
        assert line, f"the worker exited ({self.process.wait()}) without a report"
        report: Dict[str, Any] = json.loads(line)
        return report

    def send(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def workers(server: Server) -> Iterator[Callable[..., WorkerProcess]]:
    started = []

    def start(server: Server, scenario: str, queue: str) -> WorkerProcess:
        worker = WorkerProcess(server, scenario, queue)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_a_worker_killed_mid_step_is_resumed_with_the_step_uncertain(
    start_server: Callable[..., Server], workers: Callable[..., WorkerProcess]
) -> None:
    server = start_server("--lease-ttl-secs", "1", "--retry-base-ms", "10")
    client = server.client()
    job = client.enqueue("payments", {"amount": 10})
    crashing = workers(server, "crash-mid-step", "payments")
    assert crashing.read() == {"started": "charge", "key": f"{job.id}/charge"}
    crashing.send(signal.SIGKILL)
    crashing.process.wait()

    workers(server, "resume", "payments")
    done = wait_state(client, job.id, "succeeded")
    assert done.output is not None
    assert done.output["a"] == {"from": "attempt 1"}, "the checkpointed step is not run again"
    reconciled = done.output["charge"]["reconciled"]
    assert reconciled["attempt"] == 1
    assert reconciled["worker_id"] == "py-crash-mid-step"
    assert reconciled["attempt_outcome"] == "lease_expired"
    assert done.output["charge"]["key"] == f"{job.id}/charge", "the same key in every attempt"
    history = client.get(job.id).attempts or []
    assert [a.outcome for a in history] == ["lease_expired", "succeeded"]


def test_a_worker_frozen_past_its_lease_cannot_checkpoint_or_complete(
    start_server: Callable[..., Server], workers: Callable[..., WorkerProcess]
) -> None:
    server = start_server("--lease-ttl-secs", "1", "--retry-base-ms", "10")
    client = server.client()
    job = client.enqueue("zombies", {})
    zombie = workers(server, "zombie", "zombies")
    assert zombie.read() == {"leased": True}
    zombie.send(signal.SIGSTOP)
    # Frozen, its lease lapses and another worker takes the job.
    rescued = eventually(
        lambda: client.lease(["zombies"], worker_id="rescuer", wait_ms=500),
        what="the job to come back",
    )[0]
    assert (rescued.id, rescued.attempt) == (job.id, 2)
    zombie.send(signal.SIGCONT)
    assert zombie.process.stdin is not None
    zombie.process.stdin.write("go\n")
    zombie.process.stdin.flush()
    assert zombie.read() == {"step_b": "LeaseLost", "lease_lost": True}
    zombie.send(signal.SIGTERM)
    assert zombie.read() == {"stopped": True}
    assert zombie.process.wait(30) == 0

    requests = server.requests()
    for route in ("POST /v1/jobs/{id}/steps/{name}/start", "POST /v1/jobs/{id}/complete"):
        assert requests.get(f"{route} 409", 0) == 0, f"the zombie sent nothing stale: {requests}"
    fenced = client.get(job.id)
    assert fenced.state == "running", "the zombie's completion never landed"
    assert fenced.lease is not None
    assert fenced.lease.worker_id == "rescuer"
    assert [s.name for s in fenced.steps or []] == ["a"], "nor its checkpoint"
    client.complete(rescued.id, rescued.lease_token, "from the rescuer")
    assert client.get(job.id).output == "from the rescuer"


def test_sigterm_finishes_the_job_in_flight_and_leases_no_more(
    server: Server, workers: Callable[..., WorkerProcess], queue: str
) -> None:
    client = server.client()
    job = client.enqueue(queue, {})
    worker = workers(server, "graceful", queue)
    assert worker.read() == {"started": job.id}
    worker.send(signal.SIGTERM)
    later = client.enqueue(queue, {})
    assert worker.read() == {"stopped": True}
    assert worker.process.wait(30) == 0
    assert client.get(job.id).output == "finished after SIGTERM"
    assert client.get(later.id).state == "queued", "nothing was leased after SIGTERM"


def test_the_claims_drill_with_python_workers(tmp_path: Path) -> None:
    drill = subprocess.run(
        [
            binary(),
            "demo",
            "claims",
            "--worker",
            "python",
            "--python",
            sys.executable,
            "--claims",
            "120",
            "--workers",
            "2",
            "--kill-interval-ms",
            "400",
            "--seed",
            "16",
            "--ledger-dir",
            str(tmp_path / "ledgers"),
            "--timeout-secs",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env={k: v for k, v in os.environ.items() if not k.startswith("STEADFAST_")},
    )
    assert drill.returncode == 0, drill.stdout + drill.stderr
    summary = json.loads(drill.stdout.strip().splitlines()[-1])
    assert summary["finished"] == summary["claims"] == 120
    assert summary["kills"] > 0
    assert (summary["double_bills"], summary["double_charges"]) == (0, 0)
    assert summary["enrichment_billed"] == summary["payments"] == 120
