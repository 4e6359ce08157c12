// The dashboard in Debian's Chromium, as a new user meets it: sign in with
// the key `serve` printed, look around, retry a dead job and approve a
// waiting claim with reasons, and find both in the audit log; then the
// same as a reader, and from another origin. Every view passes axe.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { join } from "node:path";
import { Server, browser as launch, eventually, signIn } from "./harness.mjs";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const SCREENSHOTS = process.env.UPDATE_SCREENSHOTS ? join(new URL("../..", import.meta.url).pathname, "docs", "screenshots") : null;

let server;
let chromium;
/** Jobs the tests act on, made through the API before the browser starts. */
const made = {};

/** A job of `queue` that died of `kind`. */
async function deadJob(queue, kind, message) {
  const job = await server.enqueue(queue, { claim: Math.floor(Math.random() * 1e6) });
  const leased = await server.lease(queue);
  await server.api("POST", `/v1/jobs/${job.id}/fail`, {
    lease_token: leased.lease_token,
    error: { message, kind },
    retryable: false,
  });
  return job.id;
}

/** A claim parked on its `approval` step until a signal comes. */
async function waitingClaim() {
  const job = await server.enqueue("claims", { claim: 42, amount: 1250 });
  const leased = await server.lease("claims");
  await server.api("PUT", `/v1/jobs/${job.id}/steps/validate`, { lease_token: leased.lease_token, output: { valid: true } });
  const waited = await server.api("POST", `/v1/jobs/${job.id}/wait`, { lease_token: leased.lease_token, step: "approval", signal: "approval" });
  assert.equal(waited.suspended, true);
  return job.id;
}

before(async () => {
  server = await Server.start();
  chromium = await launch();
  for (let i = 0; i < 5; i++) await server.enqueue("emails", { to: `user${i}@example.com` });
  const done = await server.lease("emails");
  await server.api("POST", `/v1/jobs/${done.id}/complete`, { lease_token: done.lease_token, output: { sent: true } });
  made.dead = await deadJob("payments", "card_declined", "the card was declined");
  await deadJob("payments", "card_declined", "the card was declined");
  await deadJob("payments", "timeout", "the bank did not answer");
  made.claim = await waitingClaim();
  made.rejected = await waitingClaim();
  // A step whose attempt vanished: handed back after the step started.
  const uncertain = await server.enqueue("claims-audit", { claim: 7 });
  const leased = await server.lease("claims-audit");
  await server.api("POST", `/v1/jobs/${uncertain.id}/steps/charge/start`, { lease_token: leased.lease_token });
  await server.api("POST", `/v1/jobs/${uncertain.id}/release`, { lease_token: leased.lease_token });
  made.uncertain = uncertain.id;
  await server.api("POST", "/v1/sources", { name: "stripe-live", kind: "stripe", queue: "stripe-events", secret: "whsec_dashboard_test_secret" });
  await server.api("PUT", "/v1/queues/emails/policy", { concurrency: 4, rate: { limit: 50, period_ms: 1000 } });
  await server.api("PUT", "/v1/resources/bank", { breaker: { failure_ratio: 0.5, min_requests: 10, window_secs: 60, open_secs: 30, half_open_probes: 1 } });
  await server.api("POST", "/v1/slos", { name: "payments-succeed", queue: "payments", objective: 0.99 });
});

after(async () => {
  await chromium?.close();
  await server?.stop();
});

/** A fresh browser context (cookies and all), with console errors collected. */
async function context(options = {}) {
  const ctx = await chromium.newContext({ baseURL: server.url, ...options });
  const page = await ctx.newPage();
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  page.on("pageerror", (error) => problems.push(String(error)));
  const offsite = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(server.url) && !request.url().startsWith("data:")) offsite.push(request.url());
  });
  return { ctx, page, problems, offsite };
}

async function axe(page, what) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`),
    [],
    `axe on ${what}`,
  );
}

async function shoot(page, name) {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: false });
}

describe("an admin", () => {
  test("signs in with the key serve printed and sees the overview with real data", async () => {
    const { ctx, page, problems, offsite } = await context({ viewport: { width: 1280, height: 900 } });
    await page.goto("/ui");
    assert.match(page.url(), /\/ui\/login\?next=/);
    await axe(page, "the sign-in page");
    await shoot(page, "sign-in");
    await signIn(page, server, server.admin);
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    const emails = page.getByRole("row", { name: /emails/ });
    await emails.waitFor();
    // scheduled, queued, running, waiting, succeeded (1 h), dead (1 h)
    const cells = await emails.getByRole("cell").allTextContents();
    assert.deepEqual(cells.slice(0, 6), ["0", "4", "0", "0", "1", "0"]);
    const payments = await page.getByRole("row", { name: /payments/ }).first().getByRole("cell").allTextContents();
    assert.equal(payments[5], "3", "three dead payments in the last hour");
    assert.equal(payments[6], "100.0%");
    for (const heading of ["Dead jobs", "Uncertain steps", "Waiting for a signal (approvals)"]) {
      await page.getByRole("heading", { name: heading }).waitFor();
    }
    await page.getByRole("rowheader", { name: "payments-succeed" }).waitFor();
    await axe(page, "the overview");
    await shoot(page, "overview");
    // The live part is polled, never faster than every 2 s.
    const polled = await page.waitForResponse((r) => r.url().endsWith("/ui/live/overview"), { timeout: 15000 });
    assert.equal(polled.status(), 200);
    assert.deepEqual(problems, [], "no CSP violation or script error");
    assert.deepEqual(offsite, [], "nothing fetched from elsewhere");
    await ctx.close();
  });

  test("retries a dead job with a reason and finds the reason in the audit log", async () => {
    const { ctx, page, problems } = await context({ viewport: { width: 1280, height: 900 } });
    await signIn(page, server, server.admin);
    await page.getByRole("link", { name: "Dead letters" }).click();
    await axe(page, "dead letters");
    await shoot(page, "dead-letters");
    await page.getByRole("link", { name: "card_declined" }).click();
    assert.match(page.url(), /state=dead&kind=card_declined/);
    await axe(page, "the filtered job list");
    await shoot(page, "jobs");
    await page.getByRole("link", { name: made.dead }).click();
    await page.getByRole("heading", { name: `Job ${made.dead}` }).waitFor();
    await axe(page, "a dead job");
    await shoot(page, "job");
    const retry = page.getByRole("form", { name: "Retry" });
    await retry.getByLabel("Reason").fill("The customer updated the card (ticket 4411)");
    await retry.getByRole("button", { name: "Retry" }).click();
    await page.getByText("Retried. The reason is in the audit log below.").waitFor();
    const job = await server.api("GET", `/v1/jobs/${made.dead}`);
    assert.equal(job.state, "queued");

    await page.getByRole("link", { name: "Audit log" }).click();
    await page.getByLabel("Action").fill("job.retried");
    await page.getByRole("button", { name: "Filter" }).click();
    const record = page.getByRole("row", { name: /job\.retried/ });
    await record.waitFor();
    const text = await record.textContent();
    assert.match(text, /The customer updated the card \(ticket 4411\)/);
    assert.match(text, /bootstrap admin/);
    await page.getByRole("button", { name: "Verify now" }).click();
    await page.getByText(/Verified through seq \d+ at/).waitFor();
    await axe(page, "the audit log");
    await shoot(page, "audit");
    assert.deepEqual(problems, []);
    await ctx.close();
  });

  test("approves a waiting claim, which wakes the workflow with who and why", async () => {
    const { ctx, page, problems } = await context();
    await signIn(page, server, server.admin);
    await page.getByRole("link", { name: made.claim }).first().click();
    const decide = page.getByRole("form", { name: "Approve or reject" });
    await decide.getByLabel("Reason").fill("Photos match the report");
    await decide.getByRole("button", { name: "Approve" }).click();
    await page.getByText("Approved: the signal was delivered").waitFor();
    // The workflow is queued again; its next attempt finds the approval.
    const resumed = await eventually(async () => {
      const { jobs } = await server.api("POST", "/v1/lease", { queues: ["claims"], worker_id: "claims-worker", wait_ms: 0 });
      return jobs.find((j) => j.id === made.claim);
    }, "the woken claim to be leased");
    const keyId = server.admin.split("_")[1];
    assert.deepEqual(resumed.steps.approval.payload, { approved: true, reason: "Photos match the report", by: keyId });
    await server.api("POST", `/v1/jobs/${made.claim}/complete`, { lease_token: resumed.lease_token, output: { paid: true } });

    await page.goto(`/ui/jobs/${made.rejected}`);
    const reject = page.getByRole("form", { name: "Approve or reject" });
    await reject.getByLabel("Reason").fill("Duplicate of an earlier claim");
    await reject.getByRole("button", { name: "Reject" }).click();
    await page.getByText("Rejected: the signal was delivered").waitFor();
    const rejected = await server.api("GET", `/v1/jobs/${made.rejected}`);
    assert.equal(rejected.steps.find((s) => s.name === "approval").output.payload.approved, false);

    await page.goto("/ui/audit?action=signal.received");
    const rows = await page.getByRole("row", { name: /signal\.received/ }).allTextContents();
    assert.ok(rows.some((r) => r.includes("Photos match the report")), rows.join("\n"));
    assert.ok(rows.some((r) => r.includes("Duplicate of an earlier claim")), rows.join("\n"));
    assert.deepEqual(problems, []);
    await ctx.close();
  });

  test("retries every dead timeout at once: counted first, confirmed by its count, followed to the end", async () => {
    const { ctx, page, problems } = await context({ viewport: { width: 1280, height: 900 } });
    await signIn(page, server, server.admin);
    await page.goto("/ui/jobs");
    await page.getByLabel("State").selectOption("dead");
    await page.getByLabel("Error kind").fill("timeout");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.getByRole("button", { name: "Retry all matching…" }).click();
    await page.getByText("1 job matches").waitFor();
    await axe(page, "the bulk confirmation");
    await page.getByLabel("Reason").fill("The bank is answering again");
    await page.getByRole("button", { name: "Retry 1 job" }).click();
    await page.getByRole("heading", { name: /Bulk operation/ }).waitFor();
    // The server works through it in the background; htmx shows the end.
    await page.getByText("completed", { exact: true }).waitFor({ timeout: 15000 });
    await page.getByText("1 done, 0 failed, of 1 matched").waitFor();
    await axe(page, "a bulk operation");
    await shoot(page, "bulk-operation");
    const { jobs } = await server.api("GET", "/v1/jobs?queue=payments&state=dead");
    assert.equal(jobs.filter((j) => j.last_error?.kind === "timeout").length, 0);
    assert.deepEqual(problems, []);
    await ctx.close();
  });

  test("resolves an uncertain step", async () => {
    const { ctx, page } = await context();
    await signIn(page, server, server.admin);
    await page.goto(`/ui/jobs/${made.uncertain}`);
    const form = page.getByRole("form", { name: "Resolve step charge" });
    await form.getByLabel("Outcome").selectOption("succeeded");
    await form.getByLabel("Output (JSON, for succeeded)").fill('{"charge": "ch_7"}');
    await form.getByLabel("Reason").fill("ch_7 is in the provider's dashboard");
    await form.getByRole("button", { name: "Resolve" }).click();
    await page.getByText("Step resolved.").waitFor();
    const job = await server.api("GET", `/v1/jobs/${made.uncertain}`);
    assert.deepEqual(job.steps[0].output, { charge: "ch_7" });
    assert.equal(job.steps[0].state, "completed");
    await ctx.close();
  });

  test("reads webhooks, policies and breakers, and the API reference", async () => {
    const { ctx, page, problems, offsite } = await context({ viewport: { width: 1280, height: 900 } });
    await signIn(page, server, server.admin);
    await page.getByRole("link", { name: "Webhooks" }).click();
    await page.getByRole("link", { name: "stripe-live" }).click();
    await page.getByRole("heading", { name: "Recent events of stripe-live" }).waitFor();
    await axe(page, "webhook sources");
    await page.getByRole("link", { name: "Policies" }).click();
    const emails = await page.getByRole("row", { name: /emails/ }).textContent();
    assert.match(emails, /"concurrency":4/);
    await page.getByRole("row", { name: /bank/ }).getByText("closed").waitFor();
    await axe(page, "policies");
    await shoot(page, "policies");
    assert.deepEqual(problems, []);

    await page.goto("/docs");
    await page.getByText("POST/v1/jobs", { exact: false }).first().waitFor({ timeout: 15000 });
    await page.getByRole("heading", { name: /Steadfast/ }).first().waitFor();
    assert.deepEqual(offsite, [], "the reference fetches nothing from elsewhere");
    assert.deepEqual(problems.filter((p) => /Content Security Policy|Refused/.test(p)), []);
    await ctx.close();
  });

  test("shows times in UTC or local time, in light or dark", async () => {
    const { ctx, page } = await context({ timezoneId: "Asia/Tokyo", colorScheme: "dark" });
    await signIn(page, server, server.admin);
    const first = page.locator("time").first();
    assert.match(await first.textContent(), / UTC$/);
    await page.getByRole("button", { name: "Show local times" }).click();
    assert.match(await first.textContent(), / UTC\+09:00$/);
    await page.reload();
    assert.match(await page.locator("time").first().textContent(), / UTC\+09:00$/, "remembered");
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(background, "rgb(20, 23, 26)", "dark mode follows the system");
    await axe(page, "the overview in dark mode");
    await ctx.close();
  });

  test("reads every view with JavaScript turned off", async () => {
    const { ctx, page } = await context({ javaScriptEnabled: false });
    await signIn(page, server, server.admin);
    for (const [path, heading] of [
      ["/ui", "Overview"],
      ["/ui/jobs?state=dead", "Jobs"],
      [`/ui/jobs/${made.dead}`, `Job ${made.dead}`],
      ["/ui/dead", "Dead letters"],
      ["/ui/audit", "Audit log"],
      ["/ui/sources", "Webhook sources"],
      ["/ui/policies", "Queue policies"],
    ]) {
      await page.goto(path);
      await page.getByRole("heading", { name: heading, level: 1 }).waitFor();
    }
    await page.goto("/ui");
    await page.getByRole("row", { name: /emails/ }).waitFor();
    await ctx.close();
  });
});

describe("a reader", () => {
  test("sees everything, no action buttons, and its forged POST gets 403", async () => {
    const reader = server.key("reader", "on-call reader");
    const { ctx, page } = await context();
    await signIn(page, server, reader);
    await page.goto(`/ui/jobs/${made.rejected}`);
    await page.getByRole("heading", { name: "Payload" }).waitFor();
    for (const verb of ["Retry", "Cancel", "Approve", "Reject", "Send signal", "Resolve", "Replay"]) {
      assert.equal(await page.getByRole("button", { name: verb, exact: true }).count(), 0, `no ${verb}`);
    }
    const csrf = await page.locator('input[name="csrf"]').first().inputValue();
    const forged = await page.evaluate(async ([id, token]) => {
      const body = new URLSearchParams({ csrf: token, reason: "I should not be able to" });
      const response = await fetch(`/ui/jobs/${id}/cancel`, { method: "POST", body, redirect: "manual" });
      return response.status;
    }, [made.rejected, csrf]);
    assert.equal(forged, 403);
    assert.notEqual((await server.api("GET", `/v1/jobs/${made.rejected}`)).state, "cancelled");
    await axe(page, "a job seen by a reader");
    await ctx.close();
  });
});

describe("another origin", () => {
  test("cannot post a form into the dashboard, with or without the session", async () => {
    const victim = await server.enqueue("emails", { to: "victim@example.com" });
    // An attacker's page on another port: a form that cancels the job.
    const attacker = createServer((_, response) => {
      response.setHeader("content-type", "text/html");
      response.end(`<!doctype html><form id="f" method="post" action="${server.url}/ui/jobs/${victim.id}/cancel">
        <input name="reason" value="gotcha"></form><script>document.getElementById("f").submit()</script>`);
    });
    await new Promise((done) => attacker.listen(0, "127.0.0.1", done));
    const { ctx, page } = await context();
    await signIn(page, server, server.admin);
    const answered = page.waitForResponse((r) => r.url().includes(`/ui/jobs/${victim.id}/cancel`));
    await page.goto(`http://127.0.0.1:${attacker.address().port}/`);
    assert.equal((await answered).status(), 403);
    assert.equal((await server.api("GET", `/v1/jobs/${victim.id}`)).state, "queued");
    attacker.close();
    await ctx.close();
  });
});
