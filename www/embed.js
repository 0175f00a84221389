// ICHNet as an ES module, for pages that want the numbers and the mask without the app's UI:
//
//   import { segment } from "https://your-host/ichnet/embed.js";
//   const { report, mask_nifti } = await segment(bytes, { onProgress: (p) => console.log(p.stage, p.done, p.total) });
//   // report: what `ichnet segment --json` prints (volume_ml, abc2, ...) plus the browser's fields;
//   // mask_nifti: Uint8Array, .nii.gz in the input's grid. The shape is documented in protocol.js.
//   const signed = await signOff({ reader: "A. Reader" });   // the reader accepts the result as is
//   // signed.report.review: { model_volume_ml, final_volume_ml, edited_voxels, reader, signed_at, ... }
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
  /** The last result (its id and report): what `review` measures edits against. */
  #last = null;
  #nextReq = 1;

  #ensureWorker() {
    if (!this.#worker) this.#worker = new Worker(WORKER_URL, { type: "module" });
    return this.#worker;
  }

  /** Stop whatever runs and drop the worker (its wasm memory goes with it). */
  terminate() {
    this.#worker?.terminate();
    this.#worker = null;
    this.#busy = false;
    this.#last = null;
  }

  /**
   * The reader's review of the last result: `mask` (Uint8Array, 0/1 in the input file's voxel
   * order, i fastest, as `run` returned it; null = the model's own) measured by the core as the
   * model's mask was. With `reader` (the reader's name or initials) the result is signed, at the
   * browser's current time. Resolves with the signed result of protocol.js,
   * `{ report, mask_nifti }`: the last report with the final mask's volume, ABC/2, haematomas
   * and slices, plus `report.review`.
   */
  review(mask = null, { reader = null } = {}) {
    const last = this.#last;
    if (!last || !this.#worker) return Promise.reject(new Error("there is no result to review: segment a scan first"));
    const signed_at = reader === null ? null : new Date().toISOString();
    return this.#ask({ type: ToWorker.REVIEW, id: last.id, mask, reader, signed_at }, FromWorker.REVIEWED, mask ? [mask.buffer] : []).then(
      (msg) => ({ report: { ...last.report, ...msg.fields }, mask_nifti: msg.mask_nifti }),
    );
  }

  /** The last result's scan as .nii.gz on its own grid (for a viewer that cannot read the input). */
  scanNifti() {
    const last = this.#last;
    if (!last || !this.#worker) return Promise.reject(new Error("there is no result: segment a scan first"));
    return this.#ask({ type: ToWorker.SCAN, id: last.id }, FromWorker.SCAN).then((msg) => msg.bytes);
  }

  /** One request/answer with the worker, matched by `req` (answers can arrive in any order). */
  #ask(msg, answer, transfer = []) {
    const worker = this.#worker;
    const req = this.#nextReq++;
    return new Promise((resolve, reject) => {
      const onMessage = (event) => {
        const m = event.data;
        if (m?.req !== req) return;
        worker.removeEventListener("message", onMessage);
        if (m.type === answer) resolve(m);
        else reject(new Error(m.message ?? "the engine did not answer"));
      };
      worker.addEventListener("message", onMessage);
      worker.postMessage({ ...msg, req }, transfer);
    });
  }

  /**
   * Segment one scan. `files`: `[{ name, bytes: ArrayBuffer }]` (one .nii/.nii.gz, a .hdr and
   * its .img, the files of a DICOM series, or a .zip). The buffers are transferred to the worker:
   * the caller's copies become empty. `options`: the segmentation options of protocol.js
   * (backend, threshold, crf, assume_hu, series). Resolves with the result of protocol.js
   * (`{ report, mask_nifti, mask_seg? }`) plus `mask` (0/1 in the input file's voxel order, for
   * a viewer of that file) and `volume` (the VOLUME message); rejects with the core's message
   * (with `error.series` when the files hold several DICOM series and none was chosen).
   */
  run(files, { onProgress, onVolume, signal, ...options } = {}) {
    if (signal?.aborted) return Promise.reject(abortError());
    if (this.#busy) return Promise.reject(new Error("a segmentation is already running; cancel it first"));
    const worker = this.#ensureWorker();
    const id = this.#nextId++;
    this.#busy = true;
    this.#last = null;
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
        if (msg.id !== id || msg.req !== undefined) return;
        switch (msg.type) {
          case FromWorker.PROGRESS:
            onProgress?.({ stage: msg.stage, index: msg.index, count: msg.count, done: msg.done, total: msg.total });
            break;
          case FromWorker.VOLUME:
            volume = msg;
            onVolume?.(msg);
            break;
          case FromWorker.RESULT: {
            done();
            this.#last = { id, report: msg.report };
            const result = { report: msg.report, mask_nifti: msg.mask_nifti, mask: msg.mask, volume };
            if (msg.mask_seg) result.mask_seg = msg.mask_seg;
            resolve(result);
            break;
          }
          case FromWorker.ERROR: {
            done();
            if (msg.fatal) this.terminate();
            const error = new Error(msg.message);
            if (msg.series) error.series = msg.series;
            reject(error);
            break;
          }
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

/** `[{ name, bytes: ArrayBuffer }]` from what a caller passes, each buffer a copy the worker may take. */
async function toFiles(input, name) {
  const copy = (b) => {
    const v = b instanceof ArrayBuffer ? new Uint8Array(b) : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    return v.slice().buffer;
  };
  if (input instanceof ArrayBuffer || ArrayBuffer.isView(input)) return [{ name, bytes: copy(input) }];
  const list = [...input];
  if (list.length === 0) throw new Error("no file was given");
  return Promise.all(list.map(async (f, i) => {
    if (typeof Blob !== "undefined" && f instanceof Blob) return { name: f.name ?? `file${i}`, bytes: await f.arrayBuffer() };
    if (f && (f.bytes instanceof ArrayBuffer || ArrayBuffer.isView(f.bytes))) return { name: String(f.name ?? `file${i}`), bytes: copy(f.bytes) };
    throw new Error(`file ${i + 1} is neither a File nor { name, bytes }`);
  }));
}

/**
 * Segment a head CT.
 *
 * `input`: NIfTI bytes (ArrayBuffer or typed array: `.nii` or `.nii.gz`, gzip sniffed), or a list
 * of files, as `File`s (a folder's `<input webkitdirectory>` selection, say) or `{ name, bytes }`:
 * the files of a DICOM series, a `.zip` of a study, or a `.hdr` with its `.img`. Bytes are
 * copied, so the caller keeps its own.
 * Options: `onProgress({ stage, index, count, done, total })`, `signal` (AbortSignal: stops the
 * work), `name`, and the segmentation options of protocol.js: `backend` ("auto" | "webgpu" |
 * "cpu"), `threshold`, `crf` (null | { CrfConfig fields }), `assume_hu`, `series`, as the CLI
 * takes them.
 *
 * Resolves with the result of protocol.js, `{ report, mask_nifti, mask_seg? }` (the same shape
 * the iframe posts); rejects with an Error whose message is meant for the user (and `series`,
 * the list to choose from, when the files hold several DICOM series), or an AbortError when
 * `signal` fires.
 */
export async function segment(input, { name = "scan.nii.gz", ...options } = {}) {
  const files = await toFiles(input, name);
  shared ??= new Segmenter();
  const { report, mask_nifti, mask_seg } = await shared.run(files, options);
  return mask_seg ? { report, mask_nifti, mask_seg } : { report, mask_nifti };
}

/**
 * Sign the last result of `segment()`: the reader (`reader`: their name or initials, required)
 * accepts it, optionally after editing (`mask`: Uint8Array, 0/1 in the input file's voxel order,
 * i fastest; omitted: the model's mask as it is). Resolves with the signed result of protocol.js,
 * `{ report, mask_nifti }`: the report measured by the core for the final mask, with
 * `report.review` (model and final volume, edited voxels, reader, time).
 */
export async function signOff({ reader, mask = null } = {}) {
  if (!shared) throw new Error("there is no result to sign: call segment() first");
  if (typeof reader !== "string") throw new Error("a sign-off needs the reader's name or initials");
  return shared.review(mask ? new Uint8Array(mask) : null, { reader });
}
