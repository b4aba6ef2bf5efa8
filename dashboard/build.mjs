// Builds the dashboard into dist/: one bundled, minified script (Chart.js and the
// matrix plugin included, so the page loads nothing from other hosts) beside the
// page and its stylesheet. The sink's read API serves dist/ at /dashboard/.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const out = new URL("./dist/", import.meta.url);
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: [new URL("./src/main.js", import.meta.url).pathname],
  outfile: new URL("dashboard.js", out).pathname,
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020"],
  legalComments: "linked", // Chart.js's MIT notice goes to dashboard.js.LEGAL.txt
  logLevel: "warning",
});
for (const name of ["index.html", "dashboard.css"]) {
  await copyFile(new URL(`./src/${name}`, import.meta.url), new URL(name, out));
}
