// Every message name that crosses a thread or frame boundary, defined once.
//
// Two conversations use these names:
// - page/embed.js <-> worker.js (the worker owns the wasm module and does all the heavy work);
// - a host page <-> the app in an iframe (window.postMessage, origin-checked on both sides).
// A typo in a string literal would fail silently (the message is simply never answered), so no
// file spells these strings itself: they import the frozen objects below.

/** Messages to the worker. */
export const ToWorker = Object.freeze({
  /** `{ type, id, files: [{ name, bytes: ArrayBuffer }], options: { crf, backend } }`; bytes transferred. */
  SEGMENT: "segment",
});

/** Messages from the worker. */
export const FromWorker = Object.freeze({
  /** `{ type, id, stage, done, total, detail }`: one of `Stage`, `done`/`total` for the network. */
  PROGRESS: "progress",
  /**
   * `{ type, id, info, warnings, dims: [nz, ny, nx], spacing: [z, y, x], hu: Float32Array,
   * brain: Uint8Array }` (buffers transferred): the scan, read and in canonical order, so the
   * viewer can show it while the network runs.
   */
  VOLUME: "volume",
  /**
   * `{ type, id, mask: Uint8Array (canonical order), maskNifti: Uint8Array (input grid, .nii.gz),
   * report: object }` (buffers transferred).
   */
  RESULT: "result",
  /** `{ type, id, message }`: a sentence for the user; the worker stays usable. */
  ERROR: "error",
});

/** Stage names shown to the user, in the order they run. */
export const Stage = Object.freeze({
  LOADING: "loading the engine",
  READING: "reading",
  BRAIN: "brain mask",
  NETWORK: "network",
  CRF: "CRF",
  WRITING: "writing the mask",
  DONE: "done",
});

/** Backend choices a caller may ask for; "auto" tries WebGPU and falls back to the CPU. */
export const Backend = Object.freeze({
  AUTO: "auto",
  GPU: "webgpu",
  CPU: "cpu",
});

/** Messages between a host page and the app running in an iframe (`index.html?embed=1&allow=...`). */
export const Frame = Object.freeze({
  /** iframe -> host, once the app can take a scan: `{ type }`. */
  READY: "ichnet:ready",
  /** host -> iframe: `{ type, id, name, bytes: ArrayBuffer, options }` (bytes transferred). */
  SEGMENT: "ichnet:segment",
  /** host -> iframe: `{ type, id }`: stop the work for `id`. */
  CANCEL: "ichnet:cancel",
  /** iframe -> host: `{ type, id, stage, done, total }`. */
  PROGRESS: "ichnet:progress",
  /** iframe -> host: `{ type, id, maskNifti: ArrayBuffer, report }` (mask transferred). */
  RESULT: "ichnet:result",
  /** iframe -> host: `{ type, id, message }`. */
  ERROR: "ichnet:error",
});
