// Signs one webhook delivery with a provider's own Node library and prints
// the headers to send, as a JSON object. Used by
// crates/steadfast-cli/tests/providers.rs.
//
//   node sign.mjs stripe SECRET TIMESTAMP BODY_FILE
//   node sign.mjs github SECRET BODY_FILE
import { readFileSync } from "node:fs";
import Stripe from "stripe";
import { sign } from "@octokit/webhooks-methods";

const [kind, secret, ...rest] = process.argv.slice(2);
let headers;
if (kind === "stripe") {
  const [timestamp, bodyFile] = rest;
  const stripe = new Stripe("sk_test_unused");
  const header = stripe.webhooks.generateTestHeaderString({
    payload: readFileSync(bodyFile, "utf8"),
    secret,
    timestamp: Number(timestamp),
  });
  headers = { "stripe-signature": header, "content-type": "application/json" };
} else if (kind === "github") {
  const [bodyFile] = rest;
  headers = {
    "x-hub-signature-256": await sign(secret, readFileSync(bodyFile, "utf8")),
    "content-type": "application/json",
  };
} else {
  throw new Error(`unknown kind ${kind}`);
}
process.stdout.write(JSON.stringify(headers));
