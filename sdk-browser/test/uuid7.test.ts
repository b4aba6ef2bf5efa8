import assert from "node:assert/strict";
import { test } from "node:test";

import { Uuid7Generator, uuid7Millis } from "../src/uuid7.js";

const PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("a UUIDv7 carries its millisecond, version 7 and the RFC variant", () => {
  for (const millis of [0, 1, 1_700_000_000_123, 2 ** 48 - 1]) {
    const id = new Uuid7Generator(() => millis).next();
    assert.match(id, PATTERN);
    assert.equal(uuid7Millis(id), millis);
  }
});

test("ids made in one millisecond, or with the clock stepping back, sort in making order", () => {
  const clock = [5_000, 5_000, 5_000, 4_000, 5_000, 6_000];
  let i = 0;
  const ids = new Uuid7Generator(() => clock[Math.min(i++, clock.length - 1)]);
  const made = Array.from({ length: 5_000 }, () => ids.next());
  assert.deepEqual([...made].sort(), made);
  assert.equal(new Set(made).size, made.length);
});

test("more than 4096 ids in one millisecond borrow the next millisecond, still in order", () => {
  const ids = new Uuid7Generator(() => 10_000);
  const made = Array.from({ length: 9_000 }, () => ids.next());
  assert.deepEqual([...made].sort(), made);
  assert.ok(uuid7Millis(made[made.length - 1]) > 10_000);
});

test("a timestamp outside 48 bits is refused", () => {
  assert.throws(() => new Uuid7Generator(() => 2 ** 48).next(), RangeError);
});
