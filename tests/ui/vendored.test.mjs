// The files the binary serves from assets/ are byte for byte the npm
// packages' (whose integrity package-lock.json pins).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const assets = new URL("../../crates/steadfast-server/assets/", import.meta.url).pathname;

for (const [vendored, module] of [
  ["htmx.min.js", "htmx.org/dist/htmx.min.js"],
  ["swagger-ui-bundle.js", "swagger-ui-dist/swagger-ui-bundle.js"],
  ["swagger-ui.css", "swagger-ui-dist/swagger-ui.css"],
]) {
  test(`${vendored} is ${module}`, () => {
    assert.ok(readFileSync(assets + vendored).equals(readFileSync(require.resolve(module))));
  });
}
