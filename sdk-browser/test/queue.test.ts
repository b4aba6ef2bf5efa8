import assert from "node:assert/strict";
import { test } from "node:test";

import { IDBFactory } from "fake-indexeddb";

import type { LearnstreamEvent } from "../src/event.js";
import { type EventQueue, IndexedDbQueue, MemoryQueue, openQueue } from "../src/queue.js";
import { Uuid7Generator } from "../src/uuid7.js";

const ids = new Uuid7Generator();

function events(n: number): LearnstreamEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    event_id: ids.next(),
    event_type: "lesson_completed",
    timestamp: new Date().toISOString(),
    properties: { content_id: `lesson-${i}` },
  }));
}

async function behavesAsAQueue(queue: EventQueue): Promise<void> {
  const made = events(7);
  await queue.add(made.slice(0, 4));
  await queue.add(made.slice(4));
  await queue.add([made[0]]); // the same event again is kept once
  assert.equal(await queue.count(), 7);
  assert.deepEqual(await queue.oldest(3), made.slice(0, 3));
  await queue.remove([made[0].event_id, made[2].event_id]);
  assert.deepEqual(await queue.oldest(10), [made[1], ...made.slice(3)]);
  assert.deepEqual(await queue.trim(3), [made[1].event_id, made[3].event_id]);
  assert.deepEqual(await queue.oldest(10), made.slice(4));
  assert.deepEqual(await queue.trim(3), []);
}

test("the IndexedDB queue keeps events in tracking order, once each", async () => {
  const queue = await IndexedDbQueue.open("q", new IDBFactory());
  await behavesAsAQueue(queue);
  queue.close();
});

test("the memory queue behaves the same", async () => {
  await behavesAsAQueue(new MemoryQueue());
});

test("the IndexedDB queue survives closing and opening again (a reload)", async () => {
  const factory = new IDBFactory();
  const first = await IndexedDbQueue.open("learnstream", factory);
  const made = events(3);
  await first.add(made);
  first.close();
  const reopened = await IndexedDbQueue.open("learnstream", factory);
  assert.deepEqual(await reopened.oldest(10), made);
  reopened.close();
  const other = await IndexedDbQueue.open("another-app", factory);
  assert.equal(await other.count(), 0); // one queue per database name
  other.close();
});

test("without IndexedDB the queue lives in memory, with a warning", async () => {
  const warnings: string[] = [];
  const queue = await openQueue("q", undefined, (message) => warnings.push(message));
  assert.ok(queue instanceof MemoryQueue);
  assert.match(warnings[0], /will not survive a reload/);
});
