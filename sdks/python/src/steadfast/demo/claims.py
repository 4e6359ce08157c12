"""The claims pipeline as a Python worker process runs it, for
``steadfast demo claims --worker python``: six memoized steps, the
enrichment step reconciling an uncertain outcome by asking first, and the
payment step passing its stable key to the provider.

    python -m steadfast.demo.claims --url URL --key KEY \\
        --enrichment-url URL --payments-url URL [--concurrency N] [--worker-id ID]
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, List, Optional

import httpx

import steadfast

#: Claims above this amount wait for a human approval signal.
APPROVAL_THRESHOLD = 10_000
QUEUE = "claims"
APPROVAL_SIGNAL = "approval"


class Downstreams:
    """The paid enrichment API (which ignores idempotency keys) and the
    payment provider (which honours them)."""

    def __init__(self, enrichment: str, payments: str) -> None:
        self.http = httpx.Client(timeout=30)
        self.enrichment = enrichment.rstrip("/")
        self.payments = payments.rstrip("/")

    def _json(self, response: httpx.Response, what: str) -> Any:
        if response.status_code >= 500:
            raise steadfast.JobFailed(
                f"{what}: {response.status_code}", kind="downstream_unavailable"
            )
        response.raise_for_status()
        return response.json()

    def enrich(self, claim_id: str) -> Dict[str, Any]:
        answer = self.http.post(f"{self.enrichment}/enrich", json={"claim_id": claim_id})
        enriched: Dict[str, Any] = self._json(answer, "enrichment")
        return enriched

    def already_enriched(self, claim_id: str) -> Optional[Dict[str, Any]]:
        """Asks the enrichment API whether it already billed this claim."""
        answer = self.http.get(f"{self.enrichment}/enrich/{claim_id}")
        found: Optional[Dict[str, Any]] = self._json(answer, "enrichment lookup")["result"]
        return found

    def charge(self, claim: Dict[str, Any], idempotency_key: str) -> Dict[str, Any]:
        answer = self.http.post(
            f"{self.payments}/charges",
            json={"claim_id": claim["claim_id"], "amount": claim["amount"]},
            headers={"Idempotency-Key": idempotency_key},
        )
        charged: Dict[str, Any] = self._json(answer, "payments")
        return charged


def pipeline(downstreams: Downstreams) -> Any:
    def process(ctx: steadfast.JobContext, claim: Dict[str, Any]) -> Dict[str, Any]:
        if not ctx.step("validate", lambda key: claim["amount"] > 0):
            raise steadfast.JobFailed("a claim needs a positive amount", retryable=False)

        def enrich(key: str) -> Dict[str, Any]:
            # The paid API ignores idempotency keys: if an earlier attempt
            # started this step and vanished, ask before paying again.
            if ctx.uncertain("enrich") is not None:
                billed = downstreams.already_enriched(claim["claim_id"])
                if billed is not None:
                    return billed
            return downstreams.enrich(claim["claim_id"])

        enrichment = ctx.step("enrich", enrich)
        score = ctx.step("score", lambda key: 100 - enrichment["risk"])
        if claim["amount"] > APPROVAL_THRESHOLD:
            approval = ctx.wait_for_signal(APPROVAL_SIGNAL, timeout=3600)
            if approval is None:
                raise steadfast.JobFailed("no approval within an hour", retryable=False)
            approved_by = approval.get("by", "someone")
            # The dashboard's Reject sends "approved": false: no payment.
            if approval.get("approved") is False:
                reason = approval.get("reason", "no reason given")
                raise steadfast.JobFailed(f"rejected by {approved_by}: {reason}", retryable=False)
        else:
            approved_by = ctx.step("approve", lambda key: "auto")
        # The provider honours idempotency keys: the step's stable key makes
        # a retried charge harmless.
        charge = ctx.step("pay", lambda key: downstreams.charge(claim, key))
        notice = ctx.step(
            "notify", lambda key: f"claim {claim['claim_id']} paid as {charge['charge_id']}"
        )
        return {
            "score": score,
            "approved_by": approved_by,
            "charge": charge["charge_id"],
            "notice": notice,
        }

    return process


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--enrichment-url", required=True)
    parser.add_argument("--payments-url", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--worker-id", default="claims-worker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    worker = steadfast.Worker(
        steadfast.Client(args.url, args.key),
        concurrency=args.concurrency,
        worker_id=args.worker_id,
        poll_wait=1.0,
        shutdown_grace=5.0,
    )
    worker.handler(QUEUE)(pipeline(Downstreams(args.enrichment_url, args.payments_url)))
    worker.run()


if __name__ == "__main__":
    main()
