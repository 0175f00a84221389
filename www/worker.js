// The worker owns the wasm module and does all the heavy work (reading, brain mask, network, CRF,
// writing), so the page's main thread only draws. One job at a time; the page cancels a job by
// terminating this worker and starting a fresh one, which is the only way to stop wasm mid-call.
//
// Everything that crosses to the page is either small JSON or a transferred ArrayBuffer.

import init, * as core from "./pkg/ichnet.js";
import { Backend, FromWorker, Stage, ToWorker } from "./protocol.js";

const WEIGHTS_URL = new URL("weights/ichnet.bpk", import.meta.url);

/** The wasm module, initialised once per worker, and its exports (for the memory figure). */
let ready = null;
let wasm = null;
/** Weights bytes, fetched once per worker (the service worker / HTTP cache makes refetches cheap). */
let weights = null;
/** Engines by backend, created on first use: a WebGPU device may be initialised only once. */
const engines = new Map();
/** Why WebGPU was not used, once we know (shown in the report). */
let gpuRefusal = null;

function post(msg, transfer = []) {
  self.postMessage(msg, transfer);
}

function progress(id, stage, done = 0, total = 0, detail = "") {
  post({ type: FromWorker.PROGRESS, id, stage, done, total, detail });
}

async function loadCore() {
  if (!ready) {
    ready = init({ module_or_path: new URL("pkg/ichnet_bg.wasm", import.meta.url) }).then((exports) => {
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

async function engineFor(choice) {
  const key = choice;
  if (engines.has(key)) return engines.get(key);
  const bytes = await loadWeights();
  let engine = null;
  let label = "CPU (flex)";
  const probe = gpuRefusal && choice !== Backend.GPU ? { use: false, why: gpuRefusal } : await probeGpu(choice);
  if (probe.use) {
    try {
      engine = await core.Engine.webgpu(bytes);
      label = `WebGPU: ${probe.name}`;
    } catch (e) {
      gpuRefusal = `WebGPU could not be started (${e.message})`;
      if (choice === Backend.GPU) throw new Error(gpuRefusal);
    }
  } else {
    gpuRefusal = probe.why;
    if (choice === Backend.GPU) throw new Error(`WebGPU was requested but ${probe.why}`);
  }
  if (!engine) engine = core.Engine.cpu(bytes);
  const entry = { engine, label, note: engine && !probe.use ? gpuRefusal : null };
  engines.set(key, entry);
  return entry;
}

/** Milliseconds since `t0`, rounded for the report. */
const since = (t0) => Math.round(performance.now() - t0);

async function segment({ id, files, options = {} }) {
  const timings = {};
  let t = performance.now();
  progress(id, Stage.LOADING);
  await loadCore();

  progress(id, Stage.READING);
  const job = files.length === 2
    ? core.Job.readPair(new Uint8Array(files[0].bytes), new Uint8Array(files[1].bytes))
    : core.Job.read(new Uint8Array(files[0].bytes));
  // Whatever happens, the job's wasm memory is released (a worker serves many scans).
  try {
    timings.readMs = since(t);

    t = performance.now();
    progress(id, Stage.BRAIN);
    job.brainMask();
    timings.brainMs = since(t);

    // The scan and brain mask go to the viewer now, while the network runs. Copies out of wasm
    // memory (the wasm side keeps its own), transferred so they are not copied again.
    const hu = job.hu();
    const brain = job.brain();
    post(
      {
        type: FromWorker.VOLUME,
        id,
        info: JSON.parse(job.infoJson()),
        warnings: job.warnings(),
        dims: Array.from(job.dims()),
        spacing: Array.from(job.spacing()),
        hu,
        brain,
      },
      [hu.buffer, brain.buffer],
    );

    t = performance.now();
    progress(id, Stage.LOADING, 0, 0, "network weights");
    let entry = await engineFor(options.backend ?? Backend.AUTO);
    timings.engineMs = since(t);

    t = performance.now();
    const total = job.batchCount();
    for (let i = 0; i < total; i++) {
      progress(id, Stage.NETWORK, i, total);
      try {
        await job.runBatch(entry.engine, i);
      } catch (e) {
        // A lost GPU device (driver reset, tab backgrounded on some systems) must not lose the
        // scan: redo this batch and the rest on the CPU, and say so in the report.
        if (entry.engine.isGpu() && options.backend !== Backend.GPU && !(e instanceof WebAssembly.RuntimeError)) {
          gpuRefusal = `the WebGPU device failed during the network (${e.message}); finished on the CPU`;
          engines.delete(Backend.AUTO);
          entry = await engineFor(Backend.CPU);
          entry = { ...entry, note: gpuRefusal };
          await job.runBatch(entry.engine, i);
        } else {
          throw e;
        }
      }
    }
    progress(id, Stage.NETWORK, total, total);
    timings.networkMs = since(t);

    t = performance.now();
    if (options.crf !== false) {
      progress(id, Stage.CRF);
      job.crf();
    }
    timings.crfMs = since(t);

    t = performance.now();
    progress(id, Stage.WRITING);
    const out = job.finish();
    timings.writeMs = since(t);

    // The CLI's report (`ichnet segment --json`), with the browser's own clock for the stages
    // (wasm has no clock of its own) and what only the browser knows.
    const report = JSON.parse(out.reportJson());
    report.timings = Object.entries(timings).map(([stage, ms]) => ({ stage: stage.replace(/Ms$/, ""), ms }));
    report.backend = entry.label;
    if (entry.note) report.backend_note = entry.note;
    if (core.Engine.gpuLost()) report.backend_note = `${report.backend_note ?? ""} (the WebGPU device was lost)`.trim();
    // Wasm memory never shrinks, so its size now is the peak of this worker's life.
    report.wasm_memory_bytes = wasm?.memory?.buffer?.byteLength ?? null;
    const mask = out.mask();
    const maskNifti = out.maskNifti();
    out.free();
    progress(id, Stage.DONE);
    post({ type: FromWorker.RESULT, id, mask, maskNifti, report }, [mask.buffer, maskNifti.buffer]);
  } finally {
    job.free();
  }
}

self.addEventListener("message", async (event) => {
  const msg = event.data;
  if (msg?.type !== ToWorker.SEGMENT) return;
  try {
    await segment(msg);
  } catch (e) {
    // A wasm trap (a Rust panic) leaves the module unusable: tell the page to replace us.
    const fatal = e instanceof WebAssembly.RuntimeError;
    const message = e?.message ?? String(e);
    post({ type: FromWorker.ERROR, id: msg.id, message, fatal });
  }
});
