// Benchmark (reported, never asserted): wasm and weights size, then for the bundled sample and a
// 512×512×32 scan, the page's time to a result in headless Chromium (through the ES module API:
// the same worker, stages and report as the page) next to the native `ichnet segment` of the same
// file in the same run, and their ratio. The page runs on the CPU path with one worker and with
// as many as it picks itself (parallel slice batches), and on SwiftShader WebGPU when asked.
//
// Run from the repo root after scripts/build-web.sh and a release build of the CLI
// (ICHNET_BIN picks another binary):
//   node tests/browser/bench.mjs            (CPU modes)     node tests/browser/bench.mjs webgpu
//   BENCH_SCANS=sample node tests/browser/bench.mjs          (the sample only)
//   BENCH_SCANS=synth node tests/browser/bench.mjs webgpu    (SwiftShader on the 128×128×16 fixture)

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { ROOT, SAMPLE, ichnetBin, launch, phantomHead, recordedPage, requireWebBuild, startServer } from "./helpers.mjs";

requireWebBuild();
const only = process.argv[2];
const wasmPath = join(ROOT, "www/pkg/ichnet_bg.wasm");
const wasmBytes = statSync(wasmPath).size;
const wasmGz = gzipSync(readFileSync(wasmPath), { level: 9 }).length;
const weights = join(ROOT, "weights/ichnet.bpk");
const mb = (n) => (n / 1e6).toFixed(2);
console.log(`wasm (after wasm-opt): ${wasmBytes} bytes = ${mb(wasmBytes)} MB (${mb(wasmGz)} MB gzipped); weights: ${mb(statSync(weights).size)} MB`);
console.log(`native binary: ${ichnetBin()}`);

const dir = mkdtempSync(join(tmpdir(), "ichnet-bench-"));
process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
const allScans = [
  ["sample", SAMPLE],
  ["512x512x32", join(dir, "phantom_512x512x32.nii.gz")],
  // Only when named in BENCH_SCANS: the small fixture SwiftShader finishes in minutes.
  ["synth", join(ROOT, "tests/fixtures/synth/images/synth_00000.nii.gz")],
];
writeFileSync(allScans[1][1], phantomHead({ nx: 512, ny: 512, nz: 32 }));
const wanted = process.env.BENCH_SCANS?.split(",");
const scans = allScans.filter(([name]) => (wanted ? wanted.includes(name) : name !== "synth"));

// "prepared": `prepare()` (engine, helpers, a dummy batch each) is awaited before the clock
// starts, as the app does while the user is still choosing a file; the others time a cold start.
const modes = [
  ["cpu, 1 worker", { webgpu: false, options: { backend: "cpu", workers: 1 } }],
  ["cpu, parallel", { webgpu: false, options: { backend: "cpu" } }],
  ["cpu, parallel, prepared", { webgpu: false, prepared: true, options: { backend: "cpu" } }],
  ["webgpu-swiftshader", { webgpu: true, options: { backend: "webgpu" } }],
].filter(([m]) => (only ? m.startsWith(only) : !m.startsWith("webgpu")));

/** Native `ichnet segment` of `path`: wall seconds (process start to exit) and its report. */
function native(path) {
  const out = join(dir, "native_mask.nii.gz");
  const t0 = process.hrtime.bigint();
  const stdout = execFileSync(ichnetBin(), ["segment", path, "-o", out, "--json", "--weights", weights], { encoding: "utf8", maxBuffer: 1 << 24 });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { s, report: JSON.parse(stdout) };
}

/** The page's ES module on `bytes` in a fresh browser: seconds from the call to the result, and the report. */
async function page(server, bytes, { webgpu, prepared = false, options }) {
  const browser = await launch({ webgpu });
  try {
    // No service worker: Playwright's routing does not see requests a service worker answers.
    const { page: p } = await recordedPage(browser, { serviceWorkers: "block" });
    await p.route("**/bench-scan.nii.gz", (route) => route.fulfill({ body: bytes, contentType: "application/gzip" }));
    // An empty page of the same origin: the app's page would load an engine of its own at once.
    await p.route("**/bench.html", (route) => route.fulfill({ body: "<!doctype html><title>bench</title>", contentType: "text/html" }));
    await p.goto(`${server.url}bench.html`);
    return await p.evaluate(async ([opts, prep]) => {
      const { prepare, segment } = await import("/embed.js");
      const scan = await (await fetch("/bench-scan.nii.gz")).arrayBuffer();
      let prepareS = null;
      if (prep) {
        const t = performance.now();
        await prepare(opts);
        prepareS = (performance.now() - t) / 1000;
      }
      const t0 = performance.now();
      const { report } = await segment(scan, opts);
      return { s: (performance.now() - t0) / 1000, prepareS, report };
    }, [options, prepared]);
  } finally {
    await browser.close();
  }
}

const ms = (timings) => (timings ?? []).map(({ stage, ms: v }) => `${stage} ${Math.round(v)}`).join(", ");
const server = await startServer();
try {
  for (const [name, path] of scans) {
    const bytes = readFileSync(path);
    for (const [mode, cfg] of modes) {
      // Native right before each page run, so each ratio compares two runs minutes apart at most.
      const n = native(path);
      let r;
      try {
        r = await page(server, bytes, cfg);
      } catch (e) {
        console.log(`${name} | ${mode}: failed: ${e.message}`);
        continue;
      }
      const rep = r.report;
      console.log(
        `${name} | ${mode}: ${r.prepareS === null ? "" : `prepare ${r.prepareS.toFixed(1)} s, then `}page ${r.s.toFixed(1)} s [${ms(rep.browser_timings)}; ${ms(rep.timings)} ms] ` +
          `${rep.workers} worker(s), backend ${rep.backend}${rep.known_answer ? ` (known-answer max diff ${rep.known_answer.max_diff})` : ""}, peak wasm memory ${mb(rep.wasm_memory_bytes ?? 0)} MB${rep.helper_wasm_memory_bytes ? ` (helper ${mb(rep.helper_wasm_memory_bytes)} MB)` : ""}, ${rep.volume_ml?.toFixed(2)} mL | ` +
          `native segment ${n.s.toFixed(1)} s [${ms(n.report.timings)} ms], ${n.report.volume_ml?.toFixed(2)} mL | ` +
          `page/native ${(r.s / n.s).toFixed(2)}×`,
      );
    }
  }
} finally {
  await server.stop();
}
