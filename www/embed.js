// ICHNet as an ES module, for pages that want the numbers and the mask without the app's UI:
//
//   import { segment } from "https://your-host/ichnet/embed.js";
//   const { report, mask_nifti } = await segment(bytes, { onProgress: (p) => console.log(p.stage, p.done, p.total) });
//   // report: what `ichnet segment --json` prints (volume_ml, abc2, ...) plus the browser's fields;
//   // mask_nifti: Uint8Array, .nii.gz in the input's grid. The shape is documented in protocol.js.
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
   * `options`: the segmentation options of protocol.js (backend, threshold, crf). Resolves with
   * the result of protocol.js (`{ report, mask_nifti }`) plus `mask` (canonical order, for a
   * viewer) and `volume` (the VOLUME message); rejects with the core's message.
   */
  run(files, { onProgress, onVolume, signal, ...options } = {}) {
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
            onProgress?.({ stage: msg.stage, index: msg.index, count: msg.count, done: msg.done, total: msg.total });
            break;
          case FromWorker.VOLUME:
            volume = msg;
            onVolume?.(msg);
            break;
          case FromWorker.RESULT:
            done();
            resolve({ report: msg.report, mask_nifti: msg.mask_nifti, mask: msg.mask, volume });
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
        { type: ToWorker.SEGMENT, id, files, options: { backend: Backend.AUTO, ...options } },
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
 * Options: `onProgress({ stage, index, count, done, total })`, `signal` (AbortSignal: stops the
 * work), `name`, and the segmentation options of protocol.js: `backend` ("auto" | "webgpu" |
 * "cpu"), `threshold`, `crf` (null | { CrfConfig fields }), `assume_hu`, as the CLI takes them.
 *
 * Resolves with the result of protocol.js, `{ report, mask_nifti }` (the same shape the iframe
 * posts); rejects with an Error whose message is meant for the user, or an AbortError when
 * `signal` fires.
 */
export async function segment(bytes, { name = "scan.nii.gz", ...options } = {}) {
  const view = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const copy = view.slice().buffer;
  shared ??= new Segmenter();
  const { report, mask_nifti } = await shared.run([{ name, bytes: copy }], options);
  return { report, mask_nifti };
}
