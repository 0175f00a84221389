// Shared plumbing for the browser tests and the benchmark: the `ichnet serve` process, Chromium
// (Debian's, driven by playwright-core; never a downloaded browser), NIfTI made and read in JS,
// and the native CLI as the reference.

import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync, gzipSync } from "node:zlib";
import { chromium } from "playwright-core";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const SAMPLE = join(ROOT, "www/samples/sample_head_ct_simulated_bleed.nii.gz");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Flags from shared/DESIGN.md: headless, no network side-channels, a fresh profile (Playwright's). */
const BASE_FLAGS = [
  "--no-sandbox",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** The native binary the tests serve with and compare against (build it first). */
export function ichnetBin() {
  if (process.env.ICHNET_BIN) return process.env.ICHNET_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
  for (const profile of ["release", "debug"]) {
    const p = join(target, profile, "ichnet");
    if (existsSync(p)) return p;
  }
  throw new Error(`no ichnet binary under ${target}/{release,debug}: run \`cargo build --release\` (or set ICHNET_BIN)`);
}

/** Fail early, with the command that fixes it, when the web build is missing. */
export function requireWebBuild() {
  const wasm = join(ROOT, "www/pkg/ichnet_bg.wasm");
  if (!existsSync(wasm)) throw new Error(`${wasm} is missing: run scripts/build-web.sh first`);
}

async function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/**
 * Start `ichnet serve` on a free port. `embedFromLocalhost` also lets http://localhost:PORT (a
 * different origin for the browser, same server) frame the app: the cross-origin embedding test.
 */
export async function startServer({ embedFromLocalhost = false } = {}) {
  const port = await freePort();
  const args = ["serve", "--port", String(port), "--dir", join(ROOT, "www"), "--weights", join(ROOT, "weights")];
  if (embedFromLocalhost) args.push("--embed-origin", `http://localhost:${port}`, "--embed-origin", `http://127.0.0.1:${port}`);
  const proc = spawn(ichnetBin(), args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  const url = await new Promise((res, rej) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:\d+\//);
      if (m) res(m[0]);
    });
    proc.once("exit", (code) => rej(new Error(`ichnet serve exited (${code}): ${stderr}`)));
  });
  // stop() resolves once the process is gone, so "the server is down" is true when it returns.
  const stop = () =>
    new Promise((res) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return res();
      proc.once("exit", () => res());
      proc.kill();
    });
  return { url, port, origin: url.slice(0, -1), stop };
}

/**
 * Chromium with a fresh profile; `webgpu` adds --enable-unsafe-webgpu (SwiftShader without a GPU).
 * ICHNET_CHROMIUM_FLAGS (space-separated) adds flags last: scripts/gpu-bench.sh puts WebGPU on a
 * real GPU's Vulkan driver through it.
 */
export async function launch({ webgpu = false } = {}) {
  const args = [...BASE_FLAGS];
  if (webgpu) args.push("--enable-unsafe-webgpu");
  args.push(...(process.env.ICHNET_CHROMIUM_FLAGS ?? "").split(/\s+/).filter(Boolean));
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

/**
 * A page that records every request and every long task (> 50 ms, as the browser defines it) on
 * the main thread; `page.longTasks()` reads the durations back.
 */
export async function recordedPage(browser, { acceptDownloads = true, serviceWorkers = "allow" } = {}) {
  const context = await browser.newContext({ acceptDownloads, serviceWorkers, viewport: { width: 1400, height: 1000 } });
  await context.addInitScript(() => {
    window.__longTasks = [];
    try {
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__longTasks.push(Math.round(e.duration));
        for (const e of list.getEntries()) (window.__longTaskAt ??= []).push([Math.round(e.startTime), Math.round(e.duration)]);
      }).observe({ type: "longtask", buffered: true });
    } catch {
      window.__longTasks = null;
    }
  });
  const requests = [];
  context.on("request", (r) => requests.push({ url: r.url(), method: r.method(), body: r.postDataBuffer() }));
  const page = await context.newPage();
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.longTasks = () => page.evaluate(() => window.__longTasks);
  // [start, duration] of each long task, and [start, end] of the viewer's heavy one-off work
  // (www/view.js, VIEWER_WORK): NiiVue loads a volume on the main thread.
  page.longTaskSpans = () => page.evaluate(() => window.__longTaskAt ?? []);
  page.viewerSpans = () => page.evaluate(() => performance.getEntriesByName("ichnet:viewer", "measure").map((m) => [m.startTime, m.startTime + m.duration]));
  return { context, page, requests, consoleLines };
}

/** Main-thread long tasks above this (ms) fail a run: the page must stay responsive. */
export const MAX_LONG_TASK_MS = 200;
/**
 * NiiVue's loading of a volume (and WebGL start) on the main thread, on software WebGL: 3.3 s
 * measured for the sample on these 2-core machines under load (its gradient texture is computed
 * on the "GPU", i.e. the CPU). A hardware GPU does this in a fraction of a second.
 */
export const MAX_VIEWER_TASK_MS = 15_000;

/**
 * The app's own main-thread tasks stayed short. NiiVue's one-off work (starting WebGL, loading a
 * volume, setting the mask) runs on the main thread and on software WebGL (SwiftShader, these
 * machines) takes seconds: it is told apart by the viewer's marks and held to its own bound.
 */
export async function assertResponsive(page) {
  const longTasks = await page.longTasks();
  assert.ok(Array.isArray(longTasks), "the browser reports long tasks");
  const spans = await page.longTaskSpans();
  const viewer = await page.viewerSpans();
  assert.ok(viewer.length >= 2, `the viewer marks its work (${viewer.length} marks)`);
  const inViewer = ([t, d]) => viewer.some(([a, b]) => t + d > a && t < b + 1);
  const app = spans.filter((s) => !inViewer(s)).map(([, d]) => d);
  const worst = Math.max(0, ...app);
  assert.ok(worst <= MAX_LONG_TASK_MS, `a main-thread task outside the viewer's loading took ${worst} ms (all: ${JSON.stringify(spans)}; viewer ${JSON.stringify(viewer)})`);
  const viewerWorst = Math.max(0, ...spans.filter(inViewer).map(([, d]) => d));
  assert.ok(viewerWorst <= MAX_VIEWER_TASK_MS, `the viewer's loading blocked the page for ${viewerWorst} ms`);
  console.log(`long tasks: app ${worst} ms at most; viewer (NiiVue, software WebGL) ${viewerWorst} ms at most`);
}

/** Wait until the app has settled after a run; returns "done", "error" or "cancelled". */
export async function waitSettled(page, timeout = 600_000) {
  await page.waitForFunction(() => ["done", "error", "cancelled"].includes(document.body.dataset.state), null, { timeout, polling: 250 });
  return page.evaluate(() => document.body.dataset.state);
}

/**
 * Give the page a file through its picker, as a user would. The bytes go through a real file:
 * Playwright hands a path to Chromium as is, whereas an in-memory buffer is rebuilt by script in
 * the page, a multi-second main-thread task that would be blamed on the app.
 */
export async function chooseFile(page, name, buffer) {
  // The page reads the file after the picker's change event, so it must outlive this call:
  // removed when the test process exits.
  const dir = mkdtempSync(join(tmpdir(), "ichnet-upload-"));
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, name);
  writeFileSync(path, Buffer.from(buffer));
  await page.setInputFiles("#file", path);
}

/**
 * One HTTP/1.1 GET of `target` sent as raw bytes over a socket: no URL parser sees it, so `/../`
 * and `%2e%2e` reach the server exactly as written (fetch and the browser normalise both away).
 * Resolves with `{ status, body: Buffer }`.
 */
export function rawGet(port, target) {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    const chunks = [];
    sock.setTimeout(10_000, () => sock.destroy(new Error(`no answer to GET ${target} within 10 s`)));
    sock.on("connect", () => sock.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`, "latin1"));
    sock.on("data", (d) => chunks.push(d));
    sock.on("error", reject);
    sock.on("end", () => {
      const all = Buffer.concat(chunks);
      const m = all.toString("latin1", 0, Math.min(all.length, 64)).match(/^HTTP\/1\.[01] (\d{3}) /);
      if (!m) return reject(new Error(`GET ${target}: no HTTP status line in the answer`));
      const split = all.indexOf("\r\n\r\n");
      resolve({ status: Number(m[1]), body: split < 0 ? Buffer.alloc(0) : all.subarray(split + 4) });
    });
  });
}

// ---- NIfTI in JS (only what the tests need) ---------------------------------------------------

const DT = { 2: ["u8", 1], 4: ["i16", 2], 16: ["f32", 4], 512: ["u16", 2] };

/** Parse a NIfTI-1 (.nii or .nii.gz) into `{ dims, pixdim, datatype, srow, data: TypedArray }`. */
export function parseNifti(buf) {
  let b = Buffer.from(buf);
  if (b[0] === 0x1f && b[1] === 0x8b) b = gunzipSync(b);
  const le = b.readInt32LE(0) === 348;
  if (!le && b.readInt32BE(0) !== 348) throw new Error("not a NIfTI-1 file");
  const i16 = (o) => (le ? b.readInt16LE(o) : b.readInt16BE(o));
  const f32 = (o) => (le ? b.readFloatLE(o) : b.readFloatBE(o));
  const dimN = i16(40);
  const dims = Array.from({ length: dimN }, (_, i) => i16(42 + 2 * i));
  const datatype = i16(70);
  const pixdim = Array.from({ length: 8 }, (_, i) => f32(76 + 4 * i));
  const voxOffset = f32(108);
  const srow = [0, 1, 2].map((r) => Array.from({ length: 4 }, (_, c) => f32(280 + 16 * r + 4 * c)));
  const qform = i16(252);
  const sform = i16(254);
  const [kind, size] = DT[datatype] ?? [];
  if (!kind) throw new Error(`datatype ${datatype} not handled by the test reader`);
  const n = dims.reduce((a, d) => a * d, 1);
  const raw = b.subarray(voxOffset, voxOffset + n * size);
  const ab = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
  const data = kind === "u8" ? new Uint8Array(ab) : kind === "i16" ? new Int16Array(ab) : kind === "u16" ? new Uint16Array(ab) : new Float32Array(ab);
  return { dims, pixdim, datatype, srow, qform, sform, data, header: b.subarray(0, 348) };
}

/** Dice between two 0/non-0 volumes of the same length. */
export function dice(a, b) {
  let inter = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] !== 0;
    const y = b[i] !== 0;
    na += x;
    nb += y;
    inter += x && y;
  }
  return na + nb === 0 ? 1 : (2 * inter) / (na + nb);
}

/** Volume in mL of the non-zero voxels of a parsed NIfTI (voxel count × |pixdim| product / 1000). */
export function maskMl(nifti) {
  let n = 0;
  for (const v of nifti.data) n += v !== 0;
  const [dx, dy, dz] = nifti.pixdim.slice(1, 4).map(Math.abs);
  return (n * dx * dy * dz) / 1000;
}

/**
 * A 4-D copy of a 3-D NIfTI-1 file: the volume repeated `nt` times along t (dim[0] = 4). The
 * reader must use the first volume, so the result must equal the 3-D file's.
 */
export function repeatAlongT(buf, nt) {
  let b = Buffer.from(buf);
  if (b[0] === 0x1f && b[1] === 0x8b) b = gunzipSync(b);
  if (b.readInt32LE(0) !== 348) throw new Error("the 4-D helper handles little-endian NIfTI-1 only");
  const voxOffset = b.readFloatLE(108);
  const header = Buffer.from(b.subarray(0, voxOffset));
  const data = b.subarray(voxOffset);
  header.writeInt16LE(4, 40);
  header.writeInt16LE(nt, 48); // dim[4]: dim[i] sits at byte 40 + 2i
  return gzipSync(Buffer.concat([header, ...Array.from({ length: nt }, () => data)]), { level: 1 });
}

/**
 * A copy of an int16 NIfTI-1 file with every value below `floor` raised to it: with the floor
 * above −200 HU there is no air any more, so the reader takes the values for "not HU", while the
 * brain (0–100 HU) is still there to find.
 */
export function clampBelow(buf, floor) {
  let b = Buffer.from(buf);
  if (b[0] === 0x1f && b[1] === 0x8b) b = gunzipSync(b);
  if (b.readInt32LE(0) !== 348 || b.readInt16LE(70) !== 4) throw new Error("the clamp helper handles little-endian int16 NIfTI-1 only");
  const out = Buffer.from(b);
  const slope = b.readFloatLE(112) || 1;
  const inter = b.readFloatLE(116);
  const raw = Math.ceil((floor - inter) / slope);
  for (let o = b.readFloatLE(108); o + 1 < out.length; o += 2) if (out.readInt16LE(o) < raw) out.writeInt16LE(raw, o);
  return gzipSync(out, { level: 1 });
}

/**
 * A NIfTI-1 `.nii` (optionally gzipped) with RAS axes: `dims` as [nx, ny, nz(, nt)], int16 voxels
 * from `voxel(x, y, z, t)`. Used for inputs no fixture has (4-D, too large, the benchmark scan).
 */
export function makeNifti({ dims, pixdim = [1, 1, 1], voxel = () => 0, gzip = true, headerOnlyDims = null }) {
  const h = Buffer.alloc(352);
  h.writeInt32LE(348, 0);
  const d = headerOnlyDims ?? dims;
  h.writeInt16LE(d.length, 40);
  d.forEach((v, i) => h.writeInt16LE(v, 42 + 2 * i));
  for (let i = d.length; i < 7; i++) h.writeInt16LE(1, 42 + 2 * i);
  h.writeInt16LE(4, 70); // int16
  h.writeInt16LE(16, 72);
  h.writeFloatLE(1, 76);
  pixdim.forEach((v, i) => h.writeFloatLE(v, 80 + 4 * i));
  h.writeFloatLE(352, 108);
  h.writeFloatLE(1, 112); // scl_slope
  h.writeUInt8(10, 123); // xyzt_units: mm, s
  h.writeInt16LE(1, 254); // sform_code scanner
  h.writeFloatLE(pixdim[0], 280);
  h.writeFloatLE(pixdim[1], 300);
  h.writeFloatLE(pixdim[2], 320);
  h.write("n+1\0", 344, "latin1");
  const [nx, ny, nz, nt = 1] = dims;
  const body = Buffer.alloc(headerOnlyDims ? 0 : nx * ny * nz * nt * 2);
  if (!headerOnlyDims) {
    let o = 0;
    for (let t = 0; t < nt; t++)
      for (let z = 0; z < nz; z++)
        for (let y = 0; y < ny; y++)
          for (let x = 0; x < nx; x++, o += 2) body.writeInt16LE(voxel(x, y, z, t), o);
  }
  const file = Buffer.concat([h, body]);
  return gzip ? gzipSync(file, { level: 1 }) : file;
}

/**
 * A crude head: skull ring (~1000 HU), brain (~35 HU), CSF, and a 70 HU blob, on a 512×512 grid
 * of 0.45 mm pixels and `nz` 5 mm slices. Enough for the pipeline to find a brain and do its work
 * (the benchmark measures time, not accuracy).
 */
export function phantomHead({ nx = 512, ny = 512, nz = 32, pixel = 0.45, slice = 5, nt = 1 } = {}) {
  const cx = nx / 2;
  const cy = ny / 2;
  const voxel = (x, y, z) => {
    const zc = (z - nz / 2) / (nz / 2);
    const s = Math.sqrt(Math.max(0, 1 - zc * zc * 0.8));
    const r = Math.hypot((x - cx) / (0.36 * nx * s + 1), (y - cy) / (0.44 * ny * s + 1));
    if (r > 1.08) return -1000;
    if (r > 1) return 1000;
    if (Math.hypot(x - cx * 1.2, y - cy * 0.9, (z - nz / 2) * (slice / pixel) * 0.3) < 40) return 70;
    if (Math.hypot(x - cx, y - cy) < 12) return 8;
    return 35 + ((x * 7 + y * 13 + z * 17) % 5) - 2;
  };
  return makeNifti({ dims: nt > 1 ? [nx, ny, nz, nt] : [nx, ny, nz], pixdim: [pixel, pixel, slice], voxel });
}

/**
 * Run the native CLI's segmentation of `input`; returns `{ mask: Buffer, json }`. It is given the
 * weights file the page fetches (not the ones compiled into the binary), so a retrained
 * weights file cannot make the two disagree.
 */
export function nativeSegment(input, extraArgs = []) {
  const dir = mkdtempSync(join(tmpdir(), "ichnet-native-"));
  try {
    const out = join(dir, "mask.nii.gz");
    const weights = join(ROOT, "weights/ichnet.bpk");
    const stdout = execFileSync(ichnetBin(), ["segment", input, "-o", out, "--json", "--weights", weights, ...extraArgs], { encoding: "utf8", maxBuffer: 1 << 24 });
    return { mask: readFileSync(out), json: JSON.parse(stdout) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Baseline/follow-up pairs with known growth, made by the native CLI (`ichnet synth --pairs`,
 * deterministic for a seed) in a temporary folder removed when the process exits. Returns
 * `{ dir, pairs: [{ name, baseline, followup, growth_ml, expansion, ... }] }` (paths, pairs.tsv).
 */
export function synthPairs({ n, seed, maxMatrix = 128, maxSlices = 32 }) {
  const dir = mkdtempSync(join(tmpdir(), "ichnet-pairs-"));
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  execFileSync(ichnetBin(), ["synth", "--pairs", "--anatomy", join(ROOT, "assets/anatomy"), "--out", dir, "--n", String(n), "--seed", String(seed), "--max-matrix", String(maxMatrix), "--max-slices", String(maxSlices)], { stdio: "pipe" });
  const [head, ...rows] = readFileSync(join(dir, "pairs.tsv"), "utf8").trim().split("\n").map((l) => l.split("\t"));
  const pairs = rows.map((r) => {
    const p = Object.fromEntries(head.map((h, i) => [h, /^-?[\d.]+$/.test(r[i]) ? Number(r[i]) : r[i]]));
    return { ...p, baseline: join(dir, "baseline", `${p.name}.nii.gz`), followup: join(dir, "followup", `${p.name}.nii.gz`) };
  });
  return { dir, pairs };
}

/**
 * The native CLI's comparison of two scans (`ichnet compare --json -o`) with the page's weights
 * file; returns `{ json, overlay: Buffer (followup_mask_in_baseline.nii.gz) }`.
 */
export function nativeCompare(baseline, followup, extraArgs = []) {
  const dir = mkdtempSync(join(tmpdir(), "ichnet-compare-"));
  try {
    const weights = join(ROOT, "weights/ichnet.bpk");
    const stdout = execFileSync(ichnetBin(), ["compare", baseline, followup, "-o", dir, "--json", "--weights", weights, ...extraArgs], { encoding: "utf8", maxBuffer: 1 << 26 });
    return { json: JSON.parse(stdout), overlay: readFileSync(join(dir, "followup_mask_in_baseline.nii.gz")) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Where the rigid transform of a comparison report (`registration.transform`: baseline world →
 * follow-up world, `y = R (x − c) + c + t`, `R = Rz · Ry · Rx`) sends `x`, and back: computed
 * here from the angles, independently of the page's matrices.
 */
export function rigidMaps({ angles_deg, translation_mm: t, centre_mm: c }) {
  const [a, b, g] = angles_deg.map((d) => (d * Math.PI) / 180);
  const rx = [[1, 0, 0], [0, Math.cos(a), -Math.sin(a)], [0, Math.sin(a), Math.cos(a)]];
  const ry = [[Math.cos(b), 0, Math.sin(b)], [0, 1, 0], [-Math.sin(b), 0, Math.cos(b)]];
  const rz = [[Math.cos(g), -Math.sin(g), 0], [Math.sin(g), Math.cos(g), 0], [0, 0, 1]];
  const mul = (p, q) => p.map((row) => [0, 1, 2].map((j) => row.reduce((s, v, k) => s + v * q[k][j], 0)));
  const r = mul(rz, mul(ry, rx));
  return {
    forward: (x) => [0, 1, 2].map((i) => r[i].reduce((s, v, k) => s + v * (x[k] - c[k]), 0) + c[i] + t[i]),
    inverse: (y) => [0, 1, 2].map((i) => [0, 1, 2].reduce((s, k) => s + r[k][i] * (y[k] - c[k] - t[k]), 0) + c[i]),
  };
}

/** Pick the backend in the page's Options panel (opened first, as a user would). */
export async function chooseBackend(page, backend) {
  await page.evaluate(() => {
    document.querySelector("details.options").open = true;
  });
  await page.selectOption("#opt-backend", backend);
}
