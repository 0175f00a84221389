// The worker owns the wasm module and does all the heavy work (reading, brain mask, network, CRF,
// writing), so the page's main thread only draws. One job at a time; the page cancels a job by
// terminating this worker (its helpers go with it) and starting a fresh one, which is the only way
// to stop wasm mid-call.
//
// The core owns the sequence: `job.stages()` names the stages (the CLI report's names) and this
// file runs them in that order, timing each with the browser's clock. The network stage runs
// batch by batch; on the CPU its batches are shared with helper workers (this same file, one
// module instance each: wasm has no threads on stable Rust, several workers need none).
//
// Everything that crosses to the page is either small JSON or a transferred ArrayBuffer.

import init, * as core from "./pkg/ichnet.js";
import { Backend, FromWorker, Scan, Stage, ToWorker } from "./protocol.js";

const WEIGHTS_URL = new URL("weights/ichnet.bpk", import.meta.url);
const WORKER_URL = new URL("worker.js", import.meta.url);

/**
 * Wasm memory one helper module instance may reach, MiB: the peaks measured were 214 MB for the
 * sample and 297 MB for a 512×512×32 scan (tests/browser/bench.mjs, `helper_wasm_memory_bytes`).
 * Helpers are capped so that all module instances together stay within a quarter of the
 * device's memory.
 */
const MODULE_MIB = 320;
/** Beyond this many workers the network batches of one scan run out before the workers do. */
const MAX_WORKERS = 8;

/** The wasm module, initialised once per worker, and its exports (for the memory figure). */
let ready = null;
let wasm = null;
/** Weights bytes, fetched once per worker (the service worker / HTTP cache makes refetches cheap). */
let weights = null;
/** Engines by backend, created on first use: a WebGPU device may be initialised only once. */
const engines = new Map();
/** Why WebGPU was not used, once we know (shown in the report). */
let gpuRefusal = null;
/** Helper workers for the CPU network, created on first use and kept for later scans. */
let helpers = null;
/** Largest wasm memory a helper reported (its peak: wasm memory never shrinks). */
let helperMemory = 0;
/**
 * Results under review, by key (a job id; `ID/baseline` and `ID/followup` for a comparison's
 * scans): `{ review: core.Review (the scan, its brain and the model's mask), report, maskNifti,
 * ms }`. The reader's edits are measured against them until the next job replaces them; a
 * comparison's "add follow-up" reuses one as its baseline.
 */
const results = new Map();

function post(msg, transfer = []) {
  self.postMessage(msg, transfer);
}

/**
 * The compiled module, once per worker tree: a helper is handed its parent's `WebAssembly.Module`
 * (`ToWorker.WARM`) instead of compiling the 12 MB module again. Browsers share a module's
 * compiled code between the workers it is posted to, so a helper also runs the optimised code
 * its parent's batches have already earned, where it used to start from the baseline compiler's
 * (its first batch took 3–4× a warm one: on 2 cores the sample's network stage was over before
 * a helper caught up, and two workers were barely faster than one).
 */
let compiled = null;
function compiledModule() {
  compiled ??= (async () => {
    const url = new URL("pkg/ichnet_bg.wasm", import.meta.url);
    try {
      return await WebAssembly.compileStreaming(fetch(url));
    } catch {
      // A server that does not say application/wasm: compile from the bytes.
      const res = await fetch(url);
      if (!res.ok) throw new Error(`the engine could not be loaded (${url.pathname}: HTTP ${res.status})`);
      return WebAssembly.compile(await res.arrayBuffer());
    }
  })();
  return compiled;
}

async function loadCore(module = null) {
  if (!ready) {
    if (module) compiled = Promise.resolve(module);
    ready = compiledModule()
      .then((m) => init({ module_or_path: m }))
      .then((exports) => {
        wasm = exports;
        core.start();
      });
  }
  return ready;
}

async function loadWeights() {
  if (!weights) {
    const res = await fetch(WEIGHTS_URL);
    if (!res.ok) {
      throw new Error(`the network weights could not be loaded (${WEIGHTS_URL.pathname}: HTTP ${res.status})`);
    }
    weights = new Uint8Array(await res.arrayBuffer());
  }
  return weights;
}

/**
 * Decide whether WebGPU is worth using, before touching the wasm side: a null adapter (no
 * WebGPU, or the flag is off) or a software one (`isFallbackAdapter`, e.g. SwiftShader) is
 * slower than the CPU backend, so "auto" skips it; "webgpu" insists (used to test the GPU path).
 */
async function probeGpu(choice) {
  if (choice === Backend.CPU) return { use: false, why: "the CPU backend was requested" };
  if (!self.navigator.gpu) return { use: false, why: "this browser has no WebGPU" };
  let adapter = null;
  try {
    adapter = await self.navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    return { use: false, why: `WebGPU adapter request failed: ${e.message}` };
  }
  if (!adapter) return { use: false, why: "no WebGPU adapter is available" };
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "unnamed adapter";
  const software = info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false;
  if (software && choice !== Backend.GPU) {
    return { use: false, why: `the only WebGPU adapter (${name}) is a software fallback, slower than the CPU backend` };
  }
  return { use: true, name: software ? `${name} (software)` : name };
}

/**
 * The engine for a backend choice, made once: concurrent callers (`PREPARE` still loading when
 * the first scan's network stage arrives) share one promise, so one engine is made.
 */
function engineFor(choice) {
  if (!engines.has(choice)) {
    const made = makeEngine(choice);
    engines.set(choice, made);
    made.catch(() => engines.get(choice) === made && engines.delete(choice));
  }
  return engines.get(choice);
}

async function makeEngine(choice) {
  const bytes = await loadWeights();
  let engine = null;
  let label = "CPU (flex)";
  const probe = gpuRefusal && choice !== Backend.GPU ? { use: false, why: gpuRefusal } : await probeGpu(choice);
  if (probe.use) {
    try {
      // Includes the known-answer check (GPU against CPU on a fixed input): a GPU that computes
      // wrong numbers is refused here, with the sentence saying by how much.
      engine = await core.Engine.webgpu(bytes);
      label = `WebGPU: ${probe.name}`;
    } catch (e) {
      gpuRefusal = `WebGPU could not be used (${e.message})`;
      if (choice === Backend.GPU) throw new Error(gpuRefusal);
    }
  } else {
    gpuRefusal = probe.why;
    if (choice === Backend.GPU) throw new Error(`WebGPU was requested but ${probe.why}`);
  }
  if (!engine) engine = core.Engine.cpu(bytes);
  return { engine, label, note: engine.isGpu() ? null : gpuRefusal, warmed: new Set() };
}

/**
 * A batch the shape of a typical scan's (the pipeline's 4 slices of an adult brain's box on the
 * network's 1 mm grid, as the sample's 196×148), for warming an engine before any scan: the
 * first batch through a fresh module instance took 1.5–2.7× a warm one (code still in the
 * browser's baseline compiler, wasm memory still growing).
 */
const WARM_BATCH = [4, 196, 148];

/**
 * One dummy batch through `entry`'s CPU engine, once: every caller gets the same promise (no-op
 * on WebGPU, which warms on the scan's shape).
 */
function warmCpu(entry) {
  if (entry.engine.isGpu()) return Promise.resolve();
  const [n, h, w] = WARM_BATCH;
  entry.cpuWarmup ??= entry.engine.warmup([n, entry.engine.inputChannels(), h, w]);
  return entry.cpuWarmup;
}

/**
 * `PREPARE`: everything a first scan would otherwise wait for, done while the user is still
 * choosing a file: the module, the weights and the engine (WebGPU's known-answer check
 * included), and on the CPU path the helper workers and one dummy batch through every module
 * instance. Answered by `PREPARED` with the backend and the number of instances.
 */
async function prepare({ req, options = {} }) {
  const { backend = Backend.AUTO, workers: maxWorkers = MAX_WORKERS } = options;
  await loadCore();
  const entry = await engineFor(backend);
  let workers = 1;
  if (!entry.engine.isGpu()) {
    workers = workerCount(MAX_WORKERS, maxWorkers);
    await Promise.all([warmCpu(entry), ...helpersFor(workers).map((h) => h.ready)]);
  }
  post({ type: FromWorker.PREPARED, req, backend: entry.label, workers });
}

/** How many module instances may run the network at once: cores, capped by memory and batches. */
function workerCount(batches, cap = MAX_WORKERS) {
  const cores = self.navigator.hardwareConcurrency || 1;
  // navigator.deviceMemory (GiB, Chromium; rounded down and capped at 8) is absent elsewhere:
  // then assume 4 GiB, which still allows 3 instances.
  const gib = self.navigator.deviceMemory ?? 4;
  const byMemory = Math.floor((gib * 1024) / 4 / MODULE_MIB);
  return Math.max(1, Math.min(cores, byMemory, MAX_WORKERS, cap, batches));
}

/**
 * A helper worker with a promise-per-batch interface; errors reject that batch. It is told to
 * load its module and engine at once: compiling the module and loading the weights took longer
 * than the sample's whole network stage on a 2-core machine, so a helper started at the
 * network stage ran almost none of the batches.
 */
function startHelper() {
  const w = new Worker(WORKER_URL, { type: "module" });
  const pending = new Map();
  let next = 1;
  w.addEventListener("message", (event) => {
    const msg = event.data;
    const p = pending.get(msg?.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.type === FromWorker.BATCH) {
      helperMemory = Math.max(helperMemory, msg.memory ?? 0);
      p.resolve(msg.probs);
    } else if (msg.type === FromWorker.PREPARED) p.resolve();
    else p.reject(new Error(msg.message));
  });
  w.addEventListener("error", (event) => {
    for (const p of pending.values()) p.reject(new Error(`a network helper worker failed: ${event.message ?? "worker error"}`));
    pending.clear();
  });
  // Batches are posted after the module, so a helper never compiles its own; once it is posted,
  // at once (a promise callback would wait for this worker's own next batch to end).
  let moduleSent = false;
  const warmId = next++;
  const ready = new Promise((resolve, reject) => pending.set(warmId, { resolve, reject }));
  // Only `PREPARE` waits for it; a failed warm-up fails the helper's batches too, and says so there.
  ready.catch(() => {});
  const warmed = compiledModule().then(
    (module) => w.postMessage({ type: ToWorker.WARM, id: warmId, module }),
    () => w.postMessage({ type: ToWorker.WARM, id: warmId }),
  ).then(() => {
    moduleSent = true;
  });
  return {
    /** Resolves once the helper's engine is loaded and has run its dummy batch. */
    ready,
    run(x, shape) {
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        const send = () => w.postMessage({ type: ToWorker.BATCH, id, x, shape }, [x.buffer]);
        if (moduleSent) send();
        else warmed.then(send);
      });
    },
  };
}

/** The helpers for `n` module instances in all (this worker is one), started when missing. */
function helpersFor(n) {
  helpers ??= [];
  while (helpers.length < n - 1) helpers.push(startHelper());
  return helpers.slice(0, n - 1);
}

/** Lets queued messages (a helper's finished batch) run between two of our own long batches. */
const yieldToEvents = () => new Promise((r) => setTimeout(r, 0));

/**
 * The network stage on this worker's engine, its batches shared with helpers when the engine is
 * the CPU. Resolves with the number of module instances that ran batches.
 */
async function runNetwork(job, entry, maxWorkers, onBatch) {
  const total = job.batchCount();
  let next = 0;
  let done = 0;
  const loop = async (runOne) => {
    while (next < total) {
      const i = next++;
      await runOne(i);
      onBatch(++done, total);
    }
  };
  const own = async (i) => {
    await job.runBatch(entry.engine, i);
    await yieldToEvents();
  };
  if (entry.engine.isGpu()) {
    await loop(own);
    return 1;
  }
  const n = workerCount(total, maxWorkers);
  const mine = helpersFor(n);
  const viaHelper = (h) => async (i) => {
    const channels = entry.engine.inputChannels();
    const probs = await h.run(job.batchInput(i, channels), Array.from(job.batchShape(i, channels)));
    job.acceptBatch(i, probs);
  };
  // Helpers are handed their first batch before this worker starts its own (which blocks it),
  // and always hold two: a helper's finished batch is only seen here between two of our own, so
  // with one batch in hand it sat idle for up to a batch's time after each.
  await Promise.all([...mine.flatMap((h) => [loop(viaHelper(h)), loop(viaHelper(h))]), loop(own)]);
  return n;
}

/** Milliseconds since `t0`, rounded for the report. */
const since = (t0) => Math.round(performance.now() - t0);

/**
 * When the files hold several DICOM series and none was chosen: their list (protocol.js
 * `ERROR.series`), so the page can offer the choice; otherwise null. Only asked after the read
 * failed, so a single series costs nothing more.
 */
function seriesChoice(files, series) {
  if (series || files.length === 0) return null;
  try {
    const list = JSON.parse(core.listSeries(files.map((f) => f.name), files.map((f) => new Uint8Array(f.bytes))));
    return list.length > 1 ? list : null;
  } catch {
    return null;
  }
}

/**
 * One scan's job, before any stage: the options split into the page's and the core's, and the
 * job made from the files (bad options are refused here, before any work, with the core's
 * sentence). What the user gave is routed by content as `ichnet segment DIR_OR_FILES…` does: one
 * NIfTI, a .hdr with its .img, the files of a DICOM folder, or a .zip of a study. The caller
 * frees `scan.job` (a worker serves many scans).
 */
function openScan(files, options, extra = {}) {
  const { backend = Backend.AUTO, workers: maxWorkers = MAX_WORKERS, series = null, ...coreOptions } = options;
  const job = core.Job.files(files.map((f) => f.name), files.map((f) => new Uint8Array(f.bytes)), series ?? undefined, JSON.stringify(coreOptions));
  return {
    job, files, series, backend, maxWorkers, extra,
    stages: job.stages(), next: 0, timings: [], browserTimings: [], entry: null, workers: 1, volumePosted: false, ms: 0,
  };
}

/**
 * The scan's stages up to (not including) `until`, in the core's order, each timed by the
 * browser's clock; `progress(stage, index, count, done, total)`. The scan goes to the page once
 * read (`VOLUME`, with `scan.extra`'s fields).
 */
async function runStages(scan, progress, until = scan.stages.length) {
  const { job, stages, timings, browserTimings, backend, maxWorkers } = scan;
  const t0 = performance.now();
  // The CPU path will share batches with helpers: start them (and their engines) now, so they
  // are ready by the network stage. Only where the CPU is known to run the network: on a GPU
  // they would cost memory for nothing.
  if (scan.next === 0 && (backend === Backend.CPU || gpuRefusal)) {
    helpersFor(workerCount(MAX_WORKERS, maxWorkers));
  }
  try {
    for (; scan.next < until; scan.next++) {
      const index = scan.next;
      const stage = stages[index];
      progress(stage, index, stages.length);
      if (core.Job.isBatched(stage)) {
        // The engine (weights, WebGPU device and its known-answer check) is loaded on first use.
        let t = performance.now();
        let entry = await engineFor(backend);
        browserTimings.push({ stage: "engine", ms: since(t) });
        const shape = Array.from(job.batchShape(0, entry.engine.inputChannels()));
        const key = shape.join("x");
        if (entry.engine.isGpu() && !entry.warmed.has(key)) {
          // WebGPU compiles its pipelines on first use: do it on a dummy batch of this scan's
          // shape, so the first run and the warm network are timed apart.
          t = performance.now();
          await entry.engine.warmup(shape);
          browserTimings.push({ stage: "warmup", ms: since(t) });
          entry.warmed.add(key);
        }
        t = performance.now();
        try {
          scan.workers = await runNetwork(job, entry, maxWorkers, (done, total) => progress(stage, index, stages.length, done, total));
        } catch (e) {
          // A lost GPU device (driver reset, tab backgrounded on some systems) must not lose the
          // scan: redo the network on the CPU, and say so in the report.
          if (!entry.engine.isGpu() || backend === Backend.GPU || e instanceof WebAssembly.RuntimeError) throw e;
          gpuRefusal = `the WebGPU device failed during the network (${e.message}); finished on the CPU`;
          engines.delete(Backend.AUTO);
          entry = { ...(await engineFor(Backend.CPU)), note: gpuRefusal };
          scan.workers = await runNetwork(job, entry, maxWorkers, (done, total) => progress(stage, index, stages.length, done, total));
        }
        scan.entry = entry;
        timings.push({ stage, ms: since(t) });
      } else {
        const t = performance.now();
        try {
          job.run(stage);
        } catch (e) {
          const list = index === 0 ? seriesChoice(scan.files, scan.series) : null;
          if (list) throw Object.assign(new Error(e.message), { series: list });
          throw e;
        }
        timings.push({ stage, ms: since(t) });
      }
      if (!scan.volumePosted && job.hasScan()) {
        postVolume(job, scan.extra);
        scan.volumePosted = true;
      }
    }
  } finally {
    scan.ms += performance.now() - t0;
  }
}

/**
 * The rest of the scan's stages, then its result, its review kept open for the reader's edits
 * under `key`: `{ report, review, mask, maskNifti, maskSeg, ms }`.
 */
async function finishScan(key, scan, progress) {
  await runStages(scan, progress);
  const t0 = performance.now();
  const { job, entry, workers } = scan;
  // The CLI's report (`ichnet segment --json`), its stage timings measured by the browser's
  // clock (wasm has none), plus what only the browser knows.
  const out = job.takeOutput();
  const report = JSON.parse(out.reportJson());
  report.timings = scan.timings;
  report.backend = entry?.label ?? null;
  if (entry?.note) report.backend_note = entry.note;
  if (core.Engine.gpuLost()) report.backend_note = `${report.backend_note ?? ""} (the WebGPU device was lost)`.trim();
  report.workers = workers;
  // Wasm memory never shrinks, so its size now is the peak of this worker's life.
  report.wasm_memory_bytes = wasm?.memory?.buffer?.byteLength ?? null;
  if (workers > 1) report.helper_wasm_memory_bytes = helperMemory;
  report.browser_timings = scan.browserTimings;
  if (entry?.engine.isGpu()) {
    report.known_answer = { max_diff: entry.engine.knownAnswerDiff(), tolerance: core.Engine.knownAnswerTolerance() };
  }
  const maskNifti = out.maskNifti();
  const maskSeg = out.maskSeg();
  // The result stays here for the reader's review: edits are measured against it.
  const review = out.takeReview();
  out.free();
  const ms = scan.ms + performance.now() - t0;
  results.set(key, { review, report, maskNifti: maskNifti.slice(), ms });
  progress(Stage.DONE, scan.stages.length, scan.stages.length);
  return { report, review, mask: review.modelMask(), maskNifti, maskSeg, ms };
}

/** Results still open for review, by key, except those in `keep`, leave wasm memory now. */
function closeResults(keep = []) {
  for (const [key, r] of results) {
    if (keep.includes(key)) continue;
    r.review.free();
    results.delete(key);
  }
}

/** A result as the page takes it (`RESULT`, or one scan of `COMPARED`), and its buffers. */
function resultMessage(key, { report, mask, maskNifti, maskSeg }) {
  const msg = { id: key, report, mask, mask_nifti: maskNifti };
  const transfer = [mask.buffer, maskNifti.buffer];
  if (maskSeg?.length > 0) {
    msg.mask_seg = maskSeg;
    transfer.push(maskSeg.buffer);
  }
  return [msg, transfer];
}

/** Progress of job `id` (with `scan` in a comparison). */
const progressOf = (id, scan) => (stage, index, count, done = 0, total = 0) =>
  post({ type: FromWorker.PROGRESS, id, stage, index, count, done, total, ...(scan ? { scan } : {}) });

async function segment({ id, files, options = {} }) {
  const progress = progressOf(id);
  progress(Stage.LOADING, 0, 1);
  await loadCore();
  // One result under review at a time: the previous one's scan leaves wasm memory now.
  closeResults();
  const scan = openScan(files, options, { id });
  try {
    const [msg, transfer] = resultMessage(id, await finishScan(id, scan, progress));
    post({ type: FromWorker.RESULT, ...msg }, transfer);
  } finally {
    scan.job.free();
  }
}

/** Whether two lists of files hold the same bytes (the same scan chosen twice). */
function sameFiles(a, b) {
  if (a.length !== b.length) return false;
  return a.every((f, i) => {
    const x = new Uint8Array(f.bytes);
    const y = new Uint8Array(b[i].bytes);
    if (x.length !== y.length) return false;
    for (let k = 0; k < x.length; k++) if (x[k] !== y[k]) return false;
    return true;
  });
}

/** An error about one scan of a comparison: its sentence says which (a wasm trap stays as it is). */
function about(scan, e) {
  if (e instanceof WebAssembly.RuntimeError) return e;
  const words = scan === Scan.BASELINE ? "the baseline scan" : "the follow-up scan";
  return Object.assign(new Error(`${words}: ${e?.message ?? e}`), e?.series ? { series: e.series } : {});
}

/**
 * A baseline and a follow-up (protocol.js `ToWorker.COMPARE`): each scan given as files is
 * segmented exactly as a single scan is, on its own grid; the core registers the follow-up to
 * the baseline and compares the two masks (`core.compare`). The report is `ichnet compare
 * --json`'s, its seconds by the browser's clock.
 */
async function compare({ id, baseline, followup, baseline_mask = null, options = {} }) {
  post({ type: FromWorker.PROGRESS, id, stage: Stage.LOADING, index: 0, count: 1, done: 0, total: 0 });
  await loadCore();
  // The comparison's own option goes to the registration, the rest to each segmentation; both
  // are checked by the core before any work.
  const { similarity, ...scanOptions } = options;
  const registration = JSON.stringify(similarity === undefined ? {} : { similarity });
  core.checkCompareOptions(registration);
  const reuse = baseline?.result ?? null;
  if (reuse !== null && !results.has(reuse)) {
    throw new Error("the baseline result is no longer open (a newer scan replaced it): open the baseline again");
  }
  if (reuse === null && !baseline?.files?.length) throw new Error("no baseline scan was given");
  if (!followup?.files?.length) throw new Error("no follow-up scan was given");
  if (reuse === null && sameFiles(baseline.files, followup.files)) {
    throw new Error("the baseline and the follow-up are the same file: choose the later CT as the follow-up");
  }
  closeResults(reuse === null ? [] : [reuse]);
  // Both scans are read before either is segmented: a follow-up that cannot be read is said at
  // once, not after the baseline's network and CRF.
  const open = [];
  /** `work()` about scan `which`: its error says so. */
  const step = async (which, work) => {
    try {
      return await work();
    } catch (e) {
      throw about(which, e);
    }
  };
  const opened = (which, files) =>
    step(which, async () => {
      const scan = Object.assign(openScan(files, scanOptions, { id, scan: which }), { which, key: `${id}/${which}` });
      open.push(scan);
      return scan;
    });
  const read = (scan) => step(scan.which, () => runStages(scan, progressOf(id, scan.which), 1));
  const finish = async (scan) => ({ key: scan.key, ...(await step(scan.which, () => finishScan(scan.key, scan, progressOf(id, scan.which)))) });
  try {
    const b = reuse === null ? await opened(Scan.BASELINE, baseline.files) : null;
    const f = await opened(Scan.FOLLOWUP, followup.files);
    if (b) await read(b);
    await read(f);
    let base;
    if (b) {
      base = await finish(b);
    } else {
      const kept = results.get(reuse);
      base = { key: reuse, report: kept.report, review: kept.review, mask: kept.review.modelMask(), maskNifti: kept.maskNifti.slice(), maskSeg: null, ms: kept.ms };
    }
    const follow = await finish(f);
    await compareScans(id, base, follow, baseline_mask, registration);
  } finally {
    for (const scan of open) scan.job.free();
  }
}

/** Register and compare two finished scans, and post `COMPARED`. */
async function compareScans(id, base, follow, baseline_mask, registration) {
  const progress = progressOf(id);
  progress(Stage.REGISTER, 0, 1);
  const t = performance.now();
  let c;
  try {
    c = core.compare(base.review, baseline_mask ?? undefined, follow.review, undefined, registration);
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) throw e;
    throw new Error(`the follow-up could not be compared with the baseline: ${e.message}`);
  }
  try {
    const compareMs = performance.now() - t;
    const { comparison, masks } = JSON.parse(c.reportJson());
    if (baseline_mask) {
      // The reader's mask of the baseline: its report is the core's measurement of that mask, as
      // a sign-off's is.
      const r = base.review.review(baseline_mask, undefined, undefined);
      try {
        base.report = { ...base.report, ...JSON.parse(r.reportJson()) };
        base.maskNifti = r.maskNifti();
        base.mask = baseline_mask.slice();
      } finally {
        r.free();
      }
    }
    const report = {
      comparison,
      baseline: base.report,
      followup: follow.report,
      seconds: { segment_baseline: base.ms / 1000, segment_followup: follow.ms / 1000, register_and_compare: compareMs / 1000 },
      masks,
    };
    const [b, bt] = resultMessage(base.key, base);
    const [f, ft] = resultMessage(follow.key, follow);
    const inBase = c.followupInBaseline();
    const inBaseNifti = c.followupInBaselineNifti();
    progress(Stage.DONE, 1, 1);
    post(
      {
        type: FromWorker.COMPARED,
        id,
        report,
        baseline: b,
        followup: f,
        followup_in_baseline: inBase,
        followup_in_baseline_nifti: inBaseNifti,
        baseline_to_followup: Array.from(c.baselineToFollowup()),
        followup_to_baseline: Array.from(c.followupToBaseline()),
      },
      [...bt, ...ft, inBase.buffer, inBaseNifti.buffer],
    );
  } finally {
    c.free();
  }
}

/** The scan goes to the viewer once read, while the rest runs (a copy out of wasm memory, transferred). */
function postVolume(job, extra) {
  const hu = job.hu();
  post(
    {
      type: FromWorker.VOLUME,
      ...extra,
      info: JSON.parse(job.infoJson()),
      warnings: job.warnings(),
      dims: Array.from(job.dims()),
      spacing: Array.from(job.spacing()),
      hu,
    },
    [hu.buffer],
  );
}

/** The review of result `id`, or a sentence saying it is gone. */
function openResult(id) {
  const r = results.get(id);
  if (!r) throw new Error("this result is no longer open for review (a newer scan replaced it)");
  return r.review;
}

/**
 * The reader's review of result `id`: measure an edited mask (file order) with the core's code,
 * or, with `reader` and `signed_at`, sign it. Answers with the report's fields that change with
 * the mask (volume_ml, abc2, haematomas, slices_with_blood), `review`, and the mask file.
 */
function reviewMask({ id, req, mask = null, reader = null, signed_at = null }) {
  const review = openResult(id);
  // No mask: the model's, as it is (a host that signs without editing).
  const r = review.review(mask ?? review.modelMask(), reader, signed_at);
  try {
    const fields = JSON.parse(r.reportJson());
    const maskNifti = r.maskNifti();
    post({ type: FromWorker.REVIEWED, id, req, fields, mask_nifti: maskNifti }, [maskNifti.buffer]);
  } finally {
    r.free();
  }
}

/** The scan as NIfTI on its own grid, for a viewer that could not read the input. */
function scanNifti({ id, req }) {
  const bytes = openResult(id).scanNifti();
  post({ type: FromWorker.SCAN, id, req, bytes }, [bytes.buffer]);
}

/**
 * As a helper: the module (the coordinating worker's, when it sent one), the CPU engine and its
 * dummy batch. Each is made once (`loadCore`, `engineFor` and `warmCpu` remember theirs), so a
 * batch that arrives while `WARM` is still loading them waits for the same work.
 */
async function warm({ module = null } = {}) {
  await loadCore(module);
  const entry = await engineFor(Backend.CPU);
  await warmCpu(entry);
  return entry;
}

/** As a helper, told to warm up by its coordinating worker: says when it is ready. */
async function warmHelper({ id, module = null }) {
  await warm({ module });
  post({ type: FromWorker.PREPARED, id });
}

/** As a helper: one batch through this instance's CPU engine. */
async function batch({ id, x, shape }) {
  const entry = await warm();
  const probs = await entry.engine.forward(x, new Uint32Array(shape));
  post({ type: FromWorker.BATCH, id, probs, memory: wasm?.memory?.buffer?.byteLength ?? 0 }, [probs.buffer]);
}

self.addEventListener("message", async (event) => {
  const msg = event.data;
  const work = {
    [ToWorker.SEGMENT]: segment,
    [ToWorker.BATCH]: batch,
    [ToWorker.WARM]: warmHelper,
    [ToWorker.PREPARE]: prepare,
    [ToWorker.REVIEW]: reviewMask,
    [ToWorker.SCAN]: scanNifti,
    [ToWorker.COMPARE]: compare,
  }[msg?.type];
  if (!work) return;
  try {
    await work(msg);
  } catch (e) {
    // A wasm trap (a Rust panic) leaves the module unusable: tell the page to replace us.
    const fatal = e instanceof WebAssembly.RuntimeError;
    const message = e?.message ?? String(e);
    post({ type: FromWorker.ERROR, id: msg.id, req: msg.req, message, fatal, ...(e?.series ? { series: e.series } : {}) });
  }
});
