"""The story the upgrade fixtures tell through the HTTP API, so a store
written by an older release holds every kind of state: jobs enqueued one by
one and in a batch (one with an idempotency key), leased, completed, failed
for good, cancelled, one left running with a checkpointed step, and an SLO.

Imported by the fixture scripts under crates/*/tests/fixtures/.
"""
import json
import urllib.request


def client(port, key):
    """A function calling the API of the server on `port` with `key`."""
    def call(method, path, body=None):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {key}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return json.loads(text) if text else None
    return call


def tell(call):
    call("POST", "/v1/jobs", {"queue": "emails", "payload": {"to": "a@example.com"}, "idempotency_key": "order-1"})
    call("POST", "/v1/jobs/batch", {"jobs": [{"queue": "emails", "payload": {"n": i}} for i in range(4)]})
    leased = call("POST", "/v1/lease", {"queues": ["emails"], "max_jobs": 3, "worker_id": "fixture"})["jobs"]
    first, second, third = leased
    call("POST", f"/v1/jobs/{first['id']}/complete", {"lease_token": first["lease_token"], "output": {"sent": True}})
    call("POST", f"/v1/jobs/{second['id']}/fail",
         {"lease_token": second["lease_token"], "error": {"message": "bad address"}, "retryable": False})
    call("POST", f"/v1/jobs/{third['id']}/steps/charge/start", {"lease_token": third["lease_token"]})
    call("PUT", f"/v1/jobs/{third['id']}/steps/charge",
         {"lease_token": third["lease_token"], "output": {"charge": "ch_1"}})
    queued = call("GET", "/v1/jobs?state=queued")["jobs"]
    call("POST", f"/v1/jobs/{queued[0]['id']}/cancel")
    call("POST", "/v1/slos", {"name": "emails-ok", "queue": "emails", "objective": 0.99})
