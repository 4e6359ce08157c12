"""Signs one webhook delivery with a provider's own Python library and
prints the headers to send, as a JSON object. Used by
crates/steadfast-cli/tests/providers.rs.

    python sign.py standard SECRET MSG_ID TIMESTAMP BODY_FILE
    python sign.py slack SECRET TIMESTAMP BODY_FILE
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook


def main(argv: list[str]) -> dict[str, str]:
    kind, secret, *rest = argv
    if kind == "standard":
        msg_id, timestamp, body_file = rest
        body = Path(body_file).read_text()
        signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
        signature = Webhook(secret).sign(msg_id, signed_at, body)
        return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    if kind == "slack":
        timestamp, body_file = rest
        body = Path(body_file).read_text()
        slack = SignatureVerifier(signing_secret=secret).generate_signature(timestamp=timestamp, body=body)
        if slack is None:
            raise SystemExit("slack_sdk made no signature")
        return {"x-slack-signature": slack, "x-slack-request-timestamp": timestamp}
    raise SystemExit(f"unknown kind {kind}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
