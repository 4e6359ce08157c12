"""Place an order and enqueue its confirmation email in one transaction
(psycopg 3): commit, and the job exists; roll back, and it never did.

    DATABASE_URL=postgres://app_enqueue@db/shop STEADFAST_KEY=sfk_... python orders.py 42
    ... python orders.py 43 --fail-after-enqueue   # rolled back: no order, no job

Prints the job's id (the one ``steadfast.enqueue`` returned).
"""

from __future__ import annotations

import json
import os
import sys

import psycopg


class PaymentDeclined(Exception):
    """Stands for anything that goes wrong after the enqueue."""


def place_order(conn: psycopg.Connection, order_id: int, key: str, fail: bool) -> str:
    with conn.transaction():
        conn.execute("INSERT INTO app_orders (id) VALUES (%s)", (order_id,))
        row = conn.execute(
            "SELECT steadfast.enqueue(%s, %s, %s::jsonb, %s::jsonb)",
            (
                key,
                "emails",
                json.dumps({"template": "order-confirmation", "order_id": order_id}),
                json.dumps({"idempotency_key": f"order-{order_id}-confirmation"}),
            ),
        ).fetchone()
        assert row is not None
        job_id = str(row[0])
        print(job_id, flush=True)
        if fail:
            raise PaymentDeclined(f"order {order_id}")
    return job_id


def main() -> None:
    order_id = int(sys.argv[1])
    fail = "--fail-after-enqueue" in sys.argv[2:]
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        try:
            place_order(conn, order_id, os.environ["STEADFAST_KEY"], fail)
        except PaymentDeclined as declined:
            sys.exit(f"rolled back: {declined}")


if __name__ == "__main__":
    main()
