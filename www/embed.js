// ICHNet as an ES module, for pages that want the numbers and the mask without the app's UI:
//
//   import { segment } from "https://your-host/ichnet/embed.js";
//   const { report, mask_nifti } = await segment(bytes, { onProgress: (p) => console.log(p.stage, p.done, p.total) });
//   // report: what `ichnet segment --json` prints (volume_ml, abc2, ...) plus the browser's fields;
//   // mask_nifti: Uint8Array, .nii.gz in the input's grid. The shape is documented in protocol.js.
//   const signed = await signOff({ reader: "A. Reader" });   // the reader accepts the result as is
//   const { report: growth } = await compare(baselineBytes, followupBytes);   // issue 15: expansion
//   // growth.comparison: { baseline_ml, followup_ml, delta_ml, delta_percent, expansion, verdict, ... }
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

  /**
   * Get ready for the first scan while the user is still choosing it: the worker, the engine
   * (`options.backend`, as `run` takes it) and, on the CPU path, its helper workers, each with a
   * dummy batch through it. Optional: a scan started before it resolves waits for the same
   * loading. Resolves with `{ backend, workers }` (the engine's label, module instances).
   */
  prepare(options = {}) {
    this.#ensureWorker();
    const { backend, workers } = options;
    return this.#ask({ type: ToWorker.PREPARE, options: { backend, workers } }, FromWorker.PREPARED).then((m) => ({ backend: m.backend, workers: m.workers }));
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
    let volume = null;
    if (!this.#busy) this.#last = null;
    const msg = { type: ToWorker.SEGMENT, files, options: { backend: Backend.AUTO, ...options } };
    return this.#job(msg, files.map((f) => f.bytes), FromWorker.RESULT, {
      onProgress,
      signal,
      onVolume: (m) => {
        volume = m;
        onVolume?.(m);
      },
    }).then(({ id, msg: m }) => {
      this.#last = { id, report: m.report };
      const result = { report: m.report, mask_nifti: m.mask_nifti, mask: m.mask, volume };
      if (m.mask_seg) result.mask_seg = m.mask_seg;
      return result;
    });
  }

  /**
   * Compare a follow-up with its baseline (issue 15). `baseline`: files as `run` takes them, or
   * null for the last result (the page's "add follow-up": it is not segmented again, and
   * `baselineMask`, the reader's mask of it in file order, is compared instead of the model's
   * when given). `followup`: files. Buffers transferred. `options`: the segmentation options
   * (both scans get the same) plus `similarity` ("mi" | "ncc"). Progress and volume messages
   * carry `scan` ("baseline" | "followup"). Resolves with the `COMPARED` message of protocol.js
   * (`report`: `ichnet compare --json`'s; `baseline`, `followup`: each scan's result with its
   * `id`, `mask` and `mask_nifti`; the follow-up's mask on the baseline's grid; the two world
   * maps); rejects with a sentence naming the scan it is about.
   */
  compare(baseline, followup, { onProgress, onVolume, signal, baselineMask = null, ...options } = {}) {
    const last = this.#last;
    if (baseline === null && (!last || !this.#worker)) {
      return Promise.reject(new Error("there is no result to add a follow-up to: segment the baseline first"));
    }
    const transfer = [...(baseline ?? []).map((f) => f.bytes), ...followup.map((f) => f.bytes)];
    if (baselineMask) transfer.push(baselineMask.buffer);
    const msg = {
      type: ToWorker.COMPARE,
      baseline: baseline === null ? { result: last.id } : { files: baseline },
      followup: { files: followup },
      baseline_mask: baselineMask,
      options: { backend: Backend.AUTO, ...options },
    };
    // Fresh files replace every open result in the worker.
    if (baseline !== null && !this.#busy) this.#last = null;
    return this.#job(msg, transfer, FromWorker.COMPARED, { onProgress, onVolume, signal }).then(({ msg: m }) => {
      // The baseline stays the result a sign-off is about.
      this.#last = { id: m.baseline.id, report: m.baseline.report };
      return m;
    });
  }

  /**
   * One job in the worker (`msg` gets its `id`): progress and volume messages until `answer` or
   * an error; an abort (or a worker that fails to start) terminates the worker.
   */
  #job(msg, transfer, answer, { onProgress, onVolume, signal }) {
    if (signal?.aborted) return Promise.reject(abortError());
    if (this.#busy) return Promise.reject(new Error("a segmentation is already running; cancel it first"));
    const worker = this.#ensureWorker();
    const id = this.#nextId++;
    this.#busy = true;
    return new Promise((resolve, reject) => {
      const done = () => {
        worker.removeEventListener("message", onMessage);
        worker.removeEventListener("error", onError);
        signal?.removeEventListener("abort", onAbort);
        this.#busy = false;
      };
      const onMessage = (event) => {
        const m = event.data;
        if (m.id !== id || m.req !== undefined) return;
        switch (m.type) {
          case FromWorker.PROGRESS:
            onProgress?.({ stage: m.stage, index: m.index, count: m.count, done: m.done, total: m.total, ...(m.scan ? { scan: m.scan } : {}) });
            break;
          case FromWorker.VOLUME:
            onVolume?.(m);
            break;
          case answer:
            done();
            resolve({ id, msg: m });
            break;
          case FromWorker.ERROR: {
            done();
            if (m.fatal) this.terminate();
            const error = new Error(m.message);
            if (m.series) error.series = m.series;
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
      worker.postMessage({ ...msg, id }, transfer);
    });
  }

  /** The scan of a result (the last, or the one with `id`: a comparison's follow-up) as .nii.gz on its own grid. */
  scanNifti(id = this.#last?.id) {
    if (id === undefined || !this.#worker) return Promise.reject(new Error("there is no result: segment a scan first"));
    return this.#ask({ type: ToWorker.SCAN, id }, FromWorker.SCAN).then((m) => m.bytes);
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
 * Optional: load the engine (and, on the CPU path, start its helper workers) before the first
 * `segment()`, e.g. when the page opens, so that first scan runs as fast as the next. `options`:
 * `backend` and `workers` as `segment()` takes them. Resolves with `{ backend, workers }`.
 */
export function prepare(options = {}) {
  shared ??= new Segmenter();
  return shared.prepare(options);
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

/**
 * Compare a follow-up head CT with its baseline (issue 15): both are segmented in the worker,
 * each on its own grid exactly as `segment()` does, the follow-up is registered to the baseline
 * (rigid) and the core compares the two masks, as `ichnet compare` does.
 *
 * `baseline`, `followup`: what `segment()` takes (NIfTI bytes, or a list of `File`s or
 * `{ name, bytes }`); bytes are copied. Options: `onProgress({ stage, index, count, done, total,
 * scan })` (`scan`: "baseline" | "followup" while segmenting; stage "register" then), `signal`,
 * `baselineName`, `followupName`, the segmentation options of `segment()` (both scans get the
 * same) and `similarity` ("mi", the default, | "ncc"), as `ichnet compare --similarity`.
 *
 * Resolves with the comparison of protocol.js: `{ report, baseline: { report, mask_nifti },
 * followup: { report, mask_nifti }, followup_in_baseline_nifti }`, `report` being what `ichnet
 * compare --json` prints (plus `masks`); rejects with a sentence that names the scan it is
 * about (or an AbortError).
 */
export async function compare(baseline, followup, { baselineName = "baseline.nii.gz", followupName = "followup.nii.gz", ...options } = {}) {
  const [b, f] = await Promise.all([toFiles(baseline, baselineName), toFiles(followup, followupName)]);
  shared ??= new Segmenter();
  const m = await shared.compare(b, f, options);
  const result = ({ report, mask_nifti }) => ({ report, mask_nifti });
  return {
    report: m.report,
    baseline: result(m.baseline),
    followup: result(m.followup),
    followup_in_baseline_nifti: m.followup_in_baseline_nifti,
  };
}
