/** A real HTTP server standing in for the collector: records each request and answers
 * as the test scripts it, so the SDK's own fetch, timers and queue run unchanged. */

import { type IncomingHttpHeaders, type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";

import type { LearnstreamEvent } from "../src/event.js";

export interface Received {
  headers: IncomingHttpHeaders;
  sentAt: string;
  events: LearnstreamEvent[];
  at: number;
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export type Script = (request: Received, index: number) => Answer;

/** What the real collector answers a batch it stored whole. */
export const acceptAll: Script = (request) => ({
  status: 202,
  body: { accepted: request.events.length, rejected: [] },
});

export class CollectorStub {
  readonly received: Received[] = [];
  private server: Server | undefined;

  constructor(public script: Script = acceptAll) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          sent_at: string;
          events: LearnstreamEvent[];
        };
        const request = { headers: req.headers, sentAt: body.sent_at, events: body.events, at: Date.now() };
        this.received.push(request);
        const answer = this.script(request, this.received.length - 1);
        res.writeHead(answer.status, { "content-type": "application/json", ...answer.headers });
        res.end(JSON.stringify(answer.body ?? {}));
      });
    });
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  get eventIds(): string[] {
    return this.received.flatMap((r) => r.events.map((e) => e.event_id));
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

/** Polls ``check`` until it holds, or fails after ``timeoutMs``. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
