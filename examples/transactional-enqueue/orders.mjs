// Place an order and enqueue its confirmation email in one transaction
// (node-postgres): commit, and the job exists; roll back, and it never did.
//
//   DATABASE_URL=postgres://app_enqueue@db/shop STEADFAST_KEY=sfk_... node orders.mjs 42
//   ... node orders.mjs 43 --fail-after-enqueue   # rolled back: no order, no job
//
// Prints the job's id (the one steadfast.enqueue returned).
import pg from "pg";

async function placeOrder(client, orderId, key, fail) {
  await client.query("BEGIN");
  try {
    await client.query("INSERT INTO app_orders (id) VALUES ($1)", [orderId]);
    const { rows } = await client.query(
      "SELECT steadfast.enqueue($1, $2, $3::jsonb, $4::jsonb) AS id",
      [
        key,
        "emails",
        JSON.stringify({ template: "order-confirmation", order_id: orderId }),
        JSON.stringify({ idempotency_key: `order-${orderId}-confirmation` }),
      ],
    );
    console.log(rows[0].id);
    if (fail) throw new Error(`payment declined for order ${orderId}`);
    await client.query("COMMIT");
    return rows[0].id;
  } catch (error) {
    await client.query("ROLLBACK");
    throw error;
  }
}

const orderId = Number(process.argv[2]);
const fail = process.argv.includes("--fail-after-enqueue");
const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
try {
  await placeOrder(client, orderId, process.env.STEADFAST_KEY, fail);
} catch (error) {
  console.error(`rolled back: ${error.message}`);
  process.exitCode = 1;
} finally {
  await client.end();
}
