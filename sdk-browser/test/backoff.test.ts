import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelayMs, retryAfterMs } from "../src/backoff.js";

test("backoff doubles its ceiling per attempt, up to the maximum, with full jitter", () => {
  assert.equal(backoffDelayMs(0, 1000, 60_000, () => 0.999), 999);
  assert.equal(backoffDelayMs(3, 1000, 60_000, () => 0.5), 4000);
  assert.equal(backoffDelayMs(20, 1000, 60_000, () => 0.5), 30_000);
  assert.equal(backoffDelayMs(5, 1000, 60_000, () => 0), 0);
  for (let attempt = 0; attempt < 10; attempt += 1) {
    const delay = backoffDelayMs(attempt, 100, 5_000);
    assert.ok(delay >= 0 && delay < Math.min(5_000, 100 * 2 ** attempt));
  }
});

test("Retry-After is read as seconds or as an HTTP date", () => {
  const now = Date.parse("2026-01-27T14:30:00Z");
  assert.equal(retryAfterMs("5", now), 5000);
  assert.equal(retryAfterMs(" 0 ", now), 0);
  assert.equal(retryAfterMs("Tue, 27 Jan 2026 14:30:42 GMT", now), 42_000);
  assert.equal(retryAfterMs("Tue, 27 Jan 2026 14:00:00 GMT", now), 0); // already past
  assert.equal(retryAfterMs("soon", now), undefined);
  assert.equal(retryAfterMs("-3", now), undefined);
  assert.equal(retryAfterMs(null, now), undefined);
});
