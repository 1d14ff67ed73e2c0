// Builds the tracker (dist/tracker.js, copied into the Python package) and the Worker
// (dist/worker.js, with the tracker embedded), plus the test entry (dist/test-worker.js).
// Usage: node build.mjs [--package]
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
mkdirSync(dist, { recursive: true });

await build({
  entryPoints: [join(here, "tracker/tracker.ts")],
  outfile: join(dist, "tracker.js"),
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2017",
  legalComments: "none",
  logLevel: "warning",
});
const tracker = readFileSync(join(dist, "tracker.js"), "utf8");
// `--package` refreshes the copy shipped in the Python package; without it the copy is left
// alone, so the tests can tell when it is stale.
if (process.argv.includes("--package")) {
  copyFileSync(join(dist, "tracker.js"), join(here, "..", "src", "edgemetrics", "static", "tracker.js"));
}

const common = {
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "neutral",
  define: { __TRACKER_JS__: JSON.stringify(tracker) },
  logLevel: "warning",
};
await build({ ...common, entryPoints: [join(here, "src/index.ts")], outfile: join(dist, "worker.js") });
await build({ ...common, entryPoints: [join(here, "test/entry.ts")], outfile: join(dist, "test-worker.js") });
console.log(`tracker.js: ${tracker.length} bytes, ${gzipSync(tracker, { level: 9 }).length} bytes gzipped`);
