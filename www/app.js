// The page: choose a scan, watch the progress, look at the result, download it. All the work is in
// the worker (through `Segmenter`); this file only wires the UI, so the main thread stays free.
//
// `index.html?embed=1&allow=ORIGIN[,ORIGIN...]` runs the same page inside a host's iframe: the
// host posts a scan (`Frame.SEGMENT`), the page shows it and posts the result back. Messages from
// origins not in the allow-list are ignored.

import { Segmenter } from "./embed.js";
import { displayName, droppedEntries, inputFiles, readPicked } from "./files.js";
import { Frame, Stage } from "./protocol.js";
import { PRESETS, Viewer } from "./viewer.js";

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
  views: $("views"),
  winC: $("win-c"),
  winW: $("win-w"),
  ovOn: $("ov-on"),
  ovAlpha: $("ov-alpha"),
  cursor: $("cursor"),
  results: $("results"),
  resName: $("res-name"),
  resList: $("res-list"),
  dlMask: $("dl-mask"),
  dlReport: $("dl-report"),
  dlSeg: $("dl-seg"),
};

const segmenter = new Segmenter();
const viewer = new Viewer(ui.views);
let abort = null;
let downloads = [];

/** Words for the core's stage names on the progress line; a name not listed is shown as is. */
const STAGE_WORDS = { read: "reading", brain: "brain mask", finish: "writing the mask", [Stage.LOADING]: "loading the engine" };

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

function showProgress({ stage, index, count, done, total }) {
  const frac = total > 0 ? done / total : 0;
  ui.progress.value = count > 0 ? Math.min(1, (index + frac) / count) : 0;
  let text = STAGE_WORDS[stage] ?? stage;
  if (total > 0) text = `${text}: batch ${done}/${total}`;
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

function showVolume(msg) {
  ui.viewerPanel.hidden = false;
  ui.views.hidden = false;
  // A file with voxel sizes only has no orientation: left and right are unknown.
  const orientationKnown = msg.info?.orientation_known ?? msg.info?.affine_source !== "pixdim";
  viewer.setVolume({ dims: msg.dims, spacing: msg.spacing, hu: msg.hu, orientationKnown });
  showWarnings(msg.warnings);
}

const fmt = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "–");

function showResult(name, { mask, mask_nifti, mask_seg, report }) {
  viewer.setMask(mask);
  viewer.focusMask();
  for (const url of downloads) URL.revokeObjectURL(url);
  const base = name.replace(/ \(\d+ files\)$/, "").replace(/\/$/, "").replace(/\.(nii\.gz|nii|hdr|img|zip|dcm)$/i, "") || "scan";
  const maskUrl = URL.createObjectURL(new Blob([mask_nifti], { type: "application/gzip" }));
  const reportUrl = URL.createObjectURL(new Blob([JSON.stringify(report, null, 2)], { type: "application/json" }));
  downloads = [maskUrl, reportUrl];
  ui.dlSeg.hidden = !mask_seg;
  if (mask_seg) {
    // A DICOM input: the mask also as a DICOM Segmentation of the source series, for a PACS.
    const segUrl = URL.createObjectURL(new Blob([mask_seg], { type: "application/dicom" }));
    downloads.push(segUrl);
    ui.dlSeg.href = segUrl;
    ui.dlSeg.download = `${base}_ich_seg.dcm`;
  }
  ui.dlMask.href = maskUrl;
  ui.dlMask.download = `${base}_ich_mask.nii.gz`;
  ui.dlReport.href = reportUrl;
  ui.dlReport.download = `${base}_ich_report.json`;

  // The report's warnings include the reader's and those found later (brain volume, say).
  showWarnings(report.warnings);
  const abc = report.abc2 ?? {};
  const times = [...(report.browser_timings ?? []), ...(report.timings ?? [])].map(({ stage, ms }) => `${stage} ${ms} ms`).join(", ");
  const crf = report.crf ? "on" : "off";
  const rows = [
    ["Haemorrhage volume", `${fmt(report.volume_ml)} mL`, true],
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
  ui.resList.replaceChildren(...rows.flatMap(([k, v, big]) => {
    const dt = Object.assign(document.createElement("dt"), { textContent: k });
    const dd = Object.assign(document.createElement("dd"), { textContent: v });
    if (big) dd.className = "big";
    return [dt, dd];
  }));
  ui.resName.textContent = name;
  showHaematomas(report.haematomas ?? []);
  ui.results.hidden = false;
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
  const head = document.createElement("tr");
  for (const h of ["#", "Volume", "Side", "Slices", "ABC/2", "A × B × C"]) {
    head.append(Object.assign(document.createElement("th"), { textContent: h }));
  }
  const rows = list.map((h) => {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    const a = h.abc2 ?? {};
    const cells = [
      String(h.id),
      `${fmt(h.volume_ml, 2)} mL`,
      SIDE_LABEL[h.side] ?? h.side,
      `${h.slice_range[0] + 1}–${h.slice_range[1] + 1}`,
      `${fmt(a.ml, 1)} mL`,
      `${fmt(a.a_mm / 10)} × ${fmt(a.b_mm / 10)} × ${fmt(a.c_mm / 10)} cm`,
    ];
    tr.append(...cells.map((t) => Object.assign(document.createElement("td"), { textContent: t })));
    // The slice where A and B were measured, at the component's centroid in that plane.
    const go = () => {
      const [, y, x] = h.centroid.map(Math.round);
      viewer.goTo([a.slice ?? Math.round(h.centroid[0]), y, x]);
      for (const r of table.querySelectorAll("tr.current")) r.classList.remove("current");
      tr.classList.add("current");
    };
    tr.addEventListener("click", go);
    tr.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        go();
      }
    });
    return tr;
  });
  table.replaceChildren(head, ...rows);
}

/**
 * Run one scan through the worker. Returns the result, or null when it failed or was cancelled
 * (the message is already on the page). Safe to call again at once: the page never gets stuck.
 * `files` is a thunk (`() => Promise<[{ name, bytes }]>`) or the list itself: reading hundreds of
 * DICOM files is part of the run, with its own progress, and is cancelled with it.
 */
async function run(files, displayName, { onProgress, options = currentOptions(), onSeries } = {}) {
  abort?.abort();
  clearMessages();
  ui.results.hidden = true;
  ui.seriesPanel.hidden = true;
  viewer.setMask(null);
  ui.status.hidden = false;
  ui.cancel.disabled = false;
  ui.sample.disabled = true;
  setState("running");
  abort = new AbortController();
  const mine = abort;
  try {
    const list = typeof files === "function" ? await files() : files;
    if (mine.signal.aborted) throw Object.assign(new Error("cancelled"), { name: "AbortError" });
    const result = await segmenter.run(list, {
      ...options,
      signal: mine.signal,
      onProgress: (p) => {
        showProgress(p);
        onProgress?.(p);
      },
      onVolume: showVolume,
    });
    showResult(displayName, result);
    setState("done");
    return result;
  } catch (e) {
    if (e.name === "AbortError") {
      ui.stage.textContent = "cancelled";
      setState("cancelled");
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
  const buttons = series.map((s) => {
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
  ui.seriesList.replaceChildren(...buttons);
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

function wireViewer() {
  const applyWindow = (c, w) => {
    ui.winC.value = String(c);
    ui.winW.value = String(w);
    viewer.setWindow(c, w);
  };
  for (const b of document.querySelectorAll("[data-preset]")) {
    b.addEventListener("click", () => applyWindow(...PRESETS[b.dataset.preset]));
  }
  const manual = () => viewer.setWindow(Number(ui.winC.value), Number(ui.winW.value));
  ui.winC.addEventListener("input", manual);
  ui.winW.addEventListener("input", manual);
  const overlay = () => viewer.setOverlay({ visible: ui.ovOn.checked, opacity: Number(ui.ovAlpha.value) });
  ui.ovOn.addEventListener("change", overlay);
  ui.ovAlpha.addEventListener("input", overlay);
  viewer.onCursor = ({ z, y, x, hu }) => {
    ui.cursor.textContent = `voxel (x ${x}, y ${y}, z ${z}) ${Math.round(hu)} HU`;
  };
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
    } else {
      const message = document.body.dataset.state === "cancelled" ? "cancelled" : ui.error.textContent;
      reply({ type: Frame.ERROR, id, message, ...(series ? { series } : {}) });
    }
  });
  // Posting with an explicit target origin means only an allowed parent can hear us.
  for (const origin of allowed) window.parent.postMessage({ type: Frame.READY }, origin);
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
