"""Fixtures: a real ``steadfast`` server process (the binary the project's test
command built, or ``STEADFAST_BIN``), and helpers to run workers and wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, TypeVar

import httpx
import pytest

import steadfast

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def binary() -> str:
    found = os.environ.get("STEADFAST_BIN") or str(REPO / "target" / "debug" / "steadfast")
    if not Path(found).is_file():
        pytest.fail(f"no steadfast binary at {found}: build it (cargo build) or set STEADFAST_BIN")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def eventually(check: Callable[[], Optional[T]], timeout: float = 30.0, what: str = "") -> T:
    """Polls ``check`` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


class Server:
    """One ``steadfast serve`` on an embedded store in a temp dir."""

    def __init__(self, data_dir: Path, flags: List[str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEADFAST_")}
        env["RUST_LOG"] = "warn"
        self.log = open(data_dir.parent / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                binary(),
                "serve",
                "--data-dir",
                str(data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
                *flags,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        eventually(self._ready, what="the server to be ready")
        self.admin_key = (data_dir / "admin.key").read_text().strip()

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def key(self, role: str, tenant: str = "default") -> str:
        """A new API key of ``role`` (``steadfast key create``)."""
        if tenant != "default":
            subprocess.run(
                [binary(), "tenant", "create", tenant, "--data-dir", str(self.data_dir)],
                check=False,
                capture_output=True,
            )
        made = subprocess.run(
            [
                binary(),
                "key",
                "create",
                "--tenant",
                tenant,
                "--role",
                role,
                "--name",
                "pytest",
                "--data-dir",
                str(self.data_dir),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return made.stdout.strip()

    def client(self, key: Optional[str] = None, **options: object) -> steadfast.Client:
        return steadfast.Client(self.url, key or self.admin_key, **options)  # type: ignore[arg-type]

    def requests(self) -> Dict[str, float]:
        """``steadfast_http_requests_total`` by ``METHOD route`` (summed over
        statuses) and by ``METHOD route STATUS``."""
        text = httpx.get(
            f"{self.url}/metrics", headers={"authorization": f"Bearer {self.admin_key}"}
        ).text
        counts: Dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith("steadfast_http_requests_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            name = f"{labels['method']} {labels['route']}"
            count = float(line.rsplit(" ", 1)[1])
            counts[name] = counts.get(name, 0) + count
            counts[f"{name} {labels['status']}"] = count
        return counts

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server shared by the tests that need no special flags."""
    started = Server(tmp_path_factory.mktemp("server") / "data", ["--retry-base-ms", "10"])
    yield started
    started.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts servers with particular flags; stops them after the test."""
    started: List[Server] = []

    def start(*flags: str) -> Server:
        one = Server(tmp_path / f"data-{len(started)}", list(flags))
        started.append(one)
        return one

    yield start
    for one in started:
        one.stop()


@pytest.fixture
def client(server: Server) -> Iterator[steadfast.Client]:
    with server.client() as made:
        yield made


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    """A queue of the test's own on the shared server."""
    return re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:100]


@contextlib.contextmanager
def running(worker: steadfast.Worker) -> Iterator[threading.Thread]:
    """Runs ``worker`` on its own event loop in a thread; stops it on exit
    and checks it stopped cleanly."""
    failure: List[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(worker.run_async())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "the worker did not stop"
        if failure:
            raise failure[0]


def wait_state(client: steadfast.Client, job_id: str, *states: str) -> steadfast.Job:
    """Polls until the job is in one of ``states``."""
    return eventually(
        lambda: (lambda job: job if job.state in states else None)(client.get(job_id)),
        what=f"job {job_id} to be {states}",
    )
