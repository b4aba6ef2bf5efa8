// Renders the dashboard in headless Chromium (the system's, never a downloaded one),
// saves a screenshot and prints, as one JSON line, what each chart drew: its datasets
// and, for every data element, whether the canvas pixel at its centre is painted; then
// opens the page again in a new tab, without the token, and reports what it shows.
//   node screenshot.mjs URL OUT.png [TOKEN]
// CHROMIUM overrides the browser (default /usr/bin/chromium).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, out, token] = process.argv.slice(2);
if (!url || !out) {
  console.error("usage: node screenshot.mjs URL OUT.png [TOKEN]");
  process.exit(2);
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

// Runs in the page. A data element's centre is painted opaque by the chart's own colours;
// an empty or blank canvas, axes and grid lines (translucent) do not pass.
function inspectCharts() {
  const found = {};
  for (const [id, chart] of Object.entries(window.learnstreamDashboard.charts)) {
    const context = chart.canvas.getContext("2d", { willReadFrequently: true });
    const ratio = chart.currentDevicePixelRatio;
    let elements = 0;
    let painted = 0;
    chart.data.datasets.forEach((_, index) => {
      for (const element of chart.getDatasetMeta(index).data) {
        const { x, y } = element.getCenterPoint();
        const [, , , alpha] = context.getImageData(Math.round(x * ratio), Math.round(y * ratio), 1, 1).data;
        elements += 1;
        if (alpha >= 200) painted += 1;
      }
    });
    const { width, height } = chart.canvas;
    const pixels = context.getImageData(0, 0, width, height).data;
    let opaque = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] >= 200) opaque += 1;
    found[id] = {
      type: chart.config.type,
      datasets: chart.data.datasets.map((d) => ({ label: d.label, points: d.data.length })),
      elements,
      painted,
      opaque_pixels: opaque,
    };
  }
  return found;
}

const profile = await mkdtemp(join(tmpdir(), "learnstream-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: FLAGS,
  viewport: { width: 1280, height: 900 },
  deviceScaleFactor: 1,
});
try {
  const page = context.pages()[0] || (await context.newPage());
  const requests = [];
  const problems = [];
  page.on("request", (request) => requests.push(request.url()));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  page.on("pageerror", (error) => problems.push(String(error)));
  await page.goto(token ? `${url}#token=${encodeURIComponent(token)}` : url);
  await page.waitForFunction(() => document.body.dataset.state !== "loading", null, { timeout: 30000 });
  const state = await page.evaluate(() => document.body.dataset.state);
  const error = await page.evaluate(() => document.getElementById("error").textContent);
  const scope = await page.evaluate(() => document.getElementById("scope").textContent);
  const charts = state === "ready" ? await page.evaluate(inspectCharts) : {};
  await page.screenshot({ path: out, fullPage: true });
  // the same page in a new tab, which has no token: it should say so and ask for one
  const bare = await context.newPage();
  await bare.goto(url);
  await bare.waitForFunction(() => document.body.dataset.state !== "loading", null, { timeout: 30000 });
  const withoutToken = await bare.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.getElementById("error").textContent,
    asks: !document.getElementById("token-form").hidden,
  }));
  console.log(JSON.stringify({ state, error, scope, charts, requests, problems, withoutToken }));
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
