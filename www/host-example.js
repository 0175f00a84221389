// The host side of the iframe protocol (www/protocol.js, `Frame`): how a portal embeds ICHNet.
//
// The iframe is told which origins may talk to it (`allow=`); the host checks the iframe's origin
// on every reply. `?app=URL` points the example at an ICHNet served elsewhere (the tests use it
// to put host and app on different origins).

import { Frame } from "./protocol.js";

const params = new URLSearchParams(location.search);
const appUrl = new URL(params.get("app") ?? "./", location.href);
const appOrigin = appUrl.origin;
appUrl.searchParams.set("embed", "1");
appUrl.searchParams.set("allow", params.get("allow") ?? location.origin);

const frame = document.getElementById("ichnet");
const status = document.getElementById("host-status");
const out = document.getElementById("host-result");
let nextId = 1;
let current = null;

/** Last result, for the tests and for anyone poking at the example in the console. */
window.ichnetHost = { ready: false, events: [], result: null, error: null, maskNifti: null, signed: null, signedMask: null };

window.addEventListener("message", (event) => {
  if (event.origin !== appOrigin || event.source !== frame.contentWindow) return;
  const msg = event.data ?? {};
  window.ichnetHost.events.push(msg.type);
  if (msg.type === Frame.RESULT) window.ichnetHost.lastMessage = msg;
  switch (msg.type) {
    case Frame.READY:
      window.ichnetHost.ready = true;
      status.textContent = "ICHNet is ready: send a scan.";
      break;
    case Frame.PROGRESS:
      status.textContent = `${msg.stage}${msg.total ? ` ${msg.done}/${msg.total}` : ""}`;
      break;
    case Frame.RESULT:
      // The result shape of protocol.js: { report, mask_nifti }, as the ES module's segment() gives.
      window.ichnetHost.result = msg.report;
      window.ichnetHost.maskNifti = msg.mask_nifti;
      // A DICOM input also gives the mask as a DICOM SEG, to store back in the PACS.
      window.ichnetHost.maskSeg = msg.mask_seg ?? null;
      status.textContent = `haemorrhage ${msg.report.volume_ml.toFixed(1)} mL (mask ${msg.mask_nifti.byteLength} bytes)`;
      out.textContent = JSON.stringify(msg.report, null, 2);
      break;
    case Frame.SIGNED:
      // The reader signed the result in the app: the same shape, its report with `review`.
      window.ichnetHost.signed = msg.report;
      window.ichnetHost.signedMask = msg.mask_nifti;
      status.textContent = `signed by ${msg.report.review.reader}: ${msg.report.volume_ml.toFixed(1)} mL`;
      out.textContent = JSON.stringify(msg.report, null, 2);
      break;
    case Frame.ERROR:
      window.ichnetHost.error = msg.message;
      // Several DICOM series and none chosen: the list, to send again with options.series.
      window.ichnetHost.series = msg.series ?? null;
      status.textContent = `error: ${msg.message}`;
      break;
  }
});

/** Send a scan to the frame (the buffer is transferred). Returns the request id. */
window.ichnetHost.send = (name, bytes, options = {}) => {
  const id = nextId++;
  current = id;
  window.ichnetHost.result = null;
  window.ichnetHost.error = null;
  frame.contentWindow.postMessage({ type: Frame.SEGMENT, id, name, bytes, options }, appOrigin, [bytes]);
  return id;
};

/**
 * Send several files (a DICOM series, a .zip of a study, a .hdr with its .img) as `[{ name, bytes:
 * ArrayBuffer }]` (buffers transferred). Returns the request id.
 */
window.ichnetHost.sendFiles = (files, options = {}) => {
  const id = nextId++;
  current = id;
  window.ichnetHost.result = null;
  window.ichnetHost.error = null;
  frame.contentWindow.postMessage({ type: Frame.SEGMENT, id, files, options }, appOrigin, files.map((f) => f.bytes));
  return id;
};

document.getElementById("host-file").addEventListener("change", async (e) => {
  const list = [...(e.target.files ?? [])];
  if (list.length === 1) window.ichnetHost.send(list[0].name, await list[0].arrayBuffer());
  else if (list.length > 1) window.ichnetHost.sendFiles(await Promise.all(list.map(async (f) => ({ name: f.name, bytes: await f.arrayBuffer() }))));
});
document.getElementById("host-cancel").addEventListener("click", () => {
  if (current) frame.contentWindow.postMessage({ type: Frame.CANCEL, id: current }, appOrigin);
});

frame.src = appUrl.href;
