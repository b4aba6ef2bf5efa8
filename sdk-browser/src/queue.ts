/**
 * The offline queue: every tracked event is kept here until the collector answered
 * for it, so events survive a reload, a crash or a week offline.
 *
 * Keyed by event_id, whose UUIDv7 order is the tracking order: the oldest events go
 * first, and putting the same event twice keeps one.
 */

import type { LearnstreamEvent } from "./event.js";

export interface EventQueue {
  add(events: readonly LearnstreamEvent[]): Promise<void>;
  /** Up to ``limit`` events, oldest first. */
  oldest(limit: number): Promise<LearnstreamEvent[]>;
  remove(eventIds: readonly string[]): Promise<void>;
  count(): Promise<number>;
  /** Drop the oldest events beyond ``max``; returns the dropped ids. */
  trim(max: number): Promise<string[]>;
  close(): void;
}

/** For where IndexedDB is missing or refused (some private modes): one page's life only. */
export class MemoryQueue implements EventQueue {
  private readonly events = new Map<string, LearnstreamEvent>();

  async add(events: readonly LearnstreamEvent[]): Promise<void> {
    for (const event of events) this.events.set(event.event_id, event);
  }

  async oldest(limit: number): Promise<LearnstreamEvent[]> {
    return this.sortedIds()
      .slice(0, limit)
      .map((id) => this.events.get(id) as LearnstreamEvent);
  }

  async remove(eventIds: readonly string[]): Promise<void> {
    for (const id of eventIds) this.events.delete(id);
  }

  async count(): Promise<number> {
    return this.events.size;
  }

  async trim(max: number): Promise<string[]> {
    const dropped = this.sortedIds().slice(0, Math.max(0, this.events.size - max));
    await this.remove(dropped);
    return dropped;
  }

  close(): void {}

  private sortedIds(): string[] {
    return [...this.events.keys()].sort();
  }
}

const STORE = "events";
const VERSION = 1;

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function committed(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

export class IndexedDbQueue implements EventQueue {
  private constructor(private db: IDBDatabase) {
    // another tab upgrading the database: let it, the next open gets the new version
    db.onversionchange = () => db.close();
  }

  static async open(name: string, factory: IDBFactory = globalThis.indexedDB): Promise<IndexedDbQueue> {
    const opening = factory.open(name, VERSION);
    opening.onupgradeneeded = () => {
      if (!opening.result.objectStoreNames.contains(STORE)) {
        opening.result.createObjectStore(STORE, { keyPath: "event_id" });
      }
    };
    return new IndexedDbQueue(await request(opening));
  }

  async add(events: readonly LearnstreamEvent[]): Promise<void> {
    if (events.length === 0) return;
    const tx = this.db.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    for (const event of events) store.put(event);
    await committed(tx);
  }

  async oldest(limit: number): Promise<LearnstreamEvent[]> {
    const tx = this.db.transaction(STORE, "readonly");
    return request(tx.objectStore(STORE).getAll(null, limit)) as Promise<LearnstreamEvent[]>;
  }

  async remove(eventIds: readonly string[]): Promise<void> {
    if (eventIds.length === 0) return;
    const tx = this.db.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    for (const id of eventIds) store.delete(id);
    await committed(tx);
  }

  async count(): Promise<number> {
    return request(this.db.transaction(STORE, "readonly").objectStore(STORE).count());
  }

  async trim(max: number): Promise<string[]> {
    const tx = this.db.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    const excess = (await request(store.count())) - max;
    if (excess <= 0) return [];
    const dropped = (await request(store.getAllKeys(null, excess))) as string[];
    for (const id of dropped) store.delete(id);
    await committed(tx);
    return dropped;
  }

  close(): void {
    this.db.close();
  }
}

/** IndexedDB when the browser gives it, else memory (with a warning: no reload safety). */
export async function openQueue(
  name: string,
  factory: IDBFactory | undefined = globalThis.indexedDB,
  warn: (message: string, error?: unknown) => void = console.warn,
): Promise<EventQueue> {
  if (factory === undefined) {
    warn("learnstream: no IndexedDB here; queued events will not survive a reload");
    return new MemoryQueue();
  }
  try {
    return await IndexedDbQueue.open(name, factory);
  } catch (error) {
    warn("learnstream: IndexedDB refused; queued events will not survive a reload", error);
    return new MemoryQueue();
  }
}
