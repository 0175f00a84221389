// Benchmark (reported, never asserted): wasm and weights size, time to first result in headless
// Chromium for the sample and a 512×512×32 scan, on the CPU path and on SwiftShader WebGPU, and
// the wasm memory at the end of each run (wasm memory never shrinks: that is the peak).
//
// Run from the repo root after scripts/build-web.sh and a release build of the CLI:
//   node tests/browser/bench.mjs            (all)      node tests/browser/bench.mjs cpu   (CPU only)

import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { ROOT, SAMPLE, chooseBackend, chooseFile, launch, phantomHead, recordedPage, requireWebBuild, startServer, waitSettled } from "./helpers.mjs";

requireWebBuild();
const only = process.argv[2];
const wasmPath = join(ROOT, "www/pkg/ichnet_bg.wasm");
const wasmBytes = statSync(wasmPath).size;
const wasmGz = gzipSync(readFileSync(wasmPath), { level: 9 }).length;
const weightsBytes = statSync(join(ROOT, "weights/ichnet.bpk")).size;
const mb = (n) => (n / 1e6).toFixed(2);
console.log(`wasm (after wasm-opt): ${mb(wasmBytes)} MB (${mb(wasmGz)} MB gzipped); weights: ${mb(weightsBytes)} MB`);

const scans = [
  ["sample", readFileSync(SAMPLE)],
  ["phantom 512x512x32", phantomHead({ nx: 512, ny: 512, nz: 32 })],
];
const modes = [
  ["cpu", { webgpu: false, backend: "cpu" }],
  ["webgpu-swiftshader", { webgpu: true, backend: "webgpu" }],
].filter(([m]) => !only || m.startsWith(only));

const server = await startServer();
try {
  for (const [mode, { webgpu, backend }] of modes) {
    for (const [name, bytes] of scans) {
      const browser = await launch({ webgpu });
      try {
        const { page } = await recordedPage(browser);
        await page.goto(server.url);
        await chooseBackend(page, backend);
        const t0 = Date.now();
        await chooseFile(page, `${name.replace(/\W+/g, "_")}.nii.gz`, bytes);
        const state = await waitSettled(page, 1_800_000);
        const wall = Date.now() - t0;
        if (state !== "done") {
          console.log(`${mode} | ${name}: ${state}: ${await page.textContent("#error")}`);
          continue;
        }
        const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#dl-report")]);
        const report = JSON.parse(readFileSync(await dl.path(), "utf8"));
        const longest = Math.max(0, ...((await page.longTasks()) ?? []));
        const t = Object.fromEntries(report.timings.map(({ stage, ms }) => [stage, ms]));
        console.log(
          `${mode} | ${name}: first result ${(wall / 1000).toFixed(1)} s ` +
            `(read ${t.read}, brain ${t.brain}, engine ${t.engine}, network ${t.network}, crf ${t.crf}, write ${t.write} ms); ` +
            `backend ${report.backend}; peak wasm memory ${mb(report.wasm_memory_bytes ?? 0)} MB; ` +
            `longest main-thread task ${longest} ms; ${report.volume_ml?.toFixed(1)} mL`,
        );
      } finally {
        await browser.close();
      }
    }
  }
} finally {
  server.stop();
}
