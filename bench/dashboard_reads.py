#!/usr/bin/env python3
"""How long the dashboard's pages take over a large backlog.

Starts `steadfast serve` on a fresh embedded store, enqueues JOBS jobs in
five queues (1000 per request), kills 150 and completes 150, signs in, and
times each page (the first read of the overview, then its cached reads).

    python3 bench/dashboard_reads.py [--jobs 1000000] [--bin target/release/steadfast]
"""

import argparse
import json
import re
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

PAGES = [
    "/ui/live/overview",
    "/ui/live/overview",
    "/ui",
    "/ui/jobs",
    "/ui/queues/q1?state=queued",
    "/ui/jobs?state=dead&kind=timeout",
    "/ui/dead",
    "/ui/audit",
    "/ui/policies",
    "/ui/bulk/new?action=cancel&queue=q3",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--bin", default="target/release/steadfast")
    parser.add_argument("--port", type=int, default=18091)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        url = f"http://127.0.0.1:{args.port}"
        server = subprocess.Popen(
            [args.bin, "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{args.port}",
             "--max-unfinished-jobs", str(args.jobs * 2), "--ui-refresh-secs", "3600"],
            stderr=subprocess.DEVNULL,
        )
        try:
            run(args, data, url)
        finally:
            server.terminate()
            server.wait()


def run(args: argparse.Namespace, data: Path, url: str) -> None:
    deadline = time.time() + 30
    while not (data / "admin.key").exists() or not ready(url):
        if time.time() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.1)
    key = (data / "admin.key").read_text().strip()

    def call(method: str, path: str, body: object = None) -> object:
        request = urllib.request.Request(
            url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        text = urllib.request.urlopen(request).read()
        return json.loads(text) if text else None

    started = time.time()
    for i in range(args.jobs // 1000):
        call("POST", "/v1/jobs/batch", {"jobs": [{"queue": f"q{n % 5}", "payload": {"i": i, "n": n}} for n in range(1000)]})
    print(f"enqueued {args.jobs} jobs in {time.time() - started:.1f} s")
    leased = call("POST", "/v1/lease", {"queues": ["q0"], "worker_id": "w", "max_jobs": 300})["jobs"]  # type: ignore[index]
    for n, job in enumerate(leased):
        if n % 2:
            error = {"message": "x", "kind": ["timeout", "declined", "http_503"][n % 3]}
            call("POST", f"/v1/jobs/{job['id']}/fail", {"lease_token": job["lease_token"], "error": error, "retryable": False})
        else:
            call("POST", f"/v1/jobs/{job['id']}/complete", {"lease_token": job["lease_token"]})

    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    login = browser.open(url + "/ui/login").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]*)"', login).group(1)  # type: ignore[union-attr]
    # Lands on a page that does not read the overview, so its first read is timed.
    form = urllib.parse.urlencode({"api_key": key, "csrf": csrf, "next": "/ui/bulk"}).encode()
    browser.open(urllib.request.Request(url + "/ui/login", data=form, headers={"origin": url}))
    print("| page | status | seconds |\n|---|---|---|")
    for page in PAGES:
        started = time.time()
        response = browser.open(url + page)
        response.read()
        print(f"| `{page}` | {response.status} | {time.time() - started:.3f} |")


def ready(url: str) -> bool:
    try:
        return urllib.request.urlopen(url + "/readyz").status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
