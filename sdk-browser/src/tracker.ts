/**
 * ``Tracker``: queue events durably in the browser, send them in batches, lose none.
 *
 * - Every event is in the offline queue (IndexedDB) before anything is sent, and leaves
 *   it only when the collector has answered for it: accepted (202), or refused for good
 *   (a 4xx, logged). A reload, a crash or a week offline loses nothing.
 * - A batch goes when 100 events are waiting or every ``flushIntervalMs``.
 * - A 5xx or a network failure is retried with exponential backoff and full jitter, or
 *   after the server's Retry-After; coming back online retries at once.
 * - On ``pagehide`` (and when the page is hidden) what is queued goes out with
 *   ``fetch(..., {keepalive: true})``, which outlives the page, or ``sendBeacon``
 *   where keepalive is missing. The events stay queued until an answer is seen, so
 *   the next visit may send them again: the pipeline drops repeated event_ids.
 */

import { backoffDelayMs } from "./backoff.js";
import type { DeviceInfo, EventContext, LearnstreamEvent, PrivacyLevel, Properties, Rejection } from "./event.js";
import { type EventQueue, openQueue } from "./queue.js";
import { BATCH_PATH, type FetchLike, type SendOutcome, batchBody, postBatch } from "./transport.js";
import { Uuid7Generator } from "./uuid7.js";

/** The collector's batch limit is 500; the SDK sends at most 100 at once. */
export const MAX_BATCH = 100;
/** Browsers allow 64 KiB of keepalive bodies in flight per page; leave headroom. */
export const KEEPALIVE_BUDGET_BYTES = 60_000;

/** A current end-user JWT; called again with ``refresh`` after a 401. */
export type UserTokenProvider = (refresh: boolean) => string | undefined | Promise<string | undefined>;

export interface TrackerOptions {
  /** The collector's base URL, e.g. "https://collect.example.com". */
  endpoint: string;
  /** Sent as Authorization: Bearer <writeKey>. */
  writeKey?: string;
  /** The end-user JWT sent as X-User-Token, or a function that returns the current one. */
  userToken?: string | UserTokenProvider;
  userId?: string | number;
  sessionId?: string | number;
  organizationId?: string | number;
  deviceInfo?: DeviceInfo;
  context?: EventContext;
  privacyLevel?: PrivacyLevel;
  /** Fill device_info.timezone and screen_resolution, context.page_url (path only). */
  autoContext?: boolean;
  flushAt?: number;
  flushIntervalMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** A Retry-After longer than this is cut to it. */
  maxRetryAfterMs?: number;
  requestTimeoutMs?: number;
  /** The queue keeps at most this many events; beyond it the oldest are dropped (and reported). */
  maxQueuedEvents?: number;
  /** The IndexedDB database name. */
  queueName?: string;
  queue?: EventQueue | Promise<EventQueue>;
  fetch?: FetchLike;
  now?: () => number;
  random?: () => number;
  /** Where pagehide, visibilitychange and online are heard; the page's window by default. */
  env?: BrowserEnv;
  onRejected?: (rejection: Rejection) => void;
  onError?: (message: string, detail?: unknown) => void;
}

export interface TrackOptions {
  eventId?: string;
  timestamp?: Date | string;
  userId?: string | number;
  sessionId?: string | number;
  organizationId?: string | number;
  deviceInfo?: DeviceInfo;
  context?: EventContext;
  privacyLevel?: PrivacyLevel;
}

export interface BrowserEnv {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
  document?: {
    visibilityState: string;
    addEventListener(type: string, listener: () => void): void;
    removeEventListener(type: string, listener: () => void): void;
  };
  navigator?: {
    sendBeacon?: (url: string, data: Blob) => boolean;
    locks?: LockManager;
  };
  location?: { pathname: string };
  screen?: { width: number; height: number };
}

export interface TrackerStats {
  /** Accepted by the collector (durable in Kafka). */
  accepted: number;
  /** Refused, per event inside a 202 or as a whole batch with a 4xx: logged, not retried. */
  refused: number;
  /** Dropped because the queue was full. */
  dropped: number;
  /** Sends that failed and will be retried. */
  failures: number;
  /** Requests sent at pagehide or when hidden. */
  beacons: number;
  /** Events queued, as this tab last saw the queue. */
  queued: number;
}

export interface FlushResult {
  accepted: number;
  refused: number;
  /** Still queued afterwards. */
  pending: number;
  /** Set when a failure scheduled the next try. */
  retryInMs?: number;
}

export class Tracker {
  readonly ready: Promise<void>;
  readonly stats: TrackerStats = { accepted: 0, refused: 0, dropped: 0, failures: 0, beacons: 0, queued: 0 };

  private readonly url: string;
  private readonly ids: Uuid7Generator;
  private readonly flushAt: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly fetchFn: FetchLike;
  private readonly env: BrowserEnv | undefined;
  private readonly queue: Promise<EventQueue>;
  /** This tab's view of the queue, for the synchronous send at pagehide. */
  private readonly mirror = new Map<string, LearnstreamEvent>();
  /** Sent with keepalive and not yet answered: not sent again meanwhile. */
  private readonly inFlight = new Set<string>();
  private unsaved: LearnstreamEvent[] = [];
  private saving: Promise<void> = Promise.resolve();
  private flushing: Promise<FlushResult> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerDueAt = Number.POSITIVE_INFINITY;
  private attempt = 0;
  /** No send before this instant: a backoff, or the server's Retry-After. */
  private notBefore = 0;
  private lastFailure: "server" | "network" | undefined;
  private token: string | undefined;
  private closed = false;

  constructor(private readonly options: TrackerOptions) {
    if (!options.endpoint) throw new Error("learnstream: endpoint is required");
    this.url = options.endpoint.replace(/\/+$/, "") + BATCH_PATH;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.ids = new Uuid7Generator(this.now);
    this.flushAt = Math.max(1, Math.min(options.flushAt ?? MAX_BATCH, MAX_BATCH));
    const fetchFn = options.fetch ?? globalThis.fetch;
    this.fetchFn = (input, init) => fetchFn(input, init);
    this.env = options.env ?? defaultEnv();
    this.token = typeof options.userToken === "string" ? options.userToken : undefined;
    this.queue = Promise.resolve(options.queue ?? openQueue(options.queueName ?? "learnstream", undefined, this.warn));
    this.ready = this.start();
    this.listen();
  }

  /** Queue one event; returns its event_id. It is saved to the queue asynchronously. */
  track(eventType: string, properties: Properties = {}, options: TrackOptions = {}): string {
    if (this.closed) throw new Error("learnstream: track() after close()");
    const event = this.envelope(eventType, properties, options);
    this.mirror.set(event.event_id, event);
    this.unsaved.push(event);
    if (this.unsaved.length === 1) this.saving = this.saving.then(() => this.save());
    if (this.mirror.size >= this.flushAt) void this.flush();
    else this.schedule(this.options.flushIntervalMs ?? 5_000);
    return event.event_id;
  }

  /** Replace the end-user token (after sign-in, or when it was refreshed). */
  setUserToken(token: string | undefined): void {
    this.token = token;
  }

  /** Send everything queued now (within the current backoff); resolves when done. */
  flush(): Promise<FlushResult> {
    if (this.flushing) return this.flushing;
    this.flushing = this.drain().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  /** Events queued as this tab knows them (other tabs' events count once seen). */
  get pending(): number {
    return this.mirror.size;
  }

  /** Stop timers and listeners; what is queued stays for the next page. */
  async close(): Promise<void> {
    this.closed = true;
    this.unlisten();
    clearTimeout(this.timer);
    await this.saving;
    await this.flushing;
    (await this.queue).close();
  }

  // --- building events -----------------------------------------------------------

  private envelope(eventType: string, properties: Properties, options: TrackOptions): LearnstreamEvent {
    const o = this.options;
    const timestamp =
      options.timestamp === undefined
        ? new Date(this.now()).toISOString()
        : typeof options.timestamp === "string"
          ? options.timestamp
          : options.timestamp.toISOString();
    const event: LearnstreamEvent = {
      event_id: options.eventId ?? this.ids.next(),
      event_type: eventType,
      timestamp,
      properties,
    };
    const userId = options.userId ?? o.userId;
    const sessionId = options.sessionId ?? o.sessionId;
    const organizationId = options.organizationId ?? o.organizationId;
    const privacyLevel = options.privacyLevel ?? o.privacyLevel;
    const deviceInfo = { ...this.autoDevice(), ...o.deviceInfo, ...options.deviceInfo };
    const context = { ...this.autoContext(), ...o.context, ...options.context };
    if (userId !== undefined) event.user_id = userId;
    if (sessionId !== undefined) event.session_id = sessionId;
    if (organizationId !== undefined) event.organization_id = organizationId;
    if (privacyLevel !== undefined) event.privacy_level = privacyLevel;
    if (Object.keys(deviceInfo).length > 0) event.device_info = deviceInfo;
    if (Object.keys(context).length > 0) event.context = context;
    return event;
  }

  private autoDevice(): DeviceInfo {
    if (this.options.autoContext === false) return {};
    const device: DeviceInfo = {};
    try {
      // streaks and daily stats count days in the learner's own zone
      device.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch {
      // no Intl time zones: the collector's default applies
    }
    const screen = this.env?.screen;
    if (screen) device.screen_resolution = `${screen.width}x${screen.height}`;
    return device;
  }

  private autoContext(): EventContext {
    if (this.options.autoContext === false || !this.env?.location) return {};
    // the path only: query strings and fragments often carry tokens and personal data
    return { page_url: this.env.location.pathname };
  }

  // --- the queue -----------------------------------------------------------------

  private async start(): Promise<void> {
    const queue = await this.queue;
    const max = this.options.maxQueuedEvents ?? 10_000;
    let stored: LearnstreamEvent[] = [];
    try {
      stored = await queue.oldest(max);
    } catch (error) {
      // still usable: new events are queued and sent, the old ones wait for a later page
      this.error("could not read the offline queue", error);
    }
    // what an earlier page left goes first, then what was tracked while opening
    const tracked = [...this.mirror.values()];
    this.mirror.clear();
    for (const event of [...stored, ...tracked]) this.mirror.set(event.event_id, event);
    this.stats.queued = this.mirror.size;
    if (this.mirror.size > 0) this.schedule(0);
  }

  private async save(): Promise<void> {
    const events = this.unsaved;
    this.unsaved = [];
    try {
      const queue = await this.queue;
      await queue.add(events);
      const dropped = await queue.trim(this.options.maxQueuedEvents ?? 10_000);
      if (dropped.length > 0) {
        for (const id of dropped) this.mirror.delete(id);
        this.stats.dropped += dropped.length;
        this.error(`queue full: dropped the ${dropped.length} oldest events`, dropped);
      }
      this.stats.queued = await queue.count();
    } catch (error) {
      this.error("could not save events to the offline queue", error);
    }
  }

  // --- sending -------------------------------------------------------------------

  private async drain(): Promise<FlushResult> {
    const result: FlushResult = { accepted: 0, refused: 0, pending: 0 };
    await this.ready;
    await this.saving;
    const queue = await this.queue;
    if (this.now() < this.notBefore) {
      result.pending = await queue.count();
      this.schedule(0); // moved to the end of the backoff
      return result;
    }
    const work = async (): Promise<void> => {
      for (;;) {
        const batch = (await queue.oldest(this.flushAt)).filter((e) => !this.inFlight.has(e.event_id));
        if (batch.length === 0) return;
        const failed = await this.deliver(queue, batch, result, false);
        if (failed) {
          result.retryInMs = this.backOff(failed);
          return;
        }
        this.attempt = 0;
        this.lastFailure = undefined;
      }
    };
    const locks = this.env?.navigator?.locks;
    if (locks) {
      // one tab sends at a time; another tab holding the lock is sending our queue too
      await locks.request(`learnstream:${this.url}`, { ifAvailable: true }, async (lock) => {
        if (lock) await work();
      });
    } else {
      await work();
    }
    result.pending = this.stats.queued = await queue.count();
    if (result.pending > 0 && result.retryInMs === undefined) {
      this.schedule(this.options.flushIntervalMs ?? 5_000);
    }
    return result;
  }

  /** Send one batch and settle its events; a failure to retry later is returned. */
  private async deliver(
    queue: EventQueue,
    batch: LearnstreamEvent[],
    result: FlushResult,
    tokenRefreshed: boolean,
  ): Promise<Extract<SendOutcome, { kind: "retry" }> | undefined> {
    const outcome = await postBatch(this.fetchFn, this.url, await this.headers(false), batchBody(batch, new Date(this.now())), {
      timeoutMs: this.options.requestTimeoutMs ?? 15_000,
      nowMs: this.now(),
    });
    if (outcome.kind === "retry") return outcome;
    if (outcome.kind === "refused") {
      if (outcome.status === 413 && batch.length > 1) {
        // too big together: halves, each settled on its own
        const half = Math.ceil(batch.length / 2);
        return (
          (await this.deliver(queue, batch.slice(0, half), result, tokenRefreshed)) ??
          (await this.deliver(queue, batch.slice(half), result, tokenRefreshed))
        );
      }
      if (outcome.status === 401 && !tokenRefreshed && typeof this.options.userToken === "function") {
        await this.headers(true); // an expired end-user token: ask for a fresh one, once
        return this.deliver(queue, batch, result, true);
      }
      result.refused += batch.length;
      this.stats.refused += batch.length;
      this.error(`collector refused ${batch.length} events with ${outcome.status}, not retrying: ${outcome.detail}`);
    } else {
      for (const rejection of outcome.rejected) this.reject(rejection);
      const accepted = batch.length - outcome.rejected.length;
      result.accepted += accepted;
      result.refused += outcome.rejected.length;
      this.stats.accepted += accepted;
      this.stats.refused += outcome.rejected.length;
    }
    await this.settle(queue, batch);
    return undefined;
  }

  private async settle(queue: EventQueue, events: readonly LearnstreamEvent[]): Promise<void> {
    const ids = events.map((e) => e.event_id);
    await queue.remove(ids);
    for (const id of ids) this.mirror.delete(id);
  }

  /** The delay before the next try, and the timer for it. */
  private backOff(failure: Extract<SendOutcome, { kind: "retry" }>): number {
    this.stats.failures += 1;
    this.lastFailure = failure.cause;
    const base = this.options.backoffBaseMs ?? 1_000;
    const jitter = backoffDelayMs(this.attempt, base, this.options.backoffMaxMs ?? 60_000, this.random);
    this.attempt += 1;
    const delay =
      failure.retryAfterMs === undefined
        ? jitter
        : // the server's wish, plus a little spread so its clients don't return at once
          Math.min(failure.retryAfterMs, this.options.maxRetryAfterMs ?? 600_000) + Math.floor(this.random() * base);
    this.notBefore = this.now() + delay;
    this.warn(`learnstream: send failed (${failure.detail}); retrying in ${delay} ms`);
    this.schedule(delay, true);
    return delay;
  }

  private async headers(refresh: boolean): Promise<Record<string, string>> {
    const provider = this.options.userToken;
    if (typeof provider === "function") {
      try {
        this.token = (await provider(refresh)) ?? undefined;
      } catch (error) {
        this.error("the user token provider failed", error);
      }
    }
    return this.headersNow();
  }

  private headersNow(): Record<string, string> {
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (this.options.writeKey) headers.Authorization = `Bearer ${this.options.writeKey}`;
    if (this.token) headers["X-User-Token"] = this.token;
    return headers;
  }

  private schedule(delayMs: number, replace = false): void {
    if (this.closed) return;
    // never before the backoff or the server's Retry-After has passed
    delayMs = Math.max(delayMs, this.notBefore - this.now());
    const due = this.now() + delayMs;
    if (!replace && this.timer !== undefined && this.timerDueAt <= due) return;
    clearTimeout(this.timer);
    this.timerDueAt = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerDueAt = Number.POSITIVE_INFINITY;
      void this.flush();
    }, delayMs);
  }

  // --- leaving the page ----------------------------------------------------------

  /**
   * Send what this tab has queued with requests that outlive the page. Synchronous:
   * the page may be gone before a promise resolves (IndexedDB cannot be read now).
   */
  sendBeforeLeaving(): void {
    if (this.lastFailure === "server" && this.now() < this.notBefore) return; // Retry-After
    const events = [...this.mirror.values()].filter((e) => !this.inFlight.has(e.event_id));
    if (events.length === 0) return;
    const headers = this.headersNow();
    const keepalive = supportsKeepalive();
    for (const chunk of keepaliveChunks(events, new Date(this.now()))) {
      this.stats.beacons += 1;
      if (keepalive) {
        this.sendKeepalive(chunk.events, chunk.body, headers);
      } else if (!this.options.writeKey && !this.token) {
        // a beacon cannot carry headers, so only an open collector can take it
        try {
          this.env?.navigator?.sendBeacon?.(this.url, new Blob([chunk.body], { type: "application/json" }));
        } catch (error) {
          this.error("sendBeacon refused the events; they stay queued", error);
        }
      }
    }
  }

  private sendKeepalive(events: LearnstreamEvent[], body: string, headers: Record<string, string>): void {
    for (const event of events) this.inFlight.add(event.event_id);
    void postBatch(this.fetchFn, this.url, headers, body, { keepalive: true, nowMs: this.now() })
      .then(async (outcome) => {
        // the page lived on (back from the bfcache, or only hidden): settle as usual
        if (outcome.kind === "retry") return;
        if (outcome.kind === "accepted") {
          for (const rejection of outcome.rejected) this.reject(rejection);
          this.stats.accepted += events.length - outcome.rejected.length;
        }
        await this.settle(await this.queue, events);
      })
      .catch((error) => this.error("settling a keepalive send failed", error))
      .finally(() => {
        for (const event of events) this.inFlight.delete(event.event_id);
      });
  }

  private readonly onHidden = (): void => {
    if (this.env?.document?.visibilityState === "hidden") this.sendBeforeLeaving();
  };

  private readonly onPageHide = (): void => this.sendBeforeLeaving();

  private readonly onOnline = (): void => {
    if (this.lastFailure === "network") {
      // the backoff waited for the network; the network is back
      this.attempt = 0;
      this.notBefore = 0;
      this.lastFailure = undefined;
    }
    void this.flush();
  };

  private listen(): void {
    this.env?.addEventListener("pagehide", this.onPageHide);
    this.env?.addEventListener("online", this.onOnline);
    this.env?.document?.addEventListener("visibilitychange", this.onHidden);
  }

  private unlisten(): void {
    this.env?.removeEventListener("pagehide", this.onPageHide);
    this.env?.removeEventListener("online", this.onOnline);
    this.env?.document?.removeEventListener("visibilitychange", this.onHidden);
  }

  // --- reporting -----------------------------------------------------------------

  private reject(rejection: Rejection): void {
    if (this.options.onRejected) this.options.onRejected(rejection);
    else console.error("learnstream: collector rejected event", rejection.event_id, rejection.errors);
  }

  private error(message: string, detail?: unknown): void {
    if (this.options.onError) this.options.onError(message, detail);
    else console.error(`learnstream: ${message}`, detail ?? "");
  }

  private readonly warn = (message: string, detail?: unknown): void => {
    if (this.options.onError) this.options.onError(message, detail);
    else console.warn(message, detail ?? "");
  };
}

function defaultEnv(): BrowserEnv | undefined {
  return typeof window === "undefined" ? undefined : (window as unknown as BrowserEnv);
}

function supportsKeepalive(): boolean {
  return typeof Request !== "undefined" && "keepalive" in Request.prototype;
}

/** Batches whose bodies together fit the keepalive budget, oldest events first. */
export function keepaliveChunks(
  events: readonly LearnstreamEvent[],
  sentAt: Date,
  budget: number = KEEPALIVE_BUDGET_BYTES,
): { events: LearnstreamEvent[]; body: string }[] {
  const encoder = new TextEncoder();
  const head = `{"sent_at":${JSON.stringify(sentAt.toISOString())},"events":[`;
  const overhead = encoder.encode(head).length + 2; // "]}"
  const chunks: { events: LearnstreamEvent[]; body: string }[] = [];
  let used = 0;
  let current: { events: LearnstreamEvent[]; parts: string[] } | undefined;
  const close = (): void => {
    if (current) chunks.push({ events: current.events, body: `${head}${current.parts.join(",")}]}` });
    current = undefined;
  };
  for (const event of events) {
    const part = JSON.stringify(event);
    const size = encoder.encode(part).length + 1; // its comma
    const full = current !== undefined && current.events.length >= MAX_BATCH;
    if (current === undefined || full) {
      close();
      if (used + overhead + size > budget) break;
      current = { events: [], parts: [] };
      used += overhead;
    }
    if (used + size > budget) break; // the rest waits in the queue for the next visit
    current.events.push(event);
    current.parts.push(part);
    used += size;
  }
  close();
  return chunks.filter((c) => c.events.length > 0);
}
