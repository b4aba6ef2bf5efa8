/** When to try again after a failed send. */

/**
 * Exponential backoff with full jitter: uniform in [0, min(max, base * 2^attempt)), so
 * many browsers back from one outage do not all return in the same instant.
 */
export function backoffDelayMs(
  attempt: number,
  baseMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/**
 * A Retry-After header in milliseconds from now: delta-seconds or an HTTP-date
 * (RFC 9110 section 10.2.3). Undefined when absent or unreadable.
 */
export function retryAfterMs(header: string | null | undefined, nowMs: number): number | undefined {
  if (header === null || header === undefined) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  if (!/GMT$/i.test(text)) return undefined; // HTTP-dates are always GMT; "-3" parses as a year
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}
