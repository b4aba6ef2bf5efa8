/**
 * UUIDv7 event ids (RFC 9562): 48 bits of Unix milliseconds, the version, a 12-bit
 * counter, the variant and 62 random bits.
 *
 * The counter (RFC 9562 section 6.2, method 1) makes the ids one tab makes sort in the
 * order they were made, even many in one millisecond: the offline queue is keyed by
 * event_id, so its key order is the tracking order.
 */

export type RandomBytes = (length: number) => Uint8Array;

export function cryptoRandomBytes(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  globalThis.crypto.getRandomValues(bytes);
  return bytes;
}

const MAX_COUNTER = 0xfff;
const MAX_MILLIS = 2 ** 48 - 1;

export class Uuid7Generator {
  private lastMillis = -1;
  private counter = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly random: RandomBytes = cryptoRandomBytes,
  ) {}

  next(): string {
    let millis = Math.floor(this.now());
    const noise = this.random(10);
    if (millis <= this.lastMillis) {
      // the same millisecond, or the clock stepped back: count on from the last id
      millis = this.lastMillis;
      this.counter += 1;
      if (this.counter > MAX_COUNTER) {
        millis += 1; // 4096 ids in one millisecond: borrow the next one
        this.counter = 0;
      }
    } else {
      // a fresh random start, kept below half so the counter has room to count
      this.counter = ((noise[0] << 4) | (noise[1] >> 4)) & 0x7ff;
    }
    if (millis < 0 || millis > MAX_MILLIS) {
      throw new RangeError("uuid7 timestamp must fit in 48 bits of milliseconds");
    }
    this.lastMillis = millis;
    const bytes = new Uint8Array(16);
    let rest = millis;
    for (let i = 5; i >= 0; i -= 1) {
      bytes[i] = rest % 256;
      rest = Math.floor(rest / 256);
    }
    bytes[6] = 0x70 | (this.counter >> 8);
    bytes[7] = this.counter & 0xff;
    bytes[8] = 0x80 | (noise[2] & 0x3f);
    bytes.set(noise.subarray(3, 10), 9);
    return format(bytes);
  }
}

function format(bytes: Uint8Array): string {
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The Unix millisecond a UUIDv7 carries. */
export function uuid7Millis(id: string): number {
  return parseInt(id.replace(/-/g, "").slice(0, 12), 16);
}
