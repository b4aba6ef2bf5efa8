/**
 * Drives the browser SDK in real headless Chromium through an outage, a tab closed
 * while offline and opened again, and a pagehide.
 *
 * Run by tests/test_browser_sdk.py with one JSON argument (the Chromium binary, the
 * page's origin, the collector's URL, a write key and an end-user token). It prints one
 * JSON line, the event_ids tracked in each phase, and keeps the browser open, so the
 * requests sent at pagehide can finish while the test waits for them in ClickHouse.
 * Then, on the line "revisit", it opens the tracking page again (which sends the
 * pagehide events a second time: no answer for them was ever seen) and prints how many
 * it sent. It closes the browser when its standard input closes.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { type BrowserContext, type Page, chromium } from "playwright-core";

import type { Tracker, TrackerOptions } from "../src/index.js";

declare global {
  interface Window {
    tracker: Tracker;
    trackerReady: Promise<boolean>;
    errors: string[];
  }
}

interface Config {
  chromium: string;
  pageOrigin: string;
  collector: string;
  writeKey: string;
  userToken: string;
}

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const WAIT_MS = 20_000;

function pageUrl(config: Config, options: Partial<TrackerOptions>): string {
  const all: Partial<TrackerOptions> = {
    endpoint: config.collector,
    writeKey: config.writeKey,
    userToken: config.userToken,
    flushIntervalMs: 300,
    backoffBaseMs: 200,
    backoffMaxMs: 1_000,
    ...options,
  };
  return `${config.pageOrigin}/e2e/page.html?options=${encodeURIComponent(JSON.stringify(all))}`;
}

async function open(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await page.evaluate(() => window.trackerReady);
}

function track(page: Page, count: number, phase: string): Promise<string[]> {
  return page.evaluate(
    ({ count, phase }) =>
      Array.from({ length: count }, (_, i) =>
        window.tracker.track("lesson_completed", { content_id: `${phase}-${i}` }),
      ),
    { count, phase },
  );
}

async function stats(page: Page): Promise<unknown> {
  return page.evaluate(() => ({
    ...window.tracker.stats,
    pending: window.tracker.pending,
    lastErrors: window.errors.slice(-5),
  }));
}

async function waitFor(page: Page, what: string, check: () => boolean): Promise<void> {
  try {
    await page.waitForFunction(check, undefined, { timeout: WAIT_MS, polling: 50 });
  } catch (error) {
    throw new Error(`timed out waiting for ${what}; tracker: ${JSON.stringify(await stats(page))}`, { cause: error });
  }
}

function watch(page: Page): void {
  page.on("console", (message) => process.stderr.write(`[page ${message.type()}] ${message.text()}\n`));
}

async function run(context: BrowserContext, config: Config): Promise<Record<string, string[]>> {
  const page = context.pages()[0] ?? (await context.newPage());
  watch(page);
  await open(page, pageUrl(config, {}));

  // online: batches go through CORS (a preflight, for the key and token headers)
  const online = await track(page, 5, "online");
  await waitFor(page, "the online events accepted", () => window.tracker.stats.accepted === 5 && window.tracker.pending === 0);

  // offline: every send fails, the events wait in IndexedDB
  await context.setOffline(true);
  const offline = await track(page, 5, "offline");
  await waitFor(
    page,
    "a failed send while offline",
    () => window.tracker.stats.failures > 0 && window.tracker.stats.queued === 5 && window.tracker.stats.accepted === 5,
  );

  // the tab is closed while offline, and opened again once online: its queue is all that
  // is left. (A reload while offline raced: Playwright's failed reload could return
  // before Chromium had replaced the old page, whose retry timer then sent the events
  // once online, and the new page found an empty queue; CI saw it once.)
  await page.close();
  await context.setOffline(false);
  const reopened = await context.newPage();
  watch(reopened);
  await open(reopened, pageUrl(config, {}));
  await waitFor(reopened, "the offline events sent by the reopened page", () => window.tracker.stats.accepted === 5 && window.tracker.stats.queued === 0);

  // pagehide: a slow timer, so only the send at leaving can deliver these
  await open(reopened, pageUrl(config, { flushIntervalMs: 600_000 }));
  const pagehide = await track(reopened, 3, "pagehide");
  await reopened.goto(`${config.pageOrigin}/e2e/away.html`);
  return { online, offline, pagehide };
}

async function revisit(context: BrowserContext, config: Config): Promise<number> {
  const page = context.pages()[0];
  await open(page, pageUrl(config, {}));
  await waitFor(page, "the queue sent again", () => window.tracker.stats.accepted > 0 && window.tracker.stats.queued === 0);
  return page.evaluate(() => window.tracker.stats.accepted);
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "{}") as Config;
  const profile = mkdtempSync(join(tmpdir(), "learnstream-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: config.chromium,
    headless: true,
    args: FLAGS,
  });
  try {
    const tracked = await run(context, config);
    process.stdout.write(`${JSON.stringify(tracked)}\n`);
    for await (const command of createInterface({ input: process.stdin })) {
      if (command !== "revisit") throw new Error(`unknown command ${command}`);
      process.stdout.write(`${JSON.stringify({ resent: await revisit(context, config) })}\n`);
    }
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
