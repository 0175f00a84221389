// ICHNet as an ES module, for pages that want the numbers and the mask without the app's UI:
//
//   import { segment } from "https://your-host/ichnet/embed.js";
//   const result = await segment(bytes, { onProgress: (p) => console.log(p.stage, p.done, p.total) });
//   // result.maskNifti (Uint8Array, .nii.gz in the input's grid), result.volumeMl, result.abc2, ...
//
// Everything runs in a module worker served from the same place as this file; the scan never
// leaves the machine. The app's own page uses the same `Segmenter`, so there is one client.

import { Backend, FromWorker, ToWorker } from "./protocol.js";

const WORKER_URL = new URL("worker.js", import.meta.url);

/** An `Error` whose `name` is "AbortError", as `fetch` rejects on abort. */
function abortError() {
  const e = new Error("the segmentation was cancelled");
  e.name = "AbortError";
  return e;
}

/**
 * A long-lived worker that segments one scan at a time. Cancelling terminates the worker (the
 * only way to stop wasm in the middle of a call) and the next job starts a fresh one.
 */
export class Segmenter {
  #worker = null;
  #nextId = 1;
  #busy = false;

  #ensureWorker() {
    if (!this.#worker) this.#worker = new Worker(WORKER_URL, { type: "module" });
    return this.#worker;
  }

  /** Stop whatever runs and drop the worker (its wasm memory goes with it). */
  terminate() {
    this.#worker?.terminate();
    this.#worker = null;
    this.#busy = false;
  }

  /**
   * Segment one scan. `files`: `[{ name, bytes: ArrayBuffer }]` (one .nii/.nii.gz, or a .hdr and
   * its .img). The buffers are transferred to the worker: the caller's copies become empty.
   * Resolves with `{ mask, maskNifti, report, volume }`; rejects with the core's message.
   */
  run(files, { onProgress, onVolume, signal, crf = true, backend = Backend.AUTO } = {}) {
    if (signal?.aborted) return Promise.reject(abortError());
    if (this.#busy) return Promise.reject(new Error("a segmentation is already running; cancel it first"));
    const worker = this.#ensureWorker();
    const id = this.#nextId++;
    this.#busy = true;
    return new Promise((resolve, reject) => {
      let volume = null;
      const done = () => {
        worker.removeEventListener("message", onMessage);
        worker.removeEventListener("error", onError);
        signal?.removeEventListener("abort", onAbort);
        this.#busy = false;
      };
      const onMessage = (event) => {
        const msg = event.data;
        if (msg.id !== id) return;
        switch (msg.type) {
          case FromWorker.PROGRESS:
            onProgress?.({ stage: msg.stage, done: msg.done, total: msg.total, detail: msg.detail });
            break;
          case FromWorker.VOLUME:
            volume = msg;
            onVolume?.(msg);
            break;
          case FromWorker.RESULT:
            done();
            resolve({ mask: msg.mask, maskNifti: msg.maskNifti, report: msg.report, volume });
            break;
          case FromWorker.ERROR:
            done();
            if (msg.fatal) this.terminate();
            reject(new Error(msg.message));
            break;
        }
      };
      const onError = (event) => {
        done();
        this.terminate();
        reject(new Error(`the segmentation engine failed to start: ${event.message ?? "worker error"}`));
      };
      const onAbort = () => {
        done();
        this.terminate();
        reject(abortError());
      };
      worker.addEventListener("message", onMessage);
      worker.addEventListener("error", onError);
      signal?.addEventListener("abort", onAbort, { once: true });
      worker.postMessage(
        { type: ToWorker.SEGMENT, id, files, options: { crf, backend } },
        files.map((f) => f.bytes),
      );
    });
  }
}

let shared = null;

/**
 * Segment a head CT given as NIfTI bytes (`.nii` or `.nii.gz`, gzip sniffed).
 *
 * `bytes`: ArrayBuffer or typed array (copied, so the caller keeps its own).
 * Options: `onProgress({ stage, done, total })`, `signal` (AbortSignal: stops the work),
 * `crf` (default true), `backend` ("auto" | "webgpu" | "cpu").
 *
 * Resolves with `{ maskNifti, volumeMl, abc2: { ml, aMm, bMm, cMm, slices }, slicesWithBlood, brainMl,
 * backend, timingsMs, warnings, report }` (`report`: what `ichnet segment --json` prints, plus
 * `backend`, `backend_note`, `timings` from the browser's clock, `wasm_memory_bytes`); rejects with an Error whose message is meant for the user, or an
 * AbortError when `signal` fires.
 */
export async function segment(bytes, { name = "scan.nii.gz", ...options } = {}) {
  const view = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const copy = view.slice().buffer;
  shared ??= new Segmenter();
  const { maskNifti, report } = await shared.run([{ name, bytes: copy }], options);
  return {
    maskNifti,
    volumeMl: report.volume_ml,
    abc2: { ml: report.abc2?.ml, aMm: report.abc2?.a_mm, bMm: report.abc2?.b_mm, cMm: report.abc2?.c_mm, slices: report.abc2?.slices },
    slicesWithBlood: report.slices_with_blood,
    brainMl: report.brain_ml,
    backend: report.backend,
    timingsMs: Object.fromEntries((report.timings ?? []).map(({ stage, ms }) => [stage, ms])),
    warnings: report.warnings ?? [],
    report,
  };
}
