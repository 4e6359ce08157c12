"""A minimal Steadfast worker in plain Python (standard library only).

The end-to-end tests run it as a real worker process, to show the HTTP/JSON
API is all a worker needs, and to kill or pause it at precise points.

    python3 steadfast_worker.py URL KEY QUEUE SCENARIO

Scenarios:
  crash-mid-step  lease a job, checkpoint step "a", mark step "charge"
                  started, print a line, then hang (the test SIGKILLs it).
  zombie          lease a job, checkpoint step "a", print a line, then block
                  on stdin (the test SIGSTOPs it past its lease, SIGCONTs it,
                  and writes a line); then try to checkpoint, heartbeat and
                  complete, printing each HTTP status and error code.
"""

import json
import sys
import time
import urllib.error
import urllib.request


def call(url, key, method, path, body):
    request = urllib.request.Request(
        url + path,
        method=method,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def say(**fields):
    print(json.dumps(fields), flush=True)


def main():
    url, key, queue, scenario = sys.argv[1:5]
    status, leased = call(url, key, "POST", "/v1/lease", {"queues": [queue], "worker_id": "py-" + scenario, "wait_ms": 10000})
    assert status == 200 and leased["jobs"], (status, leased)
    job = leased["jobs"][0]
    job_id, token = job["id"], job["lease_token"]
    status, _ = call(url, key, "PUT", f"/v1/jobs/{job_id}/steps/a", {"lease_token": token, "output": {"from": "attempt 1"}})
    assert status == 201, status
    if scenario == "crash-mid-step":
        status, _ = call(url, key, "POST", f"/v1/jobs/{job_id}/steps/charge/start", {"lease_token": token})
        assert status == 200, status
        say(job=job_id, started="charge")
        while True:
            time.sleep(3600)
    elif scenario == "zombie":
        say(job=job_id, leased=True)
        sys.stdin.readline()
        results = {}
        for name, method, path, body in [
            ("checkpoint", "PUT", f"/v1/jobs/{job_id}/steps/b", {"lease_token": token, "output": "zombie"}),
            ("heartbeat", "POST", f"/v1/jobs/{job_id}/heartbeat", {"lease_token": token}),
            ("complete", "POST", f"/v1/jobs/{job_id}/complete", {"lease_token": token, "output": "zombie"}),
        ]:
            status, answer = call(url, key, method, path, body)
            results[name] = [status, answer.get("error", {}).get("code")]
        say(**results)
    else:
        raise SystemExit("unknown scenario " + scenario)


if __name__ == "__main__":
    main()
