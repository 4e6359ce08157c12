"""A signup pipeline in three durable steps.

Start a server (`cargo run --release -- serve`), then:

    export STEADFAST_URL=http://127.0.0.1:8650
    export STEADFAST_KEY=$(cat steadfast-data/admin.key)
    python sdks/python/examples/quickstart.py ada@example.com

It enqueues one signup (run it twice: the idempotency key makes it one job)
and serves the queue until Ctrl-C. Kill it with `kill -9` halfway through a
job and start it again: the steps already done are not done again.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Dict

import steadfast

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

client = steadfast.Client()  # STEADFAST_URL and STEADFAST_KEY
worker = steadfast.Worker(client, concurrency=4)


def create_account(email: str, key: str) -> Dict[str, str]:
    # A real step would call your database or an API, passing `key` along
    # so that a retried call cannot create a second account.
    return {"user_id": "u-" + email.split("@")[0], "request": key}


@worker.handler("signups")
def signup(ctx: steadfast.JobContext, payload: Dict[str, Any]) -> Dict[str, Any]:
    email = payload["email"]
    account = ctx.step("create-account", lambda key: create_account(email, key))
    ctx.log.info("account %s ready", account["user_id"])
    welcome = ctx.step("send-welcome", lambda key: f"welcome mail to {email} (key {key})")
    # A durable sleep: the job parks, no worker holds it, and it resumes later.
    ctx.sleep("before-tips", 1.0)
    tips = ctx.step("send-tips", lambda key: f"tips mail to {email}")
    return {"account": account, "mails": [welcome, tips]}


def main() -> None:
    email = sys.argv[1] if len(sys.argv) > 1 else "ada@example.com"
    job = client.enqueue("signups", {"email": email}, idempotency_key=f"signup-{email}")
    print(f"enqueued {job.id} ({job.state}{', a replay' if job.replayed else ''})", flush=True)
    worker.run()


if __name__ == "__main__":
    main()
