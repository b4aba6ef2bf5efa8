export { Tracker, MAX_BATCH, KEEPALIVE_BUDGET_BYTES, keepaliveChunks } from "./tracker.js";
export type { TrackerOptions, TrackOptions, TrackerStats, FlushResult, UserTokenProvider, BrowserEnv } from "./tracker.js";
export type { LearnstreamEvent, DeviceInfo, EventContext, PrivacyLevel, Properties, Rejection } from "./event.js";
export { type EventQueue, IndexedDbQueue, MemoryQueue, openQueue } from "./queue.js";
export { Uuid7Generator, uuid7Millis } from "./uuid7.js";
export { backoffDelayMs, retryAfterMs } from "./backoff.js";
