// A real Steadfast server for the browser tests: the built binary on a free
// loopback port over a fresh data directory, and Debian's Chromium.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const here = new URL(".", import.meta.url).pathname;
export const BIN = process.env.STEADFAST_BIN ?? resolve(here, "../../target/debug/steadfast");
export const CHROMIUM = process.env.STEADFAST_CHROMIUM ?? "/usr/bin/chromium";

function freePort() {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => done(port));
    });
  });
}

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function eventually(check, what, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class Server {
  static async start() {
    const dir = mkdtempSync(join(tmpdir(), "steadfast-ui-"));
    const port = await freePort();
    // Its own embedded store, whatever STEADFAST_* the caller's shell holds.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("STEADFAST_")));
    const child = spawn(BIN, ["serve", "--data-dir", join(dir, "data"), "--listen", `127.0.0.1:${port}`], {
      env: { ...env, STEADFAST_UI_REFRESH_SECS: "2" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    child.stderr.on("data", (chunk) => { log += chunk; });
    const server = new Server(dir, port, child, () => log);
    await eventually(async () => {
      try {
        return (await fetch(`${server.url}/readyz`)).ok;
      } catch {
        return false;
      }
    }, "the server to be ready");
    server.admin = readFileSync(join(dir, "data", "admin.key"), "utf8").trim();
    return server;
  }

  constructor(dir, port, child, log) {
    this.dir = dir;
    this.url = `http://127.0.0.1:${port}`;
    this.child = child;
    this.log = log;
  }

  /** A new key of the default tenant, made on the data dir as an operator would. */
  key(role, name) {
    return execFileSync(BIN, ["key", "create", "--data-dir", join(this.dir, "data"), "--tenant", "default", "--role", role, "--name", name], {
      encoding: "utf8",
    }).trim();
  }

  async api(method, path, body, key = this.admin) {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  async enqueue(queue, payload, extra = {}) {
    return this.api("POST", "/v1/jobs", { queue, payload, ...extra });
  }

  /** Leases one job of `queue` as worker `worker`. */
  async lease(queue, worker = "ui-test-worker") {
    const { jobs } = await this.api("POST", "/v1/lease", { queues: [queue], worker_id: worker, wait_ms: 0 });
    if (jobs.length !== 1) throw new Error(`expected one job to lease from ${queue}, got ${jobs.length}`);
    return jobs[0];
  }

  async stop() {
    this.child.kill("SIGTERM");
    await new Promise((done) => (this.child.exitCode !== null ? done() : this.child.once("exit", done)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function browser() {
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}

/** Signs `page` in with `key` through the form, as a person would. */
export async function signIn(page, server, key) {
  await page.goto(`${server.url}/ui`);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${server.url}/ui`);
}
