// Every message name that crosses a thread or frame boundary, defined once.
//
// Two conversations use these names:
// - page/embed.js <-> worker.js (the worker owns the wasm module and does all the heavy work);
// - a host page <-> the app in an iframe (window.postMessage, origin-checked on both sides).
// A typo in a string literal would fail silently (the message is simply never answered), so no
// file spells these strings itself: they import the frozen objects below.

/**
 * Segmentation options, the same everywhere (page UI, ES module `segment()`, `Segmenter.run`, the
 * iframe's `options`) and the same as the CLI's, by the CLI's JSON names (snake_case):
 *
 *   backend    "auto" | "webgpu" | "cpu"   (the CLI's --gpu; "auto" tries a hardware GPU)
 *   workers    most module instances for the CPU network (default: cores, capped by memory)
 *   threshold  number in (0, 1), default 0.5                  (--threshold)
 *   crf        null (--no-crf) | { CrfConfig fields, e.g. appearance_weight, smooth_weight,
 *              iterations, ...; missing ones keep their defaults } (--crf-config); omitted: defaults
 *   assume_hu  true takes values that do not look like HU as HU, recorded in the report as
 *              `hu_assumed` (--assume-hu); without it such scans are refused
 *   series     the Series Instance UID to read when the files hold several DICOM series
 *              (--series); without it such files are refused with the list (`ERROR.series`)
 *
 * Everything but `backend`, `workers` and `series` (the reader's) goes to the core as is, which
 * refuses unknown names and bad values with the CLI's sentences.
 */

/**
 * The result, one shape for the ES module, `Segmenter.run` and the iframe protocol:
 *
 *   { report, mask_nifti: Uint8Array (.nii.gz in the input's grid, the CLI's -o bytes),
 *     mask_seg?: Uint8Array (a binary DICOM Segmentation of the source series, the CLI's
 *                --seg-out bytes; present only for a DICOM input) }
 *
 * `report` is exactly what `ichnet segment --json` prints (snake_case: volume_ml, abc2, brain_ml,
 * timings: [{ stage, ms }], warnings, ...), its `timings` measured by the browser's clock for the
 * core's own stage names, plus the browser's fields: `backend`, `backend_note` (why not WebGPU,
 * when so), `workers` (module instances that ran the network), `wasm_memory_bytes` (peak of the
 * coordinating worker), `helper_wasm_memory_bytes` (largest helper's peak, with workers > 1), `browser_timings` ([{ stage: "engine" | "warmup", ms }]: loading the
 * network, and WebGPU's first run on a dummy batch of the scan's shape), `known_answer`
 * ({ max_diff, tolerance }, WebGPU only).
 */

/**
 * The signed result: the reader's review of a result, the same shape as the result above, its
 * report updated by the core for the edited mask:
 *
 *   { report, mask_nifti }   report.volume_ml, abc2, haematomas, slices_with_blood: the final
 *                            (edited) mask's; report.review: { model_volume_ml, final_volume_ml,
 *                            edited_voxels, added_voxels, removed_voxels, signed, reader,
 *                            signed_at }; mask_nifti: the edited mask, .nii.gz in the input grid.
 *
 * `reader` is the reader's own name or initials (the sign-off); no patient identity is in it.
 */

/**
 * The comparison of a baseline and a follow-up (issue 15), one shape for the ES module's
 * `compare()` and `Segmenter.compare`:
 *
 *   { report, baseline: { report, mask_nifti }, followup: { report, mask_nifti },
 *     followup_in_baseline_nifti: Uint8Array (.nii.gz: the follow-up's mask resampled onto the
 *                                  baseline's grid through the registration; display only) }
 *
 * `report` is exactly what `ichnet compare --json` prints: `{ comparison, baseline, followup,
 * seconds }`. `comparison`: baseline_ml, followup_ml, delta_ml, delta_percent, expansion
 * ({ expanded, growth_ml, relative, ... } and its criteria: ≥ 6 mL, ≥ 33 %; ≥ 12.5 mL reported
 * beside), verdict (a sentence), haematomas ([{ id, status: "persisting" | "new" |
 * "disappeared", baseline_ml, followup_ml, delta_ml, delta_percent, expansion, components,
 * centre_mm }]), new, disappeared (ids), registration ({ transform: { angles_deg,
 * translation_mm, centre_mm }, similarity, quality: { ncc, fov_overlap, brain_overlap, poor,
 * reason }, levels }). `baseline` / `followup`: each scan's result report (the result above,
 * each segmented on its own grid exactly as a single scan is). `seconds`: segment_baseline,
 * segment_followup, register_and_compare, by the browser's clock. Plus one browser field:
 * `masks: { baseline, followup }`, "model" or "reader": whose mask each figure is (the page
 * compares the reader's current mask when the reader edited the baseline before adding the
 * follow-up; the ES module always compares the model's).
 *
 * Comparison options: the segmentation options above (both scans get the same), plus
 * `similarity`: "mi" (mutual information, default) | "ncc", as `ichnet compare --similarity`.
 */

/** Messages to the worker. */
export const ToWorker = Object.freeze({
  /**
   * `{ type, id, files: [{ name, bytes: ArrayBuffer }], options }`; bytes transferred. `files`:
   * one .nii/.nii.gz, a .hdr with its .img, the files of a DICOM series (or several, with
   * `options.series`), or .zip files of them.
   */
  SEGMENT: "segment",
  /**
   * To a helper worker (same file, another module instance): `{ type, id, x: Float32Array,
   * shape: [n, c, h, w] }` (buffer transferred): run the network on one batch on the CPU.
   */
  BATCH: "batch",
  /**
   * To a helper worker: `{ type, id, module? }` (`module`: the coordinating worker's compiled
   * `WebAssembly.Module`): load the module and the CPU engine now and run a dummy batch, while
   * the coordinating worker reads the scan, so the helper's first batch does not wait for them.
   * Answered by `FromWorker.PREPARED` with the same `id` (or `ERROR`).
   */
  WARM: "warm",
  /**
   * `{ type, req, options: { backend?, workers? } }`: get ready for a first scan before it comes
   * (module, weights, engine; on the CPU path the helper workers and a dummy batch through each),
   * so the first scan runs as fast as the next. Answered by `FromWorker.PREPARED` (or `ERROR`).
   */
  PREPARE: "prepare",
  /**
   * `{ type, id, req, mask: Uint8Array (file order, 0/1) | null (the model's), reader?,
   * signed_at? }`: measure the reader's edit of result `id` with the core's code; with `reader`
   * (name or initials) and `signed_at` (ISO 8601), sign it. Answered by `FromWorker.REVIEWED`
   * (or `ERROR`) with the same `req`.
   */
  REVIEW: "review",
  /** `{ type, id, req }`: the scan of result `id` as NIfTI on its own grid (`FromWorker.SCAN`). */
  SCAN: "scan",
  /**
   * `{ type, id, baseline: { files } | { result: ID }, followup: { files }, baseline_mask:
   * Uint8Array | null, options }`: segment the scans given as files (each as `SEGMENT` would:
   * progress and volume messages carry `scan: "baseline" | "followup"`), register the follow-up
   * to the baseline and compare them. `{ result: ID }` reuses a result still open for review (the
   * page's "add follow-up"); `baseline_mask` (file order, 0/1) is the reader's mask of it, null
   * for the model's. Buffers transferred. Answered by `FromWorker.COMPARED` (or `ERROR`, whose
   * message names the scan it is about).
   */
  COMPARE: "compare",
});

/** Messages from the worker. */
export const FromWorker = Object.freeze({
  /**
   * `{ type, id, stage, index, count, done, total, scan? }`: `stage` is the core's stage name (or
   * `Stage.LOADING` / `Stage.REGISTER` / `Stage.DONE`), stage `index` of `count`, `done`/`total`
   * units within it; `scan` (`Scan.BASELINE` / `Scan.FOLLOWUP`) in a comparison.
   */
  PROGRESS: "progress",
  /**
   * `{ type, id, info, warnings, dims: [nz, ny, nx], spacing: [z, y, x], hu: Float32Array, scan? }`
   * (buffer transferred): the scan, read and in canonical order, so the viewer can show it while
   * the network runs. `info` is `ichnet info --json`.
   */
  VOLUME: "volume",
  /**
   * `{ type, id, report, mask: Uint8Array (the input file's voxel order, i fastest: what a
   * viewer of that file draws on), mask_nifti: Uint8Array, mask_seg?: Uint8Array (DICOM input) }`
   * (buffers transferred).
   */
  RESULT: "result",
  /**
   * `{ type, id, req, fields, mask_nifti }`: a reviewed mask. `fields` = the report's fields that
   * change with the mask (`volume_ml`, `abc2`, `haematomas`, `slices_with_blood`) plus `review`
   * (see "The signed result" above); `mask_nifti` the mask file (buffer transferred).
   */
  REVIEWED: "reviewed",
  /** `{ type, id, req, bytes: Uint8Array }`: the scan as .nii.gz on its own grid. */
  SCAN: "scan",
  /**
   * `{ type, id, report, baseline, followup, followup_in_baseline: Uint8Array (the follow-up's
   * mask on the baseline's grid, baseline file order, 0/1), followup_in_baseline_nifti,
   * baseline_to_followup, followup_to_baseline }`: `report` as "The comparison" above;
   * `baseline` / `followup`: `{ id, report, mask, mask_nifti, mask_seg? }` as `RESULT` (`id`:
   * the key `REVIEW` and `SCAN` take for that scan); the two maps: world (RAS+ mm) to world,
   * 4×4 affines row by row (16 numbers), for linked views. Buffers transferred.
   */
  COMPARED: "compared",
  /** `{ type, req, backend, workers }`: `PREPARE` is done: the engine's label and the module instances. */
  PREPARED: "prepared",
  /** `{ type, id, probs: Float32Array, memory }` from a helper: one batch's probabilities, its wasm memory. */
  BATCH: "batch",
  /**
   * `{ type, id, req?, message, fatal, series? }`: a sentence for the user; the worker stays
   * usable unless fatal. `series` (several DICOM series and none chosen): `[{ uid, number,
   * description, modality, images, rows, cols }]`, to choose from and run again with
   * `options.series`.
   */
  ERROR: "error",
});

/**
 * Progress stages of the page's own, around the core's stages (whose names come from the core:
 * `Job.stages()`, the same names as the CLI report's `timings`).
 */
export const Stage = Object.freeze({
  LOADING: "loading",
  /** A comparison's registration of the follow-up to the baseline, and the comparison. */
  REGISTER: "register",
  DONE: "done",
});

/** Which scan of a comparison a progress or volume message is about (`scan` field). */
export const Scan = Object.freeze({
  BASELINE: "baseline",
  FOLLOWUP: "followup",
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
  /**
   * host -> iframe: `{ type, id, name, bytes: ArrayBuffer, options }`, or `{ type, id, files:
   * [{ name, bytes: ArrayBuffer }], options }` for a DICOM series / several files (buffers
   * transferred; options as above).
   */
  SEGMENT: "ichnet:segment",
  /** host -> iframe: `{ type, id }`: stop the work for `id`. */
  CANCEL: "ichnet:cancel",
  /** iframe -> host: `{ type, id, stage, index, count, done, total }`. */
  PROGRESS: "ichnet:progress",
  /** iframe -> host: `{ type, id, report, mask_nifti, mask_seg? }`: the result above (buffers transferred). */
  RESULT: "ichnet:result",
  /** iframe -> host: `{ type, id, message, series? }` (`series` as in `FromWorker.ERROR`). */
  ERROR: "ichnet:error",
  /**
   * iframe -> host, when the reader signs the result of `id` in the app: `{ type, id, report,
   * mask_nifti }`, the signed result above (buffer transferred).
   */
  SIGNED: "ichnet:signed",
});
