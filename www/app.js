// The page: choose a scan, watch the progress, look at the result, download it. All the work is in
// the worker (through `Segmenter`); this file only wires the UI, so the main thread stays free.
//
// After a result the reader can correct the mask in the viewer (NiiVue's pen, erase, fill; undo and
// redo); every edit is measured by the core, in the worker, exactly as the model's mask was, and
// the reader signs the final mask. Downloads are always the mask and report on screen.
//
// `index.html?embed=1&allow=ORIGIN[,ORIGIN...]` runs the same page inside a host's iframe: the
// host posts a scan (`Frame.SEGMENT`), the page shows it and posts the result back. Messages from
// origins not in the allow-list are ignored.

import { Segmenter } from "./embed.js";
import { displayName, droppedEntries, inputFiles, readPicked } from "./files.js";
import { Frame, Scan, Stage } from "./protocol.js";
import { Growth, PRESETS, ScanView, Tool } from "./view.js";

const SAMPLE_URL = new URL("samples/sample_head_ct_simulated_bleed.nii.gz", import.meta.url);
const SAMPLE_NAME = "sample (real CT, simulated bleed).nii.gz";

const $ = (id) => document.getElementById(id);
const ui = {
  drop: $("drop"),
  file: $("file"),
  folder: $("folder"),
  seriesPanel: $("series"),
  seriesList: $("series-list"),
  sample: $("sample"),
  crf: $("opt-crf"),
  crfAppearance: $("opt-crf-appearance"),
  crfSmooth: $("opt-crf-smooth"),
  threshold: $("opt-threshold"),
  assumeHu: $("opt-assume-hu"),
  backend: $("opt-backend"),
  status: $("status"),
  progress: $("progress"),
  stage: $("stage"),
  cancel: $("cancel"),
  error: $("error"),
  warnings: $("warnings"),
  viewerPanel: $("viewer-panel"),
  canvas: $("nv"),
  orientNote: $("orient-note"),
  winC: $("win-c"),
  winW: $("win-w"),
  ovOn: $("ov-on"),
  ovAlpha: $("ov-alpha"),
  penMm: $("pen-mm"),
  undo: $("undo"),
  redo: $("redo"),
  cursor: $("cursor"),
  results: $("results"),
  resName: $("res-name"),
  resList: $("res-list"),
  editSummary: $("edit-summary"),
  reader: $("reader"),
  sign: $("sign"),
  signed: $("signed"),
  dlMask: $("dl-mask"),
  dlReport: $("dl-report"),
  dlSeg: $("dl-seg"),
  followupFile: $("followup-file"),
  cmpBaseline: $("cmp-baseline"),
  cmpFollowup: $("cmp-followup"),
  cmpBaselineName: $("cmp-baseline-name"),
  cmpFollowupName: $("cmp-followup-name"),
  compare: $("compare"),
  cmpNames: $("cmp-names"),
  cmpVerdict: $("cmp-verdict"),
  cmpWarning: $("cmp-warning"),
  cmpNumbers: $("cmp-numbers"),
  cmpHaematomas: $("cmp-haematomas"),
  cmpRegistration: $("cmp-registration"),
  dlCmpReport: $("dl-cmp-report"),
  dlCmpOverlay: $("dl-cmp-overlay"),
  dlCmpFollowup: $("dl-cmp-followup"),
  followupView: $("followup-view"),
  followupCanvas: $("nv-followup"),
  cursorFollowup: $("cursor-followup"),
  nvTitle: $("nv-title"),
};

const segmenter = new Segmenter();
/** The viewer (NiiVue); exported so tests and embedding pages can reach its NiiVue instance. */
export const viewer = new ScanView(ui.canvas);
/** A comparison's follow-up, beside the baseline's viewer, its crosshair linked to it. */
export const followupViewer = new ScanView(ui.followupCanvas);
let abort = null;
let downloads = [];
/**
 * The result on screen: its file name, the model's report, the report and mask file of the mask
 * now shown (the model's until the reader edits), and the viewer's loading of the scan.
 */
let current = null;
/** Set in iframe mode: tells the host about a sign-off. */
let embedSigned = null;

/** Words for the core's stage names on the progress line; a name not listed is shown as is. */
const STAGE_WORDS = {
  read: "reading",
  brain: "brain mask",
  finish: "writing the mask",
  [Stage.LOADING]: "loading the engine",
  [Stage.REGISTER]: "registering the follow-up to the baseline and comparing",
};
/** A comparison's scans on the progress line. */
const SCAN_WORDS = { [Scan.BASELINE]: "baseline", [Scan.FOLLOWUP]: "follow-up" };
/**
 * The comparison on screen: the two world maps (4×4, row by row) that link the views, and the
 * downloads' object URLs.
 */
let comparing = null;

/**
 * The options panel as the segmentation options of protocol.js (the CLI's): a blank field keeps
 * the core's default, so no default is spelled twice.
 */
function currentOptions() {
  const num = (el) => (el.value.trim() === "" ? undefined : Number(el.value));
  const options = { backend: ui.backend.value };
  const threshold = num(ui.threshold);
  if (threshold !== undefined) options.threshold = threshold;
  if (!ui.crf.checked) {
    options.crf = null;
  } else {
    const crf = {};
    const appearance = num(ui.crfAppearance);
    const smooth = num(ui.crfSmooth);
    if (appearance !== undefined) crf.appearance_weight = appearance;
    if (smooth !== undefined) crf.smooth_weight = smooth;
    if (Object.keys(crf).length) options.crf = crf;
  }
  if (ui.assumeHu.checked) options.assume_hu = true;
  return options;
}

function setState(state) {
  document.body.dataset.state = state;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function clearMessages() {
  ui.error.hidden = true;
  ui.error.textContent = "";
  ui.warnings.hidden = true;
  ui.warnings.textContent = "";
}

function showProgress({ stage, index, count, done, total, scan }) {
  const frac = total > 0 ? done / total : 0;
  ui.progress.value = count > 0 ? Math.min(1, (index + frac) / count) : 0;
  let text = STAGE_WORDS[stage] ?? stage;
  if (total > 0) text = `${text}: batch ${done}/${total}`;
  if (scan) text = `${SCAN_WORDS[scan] ?? scan}: ${text}`;
  ui.stage.textContent = text;
}

/** Show notes (reader and report warnings), each once. */
function showWarnings(list) {
  const seen = new Set([...ui.warnings.children].map((p) => p.textContent));
  const fresh = (list ?? []).map((w) => `Note: ${w}`).filter((t) => !seen.has(t));
  if (!fresh.length) return;
  ui.warnings.append(...fresh.map((t) => Object.assign(document.createElement("p"), { textContent: t })));
  ui.warnings.hidden = false;
}

/**
 * The scan was read by the core: show it in the viewer from the bytes the user opened (NiiVue
 * reads them itself). Returns the loading's promise; null when NiiVue could not read them (the
 * result then brings the core's NIfTI of the scan instead).
 */
function showVolume(msg, view) {
  ui.viewerPanel.hidden = false;
  // A file with voxel sizes only has no orientation: left and right are unknown ("?").
  const orientationKnown = msg.info?.orientation_known ?? msg.info?.affine_source !== "pixdim";
  ui.orientNote.hidden = orientationKnown;
  view.orientationKnown = orientationKnown;
  // A DICOM series or a .zip: the viewer shows the core's NIfTI of the scan (showResult).
  if (!view.source) {
    view.loading = Promise.resolve(false);
    showWarnings(msg.warnings);
    return;
  }
  view.loading = viewer.setScan({ ...view.source, orientationKnown }).then(
    () => true,
    (e) => {
      console.warn(`the viewer could not read the file itself (${e.message}); showing the core's copy`);
      return false;
    },
  );
  showWarnings(msg.warnings);
}

const fmt = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "–");

/** Point the download links at this mask file and report. */
/**
 * Point the download links at this mask file and report; `maskSeg` (a DICOM input's SEG of the
 * model's mask) only with the model's result: after an edit it would not hold the reader's mask,
 * so its link goes away and the edited mask downloads as NIfTI.
 */
function setDownloads(name, maskNifti, report, maskSeg = null) {
  for (const url of downloads) URL.revokeObjectURL(url);
  const base = name.replace(/ \(\d+ files\)$/, "").replace(/\/$/, "").replace(/\.(nii\.gz|nii|hdr|img|zip|dcm)$/i, "") || "scan";
  const maskUrl = URL.createObjectURL(new Blob([maskNifti], { type: "application/gzip" }));
  const reportUrl = URL.createObjectURL(new Blob([JSON.stringify(report, null, 2)], { type: "application/json" }));
  downloads = [maskUrl, reportUrl];
  ui.dlSeg.hidden = !maskSeg;
  if (maskSeg) {
    const segUrl = URL.createObjectURL(new Blob([maskSeg], { type: "application/dicom" }));
    downloads.push(segUrl);
    ui.dlSeg.href = segUrl;
    ui.dlSeg.download = `${base}_ich_seg.dcm`;
  }
  ui.dlMask.href = maskUrl;
  ui.dlMask.download = `${base}_ich_mask.nii.gz`;
  ui.dlReport.href = reportUrl;
  ui.dlReport.download = `${base}_ich_report.json`;
}

async function showResult(name, { mask, mask_nifti, mask_seg, report }, view) {
  current = { name, model: report, report, maskNifti: mask_nifti, edits: 0, measured: 0, queue: Promise.resolve() };
  setDownloads(name, mask_nifti, report, mask_seg);
  // The report's warnings include the reader's and those found later (brain volume, say).
  showWarnings(report.warnings);
  showReport(report);
  ui.resName.textContent = name;
  ui.reader.value = "";
  ui.signed.hidden = true;
  ui.results.hidden = false;
  document.body.dataset.review = "model";
  // The scan in the viewer, then the mask as its drawing layer. A viewer failure costs the
  // picture, not the result: the numbers and downloads above stand.
  try {
    if (!(await view.loading)) {
      const bytes = await segmenter.scanNifti();
      await viewer.setScan({ bytes: bytes.buffer, name: "scan.nii.gz", orientationKnown: view.orientationKnown });
    }
    viewer.setMask(mask);
    goToHaematoma(report.haematomas?.[0]);
  } catch (e) {
    showWarnings([`the viewer could not show this scan (${e.message}); the result and downloads are unaffected`]);
  }
  updateUndo();
}

/** The numbers of a report: the list, the edit summary and the haematoma table. */
function showReport(report) {
  const abc = report.abc2 ?? {};
  const times = [...(report.browser_timings ?? []), ...(report.timings ?? [])].map(({ stage, ms }) => `${stage} ${ms} ms`).join(", ");
  const crf = report.crf ? "on" : "off";
  const review = report.review;
  const rows = [
    ["Haemorrhage volume", `${fmt(report.volume_ml)} mL`, true],
    ...(review?.edited_voxels ? [["Model's volume", `${fmt(review.model_volume_ml)} mL (before the reader's edits)`]] : []),
    ["ABC/2 (largest haematoma)", `${fmt(abc.ml)} mL (A ${fmt(abc.a_mm / 10)} cm × B ${fmt(abc.b_mm / 10)} cm × C ${fmt(abc.c_mm / 10)} cm / 2)`],
    ["Slices with blood", String(report.slices_with_blood ?? "–")],
    ["Brain volume", `${fmt(report.brain_ml, 0)} mL`],
    ["CRF", crf],
    ...(report.hu_assumed ? [["Hounsfield units", "assumed because you said so: the values did not look like HU, so every mL figure rests on that"]] : []),
    ...(report.orientation_known === false ? [["Left / right", "unknown: the file does not say which side is which"]] : []),
    ["Threshold", String(report.threshold ?? "–")],
    ["Backend", `${report.backend}${report.workers > 1 ? ` × ${report.workers} workers` : ""}${report.backend_note ? ` (${report.backend_note})` : ""}`],
    ["Time", times],
  ];
  fillList(ui.resList, rows);
  ui.editSummary.textContent = review
    ? `Reader's edits: ${review.added_voxels} voxels added, ${review.removed_voxels} removed (model ${fmt(review.model_volume_ml, 2)} mL → final ${fmt(review.final_volume_ml, 2)} mL).`
    : "The model's mask, unedited. Correct it with the pen, eraser or fill, then sign.";
  showHaematomas(report.haematomas ?? []);
}

// ---- Review: edits measured by the core, then sign-off. ----

/**
 * After an edit (or undo/redo): the core measures the mask shown, and the page shows and
 * offers for download what it says. Edits are measured in order; `data-measured` counts them
 * (tests wait on it), and a signature is void once the mask changes.
 */
function onEdit(mask) {
  if (!current) return;
  const mine = current;
  const n = ++mine.edits;
  document.body.dataset.review = "measuring";
  mine.queue = mine.queue.then(async () => {
    try {
      const { report, mask_nifti } = await segmenter.review(mask);
      if (current !== mine) return;
      mine.report = report;
      mine.maskNifti = mask_nifti;
      showReport(report);
      setDownloads(mine.name, mask_nifti, report);
      ui.signed.hidden = true;
    } catch (e) {
      if (current === mine) showError(`the edit could not be measured: ${e.message}`);
    } finally {
      if (current === mine) {
        mine.measured = n;
        document.body.dataset.measured = String(n);
        if (mine.measured === mine.edits) document.body.dataset.review = "edited";
      }
    }
  });
  updateUndo();
}

function updateUndo() {
  ui.undo.disabled = !viewer.canUndo;
  ui.redo.disabled = !viewer.canRedo;
}

/** The reader accepts the mask shown: the core records who, when, and model against final. */
async function signOff() {
  if (!current) return;
  const mine = current;
  await mine.queue;
  try {
    const { report, mask_nifti } = await segmenter.review(viewer.mask(), { reader: ui.reader.value });
    if (current !== mine) return;
    mine.report = report;
    mine.maskNifti = mask_nifti;
    showReport(report);
    setDownloads(mine.name, mask_nifti, report);
    const r = report.review;
    ui.signed.textContent = `Signed by ${r.reader} at ${r.signed_at}: final ${fmt(r.final_volume_ml, 2)} mL (model ${fmt(r.model_volume_ml, 2)} mL, ${r.edited_voxels} voxels edited).`;
    ui.signed.hidden = false;
    ui.error.hidden = true;
    document.body.dataset.review = "signed";
    embedSigned?.({ report, mask_nifti });
  } catch (e) {
    showError(e.message);
  }
}

/** Move the viewer to a haematoma: the slice where A and B were measured, at its centroid. */
function goToHaematoma(h) {
  if (!h) return;
  // The report's voxels are the core's stack (x → right, y → anterior, z → superior, the axes
  // closest to the file's); NiiVue's display grid is the same closest-axis RAS reorientation.
  const [z, y, x] = h.centroid.map(Math.round);
  viewer.goToVoxel([x, y, h.abc2?.slice ?? z]);
}

// ---- Per-haematoma list (issue 13): one row per connected component, a click goes to it. ----

/** How the report's sides read on the page (the viewer shows the patient's right on the left). */
const SIDE_LABEL = { left: "left", right: "right", midline: "midline", unknown: "side unknown" };

/** The table of haematomas under the result list; created on first use, replaced on each result. */
function showHaematomas(list) {
  let table = document.getElementById("res-haematomas");
  if (!table) {
    table = Object.assign(document.createElement("table"), { id: "res-haematomas", className: "haematomas" });
    table.setAttribute("aria-label", "Haematomas, largest first; choose one to show it");
    ui.resList.after(table);
  }
  table.hidden = list.length === 0;
  fillTable(table, ["#", "Volume", "Side", "Slices", "ABC/2", "A × B × C"], list, (h) => {
    const a = h.abc2 ?? {};
    return [
      String(h.id),
      `${fmt(h.volume_ml, 2)} mL`,
      SIDE_LABEL[h.side] ?? h.side,
      `${h.slice_range[0] + 1}–${h.slice_range[1] + 1}`,
      `${fmt(a.ml, 1)} mL`,
      `${fmt(a.a_mm / 10)} × ${fmt(a.b_mm / 10)} × ${fmt(a.c_mm / 10)} cm`,
    ];
  }, goToHaematoma);
}

/**
 * A table of haematomas: `head`, then a row per item with `cells(item)`; a click or Enter on a
 * row calls `go(item)` and marks the row.
 */
function fillTable(table, head, list, cells, go) {
  const top = document.createElement("tr");
  for (const h of head) top.append(Object.assign(document.createElement("th"), { textContent: h }));
  const rows = list.map((item) => {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.append(...cells(item).map((t) => Object.assign(document.createElement("td"), { textContent: t })));
    const choose = () => {
      go(item);
      for (const r of table.querySelectorAll("tr.current")) r.classList.remove("current");
      tr.classList.add("current");
    };
    tr.addEventListener("click", choose);
    tr.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        choose();
      }
    });
    return tr;
  });
  table.replaceChildren(top, ...rows);
}

/** A `<dl>` of `[term, value, big?]` rows. */
function fillList(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([k, v, big]) => {
    const dt = Object.assign(document.createElement("dt"), { textContent: k });
    const dd = Object.assign(document.createElement("dd"), { textContent: v });
    if (big) dd.className = "big";
    return [dt, dd];
  }));
}

/**
 * One job in the worker with the page's progress, cancel and error handling: `work(signal)`
 * does it and shows the result. Returns what `work` returns, or null when it failed or was
 * cancelled (the message is already on the page). Safe to call again at once: the page never
 * gets stuck. `onSeries(list)`: the files held several DICOM series and none was chosen.
 */
async function withJob(displayName, work, { onSeries } = {}) {
  abort?.abort();
  clearMessages();
  ui.results.hidden = true;
  ui.compare.hidden = true;
  ui.seriesPanel.hidden = true;
  current = null;
  delete document.body.dataset.review;
  delete document.body.dataset.measured;
  ui.status.hidden = false;
  ui.cancel.disabled = false;
  ui.sample.disabled = true;
  setState("running");
  abort = new AbortController();
  const mine = abort;
  try {
    const result = await work(mine.signal);
    setState("done");
    return result;
  } catch (e) {
    if (e.name === "AbortError") {
      ui.stage.textContent = "cancelled";
      setState("cancelled");
      // Cancelling ended the worker and its engine: load a fresh one for the next scan.
      prepareEngine();
    } else {
      showError(`${displayName}: ${e.message}`);
      if (!ui.results.hidden) ui.results.hidden = true;
      if (e.series && onSeries) onSeries(e.series);
      setState("error");
    }
    return null;
  } finally {
    if (abort === mine) abort = null;
    ui.cancel.disabled = true;
    ui.sample.disabled = false;
  }
}

/** What the viewer can read itself (a NIfTI, a .hdr/.img pair): its own copy of the bytes (the worker's are transferred), or null. */
function viewerSource(list) {
  const viewable = (n) => /\.(nii|nii\.gz|hdr|img)$/i.test(n);
  const [scan, img] = list;
  const direct = list.length <= 2 && list.every((f) => viewable(f.name));
  return direct ? { bytes: scan.bytes.slice(0), name: scan.name, img: img ? img.bytes.slice(0) : null } : null;
}

/**
 * Run one scan through the worker. Returns the result, or null when it failed or was cancelled.
 * `files` is the `[{ name, bytes }]` list or a thunk that reads it (`() => Promise<list>`):
 * reading hundreds of DICOM files is part of the run, with its own progress, and is cancelled
 * with it.
 */
async function run(files, displayName, { onProgress, options = currentOptions(), onSeries } = {}) {
  return withJob(displayName, async (signal) => {
    setMode("single");
    const list = typeof files === "function" ? await files() : files;
    if (signal.aborted) throw Object.assign(new Error("cancelled"), { name: "AbortError" });
    // The viewer reads a NIfTI (or a .hdr/.img pair) itself; anything else it gets from the core
    // as NIfTI once the result is in.
    const view = { source: viewerSource(list), loading: Promise.resolve(false), orientationKnown: true };
    const result = await segmenter.run(list, {
      ...options,
      signal,
      onProgress: (p) => {
        showProgress(p);
        onProgress?.(p);
      },
      onVolume: (msg) => showVolume(msg, view),
    });
    await showResult(displayName, result, view);
    return result;
  }, { onSeries });
}

// ---- Follow-up comparison (issue 15): two scans, linked views, growth in colour, the verdict. ----

/** "single": one scan, editable; "compare": baseline and follow-up side by side, read-only. */
function setMode(mode) {
  document.body.dataset.mode = mode;
  const compare = mode === "compare";
  ui.followupView.hidden = !compare;
  ui.nvTitle.hidden = !compare;
  if (!compare) {
    comparing = null;
    chooseTool(Tool.NAVIGATE);
  }
}

/** Row-major 4×4 affine `m` applied to the point `p`. */
const apply = (m, p) => [0, 1, 2].map((r) => m[4 * r] * p[0] + m[4 * r + 1] * p[1] + m[4 * r + 2] * p[2] + m[4 * r + 3]);

/**
 * The scan of a comparison in `view`: from the user's bytes where the viewer reads them, else
 * the core's NIfTI of it (result `id`).
 */
async function loadScan(view, source, id) {
  if (source) {
    try {
      await view.setScan(source);
      return;
    } catch (e) {
      console.warn(`the viewer could not read the file itself (${e.message}); showing the core's copy`);
    }
  }
  const bytes = await segmenter.scanNifti(id);
  await view.setScan({ bytes: bytes.buffer, name: "scan.nii.gz" });
}

/** The baseline's overlay: blood on both scans, new on the follow-up, resolved (file order). */
function growthLabels(baseline, followupInBaseline) {
  const out = new Uint8Array(baseline.length);
  for (let i = 0; i < out.length; i++) {
    const b = baseline[i] !== 0;
    const f = followupInBaseline[i] !== 0;
    out[i] = b && f ? Growth.PERSISTING : f ? Growth.NEW : b ? Growth.RESOLVED : 0;
  }
  return out;
}

/**
 * Compare a follow-up with a baseline. `baseline`: `{ pick }` (files.js picks, read here) or
 * `{ last: true }` for the result on screen, whose reader's mask is compared when edited.
 */
async function runCompare(baseline, followupPick, names) {
  // The result on screen, before `withJob` clears it: its viewer already shows the baseline.
  const onScreen = baseline.last ? current : null;
  const edited = onScreen && onScreen.edits > 0 ? viewer.mask() : null;
  const displayName = `${names.baseline} → ${names.followup}`;
  return withJob(displayName, async (signal) => {
    const read = async (pick, what) => {
      try {
        return await readPicked(pick, readProgress);
      } catch (e) {
        throw new Error(`the ${what} scan: ${e.message}`);
      }
    };
    const baseList = baseline.pick ? await read(baseline.pick, "baseline") : null;
    const followList = await read(followupPick, "follow-up");
    if (signal.aborted) throw Object.assign(new Error("cancelled"), { name: "AbortError" });
    const sources = { baseline: baseList ? viewerSource(baseList) : null, followup: viewerSource(followList) };
    const options = currentOptions();
    const m = await segmenter.compare(baseList, followList, { ...options, signal, baselineMask: edited, onProgress: showProgress });
    await showComparison(m, sources, names, !baseList);
    return m;
  });
}

/** The comparison on screen: verdict and numbers, then the two views, linked. */
async function showComparison(m, sources, names, baselineShown) {
  const { report } = m;
  const c = report.comparison;
  setMode("compare");
  comparing = { toFollowup: m.baseline_to_followup, toBaseline: m.followup_to_baseline };
  ui.cmpNames.textContent = `${names.baseline} → ${names.followup}`;
  ui.cmpVerdict.textContent = c.verdict;
  ui.cmpVerdict.dataset.expanded = String(c.expansion.expanded);
  const e = c.expansion;
  const pct = (x) => (Number.isFinite(x) ? `${x >= 0 ? "+" : ""}${x.toFixed(0)} %` : "–");
  const signed = (x, d = 1) => `${x >= 0 ? "+" : ""}${fmt(x, d)}`;
  const whose = (w) => (w === "reader" ? "the reader's edited mask" : "the model's mask");
  const rows = [
    ["Baseline", `${fmt(c.baseline_ml)} mL`],
    ["Follow-up", `${fmt(c.followup_ml)} mL`],
    ["Change", `${signed(c.delta_ml)} mL (${pct(c.delta_percent)})`, true],
    ["Expansion (≥ 6 mL or ≥ 33 %)", e.expanded ? `yes: ${[e.by_6_ml && "≥ 6 mL", e.by_33_percent && "≥ 33 %"].filter(Boolean).join(" and ")}` : "no"],
    ["≥ 12.5 mL (reported beside)", e.by_12_5_ml ? "yes" : "no"],
    ["New / disappeared haematomas", `${c.new.length} / ${c.disappeared.length}`],
    ["Masks compared", `baseline: ${whose(report.masks?.baseline)}; follow-up: ${whose(report.masks?.followup)}`],
    ["Time", `segmentation ${fmt(report.seconds.segment_baseline)} s + ${fmt(report.seconds.segment_followup)} s, registration and comparison ${fmt(report.seconds.register_and_compare)} s`],
  ];
  fillList(ui.cmpNumbers, rows);
  const reg = c.registration;
  const t = reg.transform;
  const q = reg.quality;
  ui.cmpRegistration.textContent =
    `Registration (rigid, ${reg.similarity === "ncc" ? "NCC" : "mutual information"}): rotation ${t.angles_deg.map((a) => `${fmt(a)}°`).join(", ")}; ` +
    `translation ${t.translation_mm.map((v) => fmt(v)).join(", ")} mm; NCC ${fmt(q.ncc, 2)} on brain voxels; ` +
    `${fmt(100 * q.fov_overlap, 0)} % of the baseline brain covered by the follow-up, ${fmt(100 * q.brain_overlap, 0)} % of it in the follow-up's brain.`;
  ui.cmpWarning.hidden = !q.poor;
  ui.cmpWarning.textContent = q.poor
    ? `The registration is poor: ${q.reason ?? "see the figures below"}. Which haematoma is which, the colours and the linked views are unreliable; the volumes and the verdict on the totals are not affected.`
    : "";
  showGrowthTable(c.haematomas);
  setCompareDownloads(names, m);
  ui.compare.hidden = false;
  // The views: a viewer failure costs the picture, not the numbers and downloads above.
  try {
    if (!baselineShown || !viewer.voxelCount) await loadScan(viewer, sources.baseline, m.baseline.id);
    await loadScan(followupViewer, sources.followup, m.followup.id);
    viewer.setLabels(growthLabels(m.baseline.mask, m.followup_in_baseline));
    followupViewer.setMask(m.followup.mask);
    followupViewer.setTool(Tool.NAVIGATE);
    const first = c.haematomas[0];
    if (first) goToWorld(first.centre_mm);
  } catch (err) {
    showWarnings([`the viewer could not show the comparison (${err.message}); the numbers and downloads are unaffected`]);
  }
  document.body.dataset.linked = "true";
}

/** Both views to a point of the baseline's world (mm). */
function goToWorld(mm) {
  viewer.goToMm(mm);
  if (comparing) followupViewer.goToMm(apply(comparing.toFollowup, mm));
}

/** The per-haematoma table of a comparison; a click or Enter on a row shows it in both views. */
function showGrowthTable(list) {
  const head = ["#", "Status", "Baseline", "Follow-up", "Change", "Change %", "Expansion"];
  fillTable(ui.cmpHaematomas, head, list, (h) => {
    const e = h.expansion;
    const crit = [e.by_6_ml && "≥ 6 mL", e.by_33_percent && "≥ 33 %", e.by_12_5_ml && "≥ 12.5 mL"].filter(Boolean);
    return [
      String(h.id),
      h.status,
      `${fmt(h.baseline_ml, 2)} mL`,
      `${fmt(h.followup_ml, 2)} mL`,
      `${h.delta_ml >= 0 ? "+" : ""}${fmt(h.delta_ml, 2)} mL`,
      Number.isFinite(h.delta_percent) ? `${h.delta_percent >= 0 ? "+" : ""}${h.delta_percent.toFixed(0)} %` : "–",
      e.expanded ? crit.join(", ") : "no",
    ];
  }, (h) => goToWorld(h.centre_mm));
}

/** The comparison's downloads: the report, the follow-up's mask on the baseline's grid and on its own. */
function setCompareDownloads(names, m) {
  for (const url of downloads) URL.revokeObjectURL(url);
  const base = (n) => n.replace(/ \(\d+ files\)$/, "").replace(/\/$/, "").replace(/\.(nii\.gz|nii|hdr|img|zip|dcm)$/i, "") || "scan";
  const blob = (bytes, type) => URL.createObjectURL(new Blob([bytes], { type }));
  const report = blob(JSON.stringify(m.report, null, 2), "application/json");
  const overlay = blob(m.followup_in_baseline_nifti, "application/gzip");
  const follow = blob(m.followup.mask_nifti, "application/gzip");
  downloads = [report, overlay, follow];
  ui.dlCmpReport.href = report;
  ui.dlCmpReport.download = `${base(names.baseline)}_vs_${base(names.followup)}_comparison.json`;
  ui.dlCmpOverlay.href = overlay;
  ui.dlCmpOverlay.download = `${base(names.followup)}_ich_mask_in_baseline.nii.gz`;
  ui.dlCmpFollowup.href = follow;
  ui.dlCmpFollowup.download = `${base(names.followup)}_ich_mask.nii.gz`;
}

/** The two slots of the input panel: once both hold a scan, the comparison runs. */
const slots = { baseline: null, followup: null };

function fillSlot(which, picked) {
  if (!picked.length) return;
  slots[which] = picked;
  (which === "baseline" ? ui.cmpBaselineName : ui.cmpFollowupName).textContent = displayName(picked);
  if (slots.baseline && slots.followup) {
    const [b, f] = [slots.baseline, slots.followup];
    slots.baseline = slots.followup = null;
    ui.cmpBaselineName.textContent = ui.cmpFollowupName.textContent = "drop it here";
    runCompare({ pick: b }, f, { baseline: displayName(b), followup: displayName(f) });
  }
}

/** Reading the user's files, shown on the progress line (a DICOM folder is hundreds of files). */
const readProgress = (done, total) => {
  ui.progress.value = 0;
  ui.stage.textContent = `reading files: ${done}/${total}`;
};

/**
 * Segment what the user picked: `pick` resolves to `[{ file, path }]` (files.js). When the files
 * hold several DICOM series, the page lists them and runs again on the one the reader chooses.
 */
async function runPicked(pick, options = currentOptions()) {
  let picked;
  try {
    picked = await pick();
  } catch (e) {
    clearMessages();
    showError(`the dropped files could not be listed (${e.message})`);
    setState("error");
    return;
  }
  const name = picked.length ? displayName(picked) : "nothing";
  await run(() => readPicked(picked, readProgress), name, {
    options,
    onSeries: (series) => offerSeries(series, (uid) => runPicked(async () => picked, { ...options, series: uid })),
  });
}

/** The series of a multi-series drop, one button each: what a reader needs, no patient identity. */
function offerSeries(series, choose) {
  const items = series.map((s) => {
    const b = Object.assign(document.createElement("button"), { type: "button" });
    const what = [s.number != null ? `#${s.number}` : null, s.description || "(no description)", s.modality].filter(Boolean).join(" ");
    b.textContent = `${what}: ${s.images} images, ${s.cols}×${s.rows}`;
    b.dataset.uid = s.uid;
    b.addEventListener("click", () => {
      ui.seriesPanel.hidden = true;
      choose(s.uid);
    });
    const li = document.createElement("li");
    li.append(b);
    return li;
  });
  ui.seriesList.replaceChildren(...items);
  ui.seriesPanel.hidden = false;
}

async function runSample() {
  clearMessages();
  let bytes;
  try {
    const res = await fetch(SAMPLE_URL);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    bytes = await res.arrayBuffer();
  } catch (e) {
    showError(`the sample could not be loaded (${e.message})`);
    setState("error");
    return;
  }
  await run([{ name: SAMPLE_NAME, bytes }], SAMPLE_NAME);
}

function wireInput() {
  for (const input of [ui.file, ui.folder]) {
    input.addEventListener("change", () => {
      const picked = inputFiles(input.files ?? []);
      input.value = "";
      if (picked.length) runPicked(async () => picked);
    });
  }
  for (const [input, which] of [[ui.cmpBaseline, "baseline"], [ui.cmpFollowup, "followup"]]) {
    input.addEventListener("change", () => {
      const picked = inputFiles(input.files ?? []);
      input.value = "";
      fillSlot(which, picked);
    });
    const slot = input.closest(".slot");
    for (const ev of ["dragenter", "dragover"]) {
      slot.addEventListener(ev, (e) => {
        e.preventDefault();
        slot.classList.add("over");
      });
    }
    for (const ev of ["dragleave", "drop"]) slot.addEventListener(ev, () => slot.classList.remove("over"));
    slot.addEventListener("drop", async (e) => {
      e.preventDefault();
      // Taken now: the drop's item list is emptied once this handler returns.
      const pick = droppedEntries(e.dataTransfer);
      try {
        fillSlot(which, await pick());
      } catch (err) {
        showError(`the dropped files could not be listed (${err.message})`);
      }
    });
  }
  ui.followupFile.addEventListener("change", () => {
    const picked = inputFiles(ui.followupFile.files ?? []);
    ui.followupFile.value = "";
    if (picked.length && current) runCompare({ last: true }, picked, { baseline: current.name, followup: displayName(picked) });
  });
  ui.sample.addEventListener("click", runSample);
  ui.cancel.addEventListener("click", () => abort?.abort());
  for (const ev of ["dragenter", "dragover"]) {
    ui.drop.addEventListener(ev, (e) => {
      e.preventDefault();
      ui.drop.classList.add("over");
    });
  }
  for (const ev of ["dragleave", "drop"]) ui.drop.addEventListener(ev, () => ui.drop.classList.remove("over"));
  ui.drop.addEventListener("drop", (e) => {
    e.preventDefault();
    // Taken now: the drop's item list is emptied once this handler returns.
    runPicked(droppedEntries(e.dataTransfer));
  });
  // A file dropped next to the drop zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

/** Keyboard shortcuts of the viewer (ignored while typing in a field). */
const SHORTCUTS = Object.freeze({
  n: () => chooseTool(Tool.NAVIGATE),
  Escape: () => chooseTool(Tool.NAVIGATE),
  d: () => chooseTool(Tool.PEN),
  e: () => chooseTool(Tool.ERASE),
  f: () => chooseTool(Tool.FILL),
  "[": () => stepPen(-1),
  "]": () => stepPen(1),
  1: () => setLayout("axial"),
  2: () => setLayout("coronal"),
  3: () => setLayout("sagittal"),
  4: () => setLayout("multi"),
  5: () => setLayout("render"),
});

/** The same layout in both views (the follow-up's only shows in a comparison). */
function setLayout(name) {
  viewer.setLayout(name);
  followupViewer.setLayout(name);
}

function chooseTool(tool) {
  // A comparison's views are read-only: edit the baseline before adding the follow-up.
  if (document.body.dataset.mode === "compare") tool = Tool.NAVIGATE;
  viewer.setTool(tool);
  for (const b of document.querySelectorAll("[data-tool]")) b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
}

function stepPen(mm) {
  ui.penMm.value = String(Math.max(0.5, Math.min(30, Number(ui.penMm.value) + mm)));
  viewer.setPenMm(Number(ui.penMm.value));
}

function wireViewer() {
  const applyWindow = (c, w) => {
    ui.winC.value = String(c);
    ui.winW.value = String(w);
    viewer.setWindow(c, w);
    followupViewer.setWindow(c, w);
  };
  for (const b of document.querySelectorAll("[data-preset]")) {
    b.addEventListener("click", () => applyWindow(...PRESETS[b.dataset.preset]));
  }
  const manual = () => {
    viewer.setWindow(Number(ui.winC.value), Number(ui.winW.value));
    followupViewer.setWindow(Number(ui.winC.value), Number(ui.winW.value));
  };
  ui.winC.addEventListener("input", manual);
  ui.winW.addEventListener("input", manual);
  const overlay = () => {
    for (const v of [viewer, followupViewer]) v.setOverlay({ visible: ui.ovOn.checked, opacity: Number(ui.ovAlpha.value) });
  };
  ui.ovOn.addEventListener("change", overlay);
  ui.ovAlpha.addEventListener("input", overlay);
  for (const b of document.querySelectorAll("[data-layout]")) b.addEventListener("click", () => setLayout(b.dataset.layout));
  for (const b of document.querySelectorAll("[data-zoom]")) {
    b.addEventListener("click", () => [viewer, followupViewer].forEach((v) => v.zoom(Number(b.dataset.zoom))));
  }
  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => chooseTool(b.dataset.tool));
  ui.penMm.addEventListener("input", () => viewer.setPenMm(Number(ui.penMm.value)));
  ui.undo.addEventListener("click", () => viewer.undo() && updateUndo());
  ui.redo.addEventListener("click", () => viewer.redo() && updateUndo());
  ui.sign.addEventListener("click", signOff);
  ui.reader.addEventListener("keydown", (e) => {
    if (e.key === "Enter") signOff();
  });
  viewer.onEdit = onEdit;
  // In a comparison the views follow each other through the registration: a move in one (a
  // click, the wheel, a row of the table) puts the other's crosshair on the same anatomy.
  viewer.onCursor = ({ vox, hu, mm, linked }) => {
    ui.cursor.textContent = `voxel (${vox.join(", ")}) ${Math.round(hu)} HU`;
    if (comparing && !linked) followupViewer.goToMm(apply(comparing.toFollowup, mm));
  };
  followupViewer.onCursor = ({ vox, hu, mm, linked }) => {
    ui.cursorFollowup.textContent = `voxel (${vox.join(", ")}) ${Math.round(hu)} HU`;
    if (comparing && !linked) viewer.goToMm(apply(comparing.toBaseline, mm));
  };
  document.addEventListener("keydown", (e) => {
    if (ui.viewerPanel.hidden || e.target.closest?.("input, select, textarea")) return;
    const ctrl = e.ctrlKey || e.metaKey;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    let act = null;
    if (ctrl && key === "z" && !e.shiftKey) act = () => viewer.undo();
    else if (ctrl && (key === "y" || (key === "z" && e.shiftKey))) act = () => viewer.redo();
    else if (!ctrl && !e.altKey) act = SHORTCUTS[key];
    if (!act) return;
    e.preventDefault();
    act();
    updateUndo();
  });
  viewer.setPenMm(Number(ui.penMm.value));
}

/** Iframe mode: the host's origin must be in `allow`; everything else is ignored. */
function wireEmbed(params) {
  document.body.classList.add("embed");
  const allowed = new Set((params.get("allow") ?? "").split(",").map((s) => s.trim()).filter(Boolean));
  if (window.parent === window || allowed.size === 0) return;
  let current = null;
  window.addEventListener("message", async (event) => {
    if (event.source !== window.parent || !allowed.has(event.origin)) {
      // Counted, not answered: a stranger learns nothing, and the count shows the check ran.
      document.body.dataset.ignored = String(Number(document.body.dataset.ignored ?? 0) + 1);
      return;
    }
    const msg = event.data ?? {};
    const reply = (m, transfer = []) => window.parent.postMessage(m, event.origin, transfer);
    if (msg.type === Frame.CANCEL && current === msg.id) {
      abort?.abort();
      return;
    }
    if (msg.type !== Frame.SEGMENT) return;
    const files = Array.isArray(msg.files)
      ? msg.files.filter((f) => f && f.bytes instanceof ArrayBuffer).map((f) => ({ name: String(f.name ?? "file"), bytes: f.bytes }))
      : msg.bytes instanceof ArrayBuffer ? [{ name: typeof msg.name === "string" ? msg.name : "scan.nii.gz", bytes: msg.bytes }] : [];
    if (files.length === 0) return;
    const id = msg.id;
    current = id;
    const name = typeof msg.name === "string" ? msg.name : files.length === 1 ? files[0].name : `${files.length} files`;
    // The host's options, as the ES module takes them (protocol.js); the core refuses bad ones.
    const options = { ...currentOptions(), ...(msg.options ?? {}) };
    let series = null;
    const result = await run(files, name, {
      onSeries: (list) => {
        series = list;
      },
      options,
      onProgress: (p) => reply({ type: Frame.PROGRESS, id, stage: p.stage, index: p.index, count: p.count, done: p.done, total: p.total }),
    });
    if (result) {
      const copy = result.mask_nifti.slice();
      const out = { type: Frame.RESULT, id, report: result.report, mask_nifti: copy };
      const transfer = [copy.buffer];
      if (result.mask_seg) {
        out.mask_seg = result.mask_seg.slice();
        transfer.push(out.mask_seg.buffer);
      }
      reply(out, transfer);
      // When the reader signs this result here, the host gets the signed result too.
      embedSigned = ({ report, mask_nifti }) => {
        if (current === null) return;
        const bytes = mask_nifti.slice();
        reply({ type: Frame.SIGNED, id, report, mask_nifti: bytes }, [bytes.buffer]);
      };
    } else {
      const message = document.body.dataset.state === "cancelled" ? "cancelled" : ui.error.textContent;
      reply({ type: Frame.ERROR, id, message, ...(series ? { series } : {}) });
    }
  });
  // Posting with an explicit target origin means only an allowed parent can hear us.
  for (const origin of allowed) window.parent.postMessage({ type: Frame.READY }, origin);
}

/**
 * Load the engine while the page waits for a file, so the first scan runs as fast as the next (a
 * fresh worker's first batches ran at a third to a half of their later speed, and its helpers
 * joined late). A failure is not shown here: the scan's own run meets it again and shows it.
 */
function prepareEngine() {
  const state = $("engine-state");
  document.body.dataset.engine = "loading";
  state.textContent = "Loading the engine…";
  segmenter.prepare({ backend: ui.backend.value }).then(
    ({ backend, workers }) => {
      document.body.dataset.engine = "ready";
      state.textContent = `Engine ready: ${backend}${workers > 1 ? ` × ${workers} workers` : ""}. Everything runs on this computer.`;
    },
    (e) => {
      document.body.dataset.engine = "failed";
      state.textContent = "The engine will load with the first scan.";
      console.warn(`the engine was not loaded ahead: ${e.message}`);
    },
  );
}

function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register(new URL("sw.js", import.meta.url)).catch((e) => {
    console.warn(`offline mode unavailable: ${e.message}`);
  });
}

wireInput();
wireViewer();
const params = new URLSearchParams(location.search);
if (params.get("embed") === "1") wireEmbed(params);
registerServiceWorker();
setState("idle");
prepareEngine();
ui.backend.addEventListener("change", prepareEngine);
