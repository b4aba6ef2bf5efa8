import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { IDBFactory } from "fake-indexeddb";

import { IndexedDbQueue, MemoryQueue } from "../src/queue.js";
import { type BrowserEnv, KEEPALIVE_BUDGET_BYTES, Tracker, type TrackerOptions, keepaliveChunks } from "../src/tracker.js";
import { CollectorStub, acceptAll, until } from "./collector-stub.js";

const lesson = (i: number) => ({ content_id: `lesson-${i}` });
const open: Tracker[] = [];
const stubs: CollectorStub[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((t) => t.close()));
  await Promise.all(stubs.splice(0).map((s) => s.close()));
});

async function collector(script = acceptAll): Promise<{ stub: CollectorStub; endpoint: string }> {
  const stub = new CollectorStub(script);
  stubs.push(stub);
  return { stub, endpoint: await stub.start() };
}

function tracker(options: TrackerOptions): Tracker {
  const made = new Tracker({ queue: new MemoryQueue(), onError: () => {}, ...options });
  open.push(made);
  return made;
}

/** A page's window as far as the tracker listens to it. */
class FakeWindow extends EventTarget {
  readonly document = Object.assign(new EventTarget(), { visibilityState: "visible" });
  readonly location = { pathname: "/lessons/7" };
  readonly screen = { width: 1280, height: 800 };
}

test("100 events go as one batch with the envelope, keys and sent_at", async () => {
  const { stub, endpoint } = await collector();
  const t = tracker({ endpoint, writeKey: "wk_1", userToken: "jwt-1", flushIntervalMs: 60_000, userId: "ada" });
  const ids = Array.from({ length: 100 }, (_, i) => t.track("lesson_completed", lesson(i)));
  await until("the batch", () => t.stats.accepted === 100);
  assert.equal(stub.received.length, 1);
  const [request] = stub.received;
  assert.deepEqual(request.events.map((e) => e.event_id), ids);
  assert.equal(request.headers.authorization, "Bearer wk_1");
  assert.equal(request.headers["x-user-token"], "jwt-1");
  assert.equal(request.headers["content-type"], "application/json");
  assert.ok(Math.abs(Date.parse(request.sentAt) - Date.now()) < 5_000);
  const first = request.events[0];
  assert.equal(first.event_type, "lesson_completed");
  assert.equal(first.user_id, "ada");
  assert.deepEqual(first.properties, { content_id: "lesson-0" });
  assert.equal(first.device_info?.timezone, Intl.DateTimeFormat().resolvedOptions().timeZone);
  assert.equal(t.pending, 0);
});

test("fewer events go when the interval passes", async () => {
  const { stub, endpoint } = await collector();
  const t = tracker({ endpoint, flushIntervalMs: 50 });
  const ids = [t.track("lesson_completed", lesson(1)), t.track("lesson_completed", lesson(2))];
  await until("the timed flush", () => stub.received.length === 1);
  assert.deepEqual(stub.eventIds, ids);
});

test("a 503 is retried after its Retry-After, and nothing is lost or sent twice", async () => {
  const { stub, endpoint } = await collector((request, index) =>
    index === 0
      ? { status: 503, headers: { "Retry-After": "1" }, body: { error: "event store unavailable" } }
      : acceptAll(request, index),
  );
  const t = tracker({ endpoint, flushIntervalMs: 10, backoffBaseMs: 10 });
  const id = t.track("lesson_completed", lesson(1));
  await until("the retry", () => t.stats.accepted === 1, 5_000);
  assert.equal(stub.received.length, 2);
  const waited = stub.received[1].at - stub.received[0].at;
  assert.ok(waited >= 1_000, `retried after ${waited} ms, before Retry-After's 1 s`);
  assert.deepEqual(stub.eventIds, [id, id]);
  assert.equal(t.stats.failures, 1);
});

test("5xx and network failures back off exponentially and keep the events", async () => {
  const { stub, endpoint } = await collector((request, index) =>
    index < 2 ? { status: 500 } : acceptAll(request, index),
  );
  let refusedConnections = 0;
  const flaky: TrackerOptions["fetch"] = (input, init) => {
    if (refusedConnections < 2) {
      refusedConnections += 1;
      return Promise.reject(new TypeError("Failed to fetch"));
    }
    return fetch(input, init);
  };
  const t = tracker({ endpoint, fetch: flaky, flushIntervalMs: 10, backoffBaseMs: 20, random: () => 0.99 });
  const id = t.track("lesson_completed", lesson(1));
  await until("delivery after four failures", () => t.stats.accepted === 1, 5_000);
  assert.equal(t.stats.failures, 4);
  assert.equal(stub.received.length, 3);
  assert.deepEqual(stub.eventIds, [id, id, id]);
  // full jitter under a doubling ceiling: the last wait (attempt 3) is up to 160 ms
  const waited = stub.received[2].at - stub.received[1].at;
  assert.ok(waited >= 150, `waited ${waited} ms`);
});

test("a 4xx is final: reported, dropped from the queue, never retried", async () => {
  const { stub, endpoint } = await collector(() => ({ status: 401, body: { errors: [{ field: "Authorization", message: "unknown write key" }] } }));
  const errors: string[] = [];
  const t = tracker({ endpoint, writeKey: "wk_wrong", flushIntervalMs: 10, onError: (m) => errors.push(m) });
  t.track("lesson_completed", lesson(1));
  t.track("lesson_completed", lesson(2));
  await until("the refusal", () => t.stats.refused === 2);
  const result = await t.flush();
  assert.equal(result.pending, 0);
  assert.equal(stub.received.length, 1);
  assert.match(errors.join("\n"), /refused 2 events with 401.*unknown write key/);
});

test("an expired user token is refreshed once and the batch sent again", async () => {
  const { stub, endpoint } = await collector((request, index) =>
    request.headers["x-user-token"] === "fresh" ? acceptAll(request, index) : { status: 401 },
  );
  const asked: boolean[] = [];
  let current = "expired"; // as an app's sign-in state would hold it
  const t = tracker({
    endpoint,
    flushIntervalMs: 10,
    userToken: (refresh) => {
      asked.push(refresh);
      if (refresh) current = "fresh";
      return current;
    },
  });
  t.track("lesson_completed", lesson(1));
  await until("the resend", () => t.stats.accepted === 1);
  assert.deepEqual(asked, [false, true, false]);
  assert.deepEqual(stub.received.map((r) => r.headers["x-user-token"]), ["expired", "fresh"]);
});

test("a 413 splits the batch in halves", async () => {
  const { stub, endpoint } = await collector((request, index) =>
    request.events.length > 2 ? { status: 413 } : acceptAll(request, index),
  );
  const t = tracker({ endpoint, flushIntervalMs: 60_000 });
  for (let i = 0; i < 7; i += 1) t.track("lesson_completed", lesson(i));
  const result = await t.flush();
  assert.equal(result.accepted, 7);
  assert.deepEqual(stub.received.map((r) => r.events.length), [7, 4, 2, 2, 3, 2, 1]);
});

test("events the collector rejects inside a 202 are reported and not resent", async () => {
  const { stub, endpoint } = await collector((request) => ({
    status: 202,
    body: {
      accepted: request.events.length - 1,
      rejected: [{ index: 1, event_id: request.events[1].event_id, errors: [{ field: "properties.score", message: "must be <= 100" }] }],
    },
  }));
  const rejected: string[] = [];
  const t = tracker({ endpoint, flushIntervalMs: 60_000, onRejected: (r) => rejected.push(r.errors[0].field) });
  t.track("quiz_completed", { content_id: "q", score: 84 });
  t.track("quiz_completed", { content_id: "q", score: 184 });
  const result = await t.flush();
  assert.deepEqual([result.accepted, result.refused, result.pending], [1, 1, 0]);
  assert.deepEqual(rejected, ["properties.score"]);
  assert.equal((await t.flush()).pending, 0);
  assert.equal(stub.received.length, 1);
});

test("events queued while the collector is down are sent by the next page", async () => {
  const factory = new IDBFactory();
  const down = await collector(() => ({ status: 503 }));
  const first = tracker({ endpoint: down.endpoint, queue: IndexedDbQueue.open("learnstream", factory), flushIntervalMs: 10, backoffBaseMs: 10_000 });
  const ids = [1, 2, 3].map((i) => first.track("lesson_completed", lesson(i)));
  await until("a failed send", () => first.stats.failures === 1);
  await first.close();

  const { stub, endpoint } = await collector();
  const second = tracker({ endpoint, queue: IndexedDbQueue.open("learnstream", factory), flushIntervalMs: 60_000 });
  await until("the queue left by the first page", () => stub.received.length === 1);
  assert.deepEqual(stub.eventIds, ids);
  await until("the queue emptied", () => second.stats.queued === 0);
});

test("pagehide sends the queue with keepalive, and an answer settles it", async () => {
  const { stub, endpoint } = await collector();
  const page = new FakeWindow();
  const sent: RequestInit[] = [];
  const recording: TrackerOptions["fetch"] = (input, init) => {
    sent.push(init);
    return fetch(input, init);
  };
  const t = tracker({ endpoint, fetch: recording, env: page as unknown as BrowserEnv, flushIntervalMs: 60_000, writeKey: "wk_1" });
  await t.ready;
  const ids = [t.track("lesson_completed", lesson(1)), t.track("lesson_completed", lesson(2))];
  page.dispatchEvent(new Event("pagehide"));
  page.dispatchEvent(new Event("pagehide")); // in flight: not sent twice
  await until("the keepalive send", () => t.pending === 0);
  assert.equal(sent.length, 1);
  assert.equal(sent[0].keepalive, true);
  assert.equal(stub.received[0].headers.authorization, "Bearer wk_1");
  assert.deepEqual(stub.eventIds, ids);
  assert.equal(stub.received[0].events[0].context?.page_url, "/lessons/7");
  assert.equal(stub.received[0].events[0].device_info?.screen_resolution, "1280x800");
  assert.equal(t.stats.beacons, 1);
});

test("a hidden page sends too; coming back online retries at once", async () => {
  let online = false;
  const { stub, endpoint } = await collector();
  const offlineable: TrackerOptions["fetch"] = (input, init) =>
    online ? fetch(input, init) : Promise.reject(new TypeError("Failed to fetch"));
  const page = new FakeWindow();
  const t = tracker({ endpoint, fetch: offlineable, env: page as unknown as BrowserEnv, flushIntervalMs: 10, backoffBaseMs: 60_000, random: () => 0.99 });
  const id = t.track("lesson_completed", lesson(1));
  await until("the offline failure", () => t.stats.failures === 1);
  page.document.visibilityState = "hidden";
  page.document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(t.stats.beacons, 1); // tried, and failed: offline
  online = true;
  page.dispatchEvent(new Event("online")); // long before the minute's backoff
  await until("delivery on reconnect", () => t.stats.accepted === 1, 2_000);
  assert.deepEqual(stub.eventIds, [id]);
});

test("keepalive bodies stay inside the browser's 64 KiB budget, oldest first", () => {
  const big = Array.from({ length: 300 }, (_, i) => ({
    event_id: `0190f3a0-5b1c-7cc3-9a4f-${String(i).padStart(12, "0")}`,
    event_type: "lesson_completed",
    timestamp: "2026-01-27T14:30:45.123Z",
    properties: { content_id: "x".repeat(400) },
  }));
  const chunks = keepaliveChunks(big, new Date());
  const bytes = chunks.reduce((sum, c) => sum + new TextEncoder().encode(c.body).length, 0);
  assert.ok(bytes <= KEEPALIVE_BUDGET_BYTES, `${bytes} bytes`);
  const sent = chunks.flatMap((c) => c.events);
  assert.deepEqual(sent, big.slice(0, sent.length));
  assert.ok(sent.length > 100 && sent.length < 300);
  assert.ok(chunks.every((c) => c.events.length <= 100));
  for (const chunk of chunks) assert.deepEqual(JSON.parse(chunk.body).events, chunk.events);
});
