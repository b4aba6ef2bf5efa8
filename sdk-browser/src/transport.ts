/**
 * One POST of a batch to the collector, and what its answer means for the events.
 *
 * The collector's contract (README, "Try it"): 2xx means Kafka has them; a 4xx is the
 * request's own fault and final, since sending it again cannot help; a 5xx or no answer
 * means "not stored now", and resending is safe because repeated event_ids are dropped.
 */

import { retryAfterMs } from "./backoff.js";
import type { LearnstreamEvent, Rejection } from "./event.js";

export const BATCH_PATH = "/v1/events/batch";

export type SendOutcome =
  | { kind: "accepted"; accepted: number; rejected: Rejection[] }
  | { kind: "refused"; status: number; detail: string }
  | { kind: "retry"; cause: "server" | "network"; detail: string; retryAfterMs?: number };

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export function batchBody(events: readonly LearnstreamEvent[], sentAt: Date): string {
  return JSON.stringify({ sent_at: sentAt.toISOString(), events });
}

export async function postBatch(
  fetchFn: FetchLike,
  url: string,
  headers: Record<string, string>,
  body: string,
  options: { keepalive?: boolean; timeoutMs?: number; nowMs: number },
): Promise<SendOutcome> {
  let response: Response;
  try {
    response = await fetchFn(url, {
      method: "POST",
      headers,
      body,
      // keys travel in headers; no cookies, so the collector's CORS needs no credentials
      credentials: "omit",
      keepalive: options.keepalive ?? false,
      signal: options.timeoutMs && typeof AbortSignal.timeout === "function" ? AbortSignal.timeout(options.timeoutMs) : undefined,
    });
  } catch (error) {
    // offline, DNS, refused connection, a CORS refusal, or our own timeout
    return { kind: "retry", cause: "network", detail: String(error) };
  }
  if (response.status >= 500) {
    const retryAfter = retryAfterMs(response.headers.get("retry-after"), options.nowMs);
    return {
      kind: "retry",
      cause: "server",
      detail: `HTTP ${response.status}: ${(await safeText(response)).slice(0, 200)}`,
      ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter }),
    };
  }
  if (response.status >= 400) {
    return { kind: "refused", status: response.status, detail: (await safeText(response)).slice(0, 1000) };
  }
  return { kind: "accepted", ...acceptedCounts(await safeText(response)) };
}

function acceptedCounts(text: string): { accepted: number; rejected: Rejection[] } {
  try {
    const answer = JSON.parse(text) as { accepted?: unknown; rejected?: unknown };
    return {
      accepted: typeof answer.accepted === "number" ? answer.accepted : 0,
      rejected: Array.isArray(answer.rejected) ? (answer.rejected as Rejection[]) : [],
    };
  } catch {
    return { accepted: 0, rejected: [] }; // a 2xx all the same: stored
  }
}

async function safeText(response: Response): Promise<string> {
  try {
    return await response.text();
  } catch {
    return "";
  }
}
