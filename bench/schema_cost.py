#!/usr/bin/env python3
"""What a queue's payload schema costs at enqueue.

Starts a server (``--bin``, release build) on a fresh embedded data dir,
registers a schema on one queue, and enqueues the same ~100-byte payloads
to a queue without a schema and to the one with, in turns, one by one
(``--producers`` concurrent requests) and in batches of 1000. Prints jobs
per second for each, and the ratio.

    cargo build --release -p steadfast-cli
    python3 bench/schema_cost.py --bin target/release/steadfast --jobs 20000

Needs only the standard library. Numbers are this machine's, read as ratios.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

SCHEMA = {
    "type": "object",
    "required": ["i", "t", "pad"],
    "properties": {
        "i": {"type": "integer", "minimum": 0},
        "t": {"type": "number"},
        "pad": {"type": "string", "maxLength": 100},
    },
    "additionalProperties": False,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Api:
    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key

    def call(self, method: str, path: str, body: Optional[Any] = None, conn: Optional[http.client.HTTPConnection] = None) -> Any:
        own = conn is None
        connection = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        text = response.read()
        if own:
            connection.close()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {text[:200]!r}")
        return json.loads(text) if text else None


def payload(i: int) -> Dict[str, Any]:
    return {"i": i, "t": time.time(), "pad": "x" * 60}


def one_by_one(api: Api, queue: str, jobs: int, producers: int) -> float:
    def produce(start: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
        for i in range(start, jobs, producers):
            api.call("POST", "/v1/jobs", {"queue": queue, "payload": payload(i)}, conn)
        conn.close()

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(producers) as pool:
        list(pool.map(produce, range(producers)))
    return jobs / (time.perf_counter() - began)


def batched(api: Api, queue: str, jobs: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
    began = time.perf_counter()
    for start in range(0, jobs, 1000):
        batch = [{"queue": queue, "payload": payload(i)} for i in range(start, min(jobs, start + 1000))]
        api.call("POST", "/v1/jobs/batch", {"jobs": batch}, conn)
    conn.close()
    return jobs / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default="target/release/steadfast")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEADFAST_")}
        env["RUST_LOG"] = "warn"
        server = subprocess.Popen(
            [
                args.bin,
                "serve",
                "--data-dir",
                f"{tmp}/data",
                "--listen",
                f"127.0.0.1:{port}",
                # The per-key rate limit would measure itself.
                "--key-rate-limit",
                "1000000",
                "--key-rate-burst",
                "1000000",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            key_file = Path(tmp) / "data" / "admin.key"
            deadline = time.time() + 30
            while not key_file.exists() or not key_file.read_text().strip():
                if time.time() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.05)
            api = Api(port, key_file.read_text().strip())
            while True:
                try:
                    api.call("GET", "/v1/schemas")
                    break
                except (OSError, RuntimeError):
                    time.sleep(0.05)
            api.call("PUT", "/v1/queues/typed/schemas/1", {"schema": SCHEMA})
            results: Dict[str, List[float]] = {}
            for _ in range(args.rounds):
                for queue in ("plain", "typed"):
                    results.setdefault(f"{queue} one by one", []).append(
                        one_by_one(api, queue, args.jobs, args.producers)
                    )
                    results.setdefault(f"{queue} batched", []).append(batched(api, queue, args.jobs))
            best = {name: max(values) for name, values in results.items()}
            for name, value in best.items():
                print(f"{name:>22}: {value:10.0f} jobs/s (best of {args.rounds})")
            for mode in ("one by one", "batched"):
                print(f"typed / plain, {mode}: {best[f'typed {mode}'] / best[f'plain {mode}']:.3f}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
