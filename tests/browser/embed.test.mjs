// Embedding: the ES module API (www/embed.js) and the iframe protocol (www/host-example.html),
// including a host on an origin the iframe does not allow, whose messages must be ignored.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { SAMPLE, launch, nativeSegment, parseNifti, dice, recordedPage, requireWebBuild, startServer } from "./helpers.mjs";

let server;
let native;
before(async () => {
  server = await startServer({ embedFromLocalhost: true });
});
after(() => server?.stop());

function nativeResult() {
  native ??= nativeSegment(SAMPLE);
  return native;
}

/**
 * The page's report must be the CLI's report plus the browser's own fields: the same keys with
 * the same values (numbers to float noise), and the same stage names in `timings`.
 */
function assertSameReport(page, cli) {
  for (const [k, v] of Object.entries(cli)) {
    assert.ok(k in page, `the page's report lacks the CLI's "${k}"`);
    if (k === "timings") {
      assert.deepEqual(page.timings.map((t) => t.stage), v.map((t) => t.stage), "stage names and order");
      for (const t of page.timings) assert.ok(Number.isFinite(t.ms) && t.ms >= 0, `timing ${JSON.stringify(t)}`);
    } else if (typeof v === "number") {
      assert.ok(Math.abs(page[k] - v) <= 1e-6 * Math.max(1, Math.abs(v)), `${k}: page ${page[k]}, CLI ${v}`);
    } else if (k === "abc2") {
      for (const [kk, vv] of Object.entries(v)) assert.ok(Math.abs(page.abc2[kk] - vv) <= 1e-6 * Math.max(1, Math.abs(vv)), `abc2.${kk}: page ${page.abc2[kk]}, CLI ${vv}`);
    } else {
      assert.deepEqual(page[k], v, k);
    }
  }
  const extra = Object.keys(page).filter((k) => !(k in cli)).sort();
  const browserFields = ["backend", "backend_note", "browser_timings", "helper_wasm_memory_bytes", "known_answer", "wasm_memory_bytes", "workers"];
  for (const k of extra) assert.ok(browserFields.includes(k), `the page's report has "${k}", neither the CLI's nor a documented browser field`);
}

describe("ES module API", () => {
  test("segment(bytes, { onProgress }) resolves with { report, mask_nifti }: the CLI's report and mask", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      const out = await page.evaluate(async () => {
        const { segment } = await import("/embed.js");
        const bytes = new Uint8Array(await (await fetch("/samples/sample_head_ct_simulated_bleed.nii.gz")).arrayBuffer());
        const stages = [];
        const r = await segment(bytes, { onProgress: (p) => stages.push(p.stage) });
        return {
          stages: [...new Set(stages)],
          keys: Object.keys(r).sort(),
          report: r.report,
          callerKeptBytes: bytes.byteLength > 0,
          mask: Array.from(r.mask_nifti),
        };
      });
      assert.ok(out.callerKeptBytes, "the caller's buffer is not detached");
      assert.deepEqual(out.keys, ["mask_nifti", "report"]);
      assert.deepEqual(out.stages.slice(-1), ["done"]);
      const { mask: nativeMask, json } = nativeResult();
      // Progress names the core's stages, in the CLI report's order.
      assert.deepEqual(out.stages.filter((s) => json.timings.some((t) => t.stage === s)), json.timings.map((t) => t.stage));
      assertSameReport(out.report, json);
      const d = dice(parseNifti(Buffer.from(out.mask)).data, parseNifti(nativeMask).data);
      assert.ok(d >= 0.99, `Dice vs the CLI: ${d}`);
    } finally {
      await browser.close();
    }
  });

  test("the CLI's options reach the core: no CRF and a threshold give the CLI's answer for the same flags", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      const out = await page.evaluate(async () => {
        const { segment } = await import("/embed.js");
        const bytes = await (await fetch("/samples/sample_head_ct_simulated_bleed.nii.gz")).arrayBuffer();
        const r = await segment(bytes, { crf: null, threshold: 0.3 });
        const bad = await segment(bytes, { crf: { appearance_weight: -1 } }).catch((e) => e.message);
        const typo = await segment(bytes, { treshold: 0.3 }).catch((e) => e.message);
        return { report: r.report, mask: Array.from(r.mask_nifti), bad, typo };
      });
      const native = nativeSegment(SAMPLE, ["--no-crf", "--threshold", "0.3"]);
      assert.equal(out.report.crf, false);
      assert.equal(out.report.threshold, 0.3);
      assertSameReport(out.report, native.json);
      assert.ok(Buffer.from(out.mask).equals(native.mask), "the mask bytes equal the CLI's with --no-crf --threshold 0.3");
      // The defaults give another answer, so the options were not ignored.
      assert.notEqual(out.report.volume_ml, nativeResult().json.volume_ml);
      assert.match(out.bad, /appearance_weight/, out.bad);
      assert.match(out.typo, /treshold/, out.typo);
    } finally {
      await browser.close();
    }
  });

  test("prepare() loads the engine and its helpers before the first scan, which then runs on them; a backend it cannot give is refused", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      const out = await page.evaluate(async () => {
        const { prepare, segment } = await import("/embed.js");
        const gpu = await prepare({ backend: "webgpu" }).then((r) => JSON.stringify(r), (e) => e.message);
        const ready = await prepare({ backend: "cpu" });
        const cores = navigator.hardwareConcurrency;
        const bytes = await (await fetch("/samples/sample_head_ct_simulated_bleed.nii.gz")).arrayBuffer();
        const r = await segment(bytes, { backend: "cpu" });
        return { gpu, ready, cores, report: r.report, mask: Array.from(r.mask_nifti) };
      });
      // This Chromium runs without the WebGPU flag: the refusal is the sentence a scan would get.
      assert.match(out.gpu, /WebGPU was requested but/, out.gpu);
      assert.match(out.ready.backend, /^CPU/);
      assert.ok(out.ready.workers >= Math.min(out.cores, 2) && out.ready.workers <= out.cores, `prepared ${out.ready.workers} module instance(s) on ${out.cores} cores`);
      // The scan ran on the prepared instances and gives the CLI's mask.
      assert.equal(out.report.workers, out.ready.workers);
      assertSameReport(out.report, nativeResult().json);
      assert.ok(Buffer.from(out.mask).equals(nativeResult().mask), "the mask bytes equal the CLI's");
    } finally {
      await browser.close();
    }
  });

  test("an AbortSignal stops the work and rejects with AbortError", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      const out = await page.evaluate(async () => {
        const { segment } = await import("/embed.js");
        const bytes = await (await fetch("/samples/sample_head_ct_simulated_bleed.nii.gz")).arrayBuffer();
        const ctl = new AbortController();
        try {
          await segment(bytes, { signal: ctl.signal, onProgress: (p) => p.stage === "network" && ctl.abort() });
          return "resolved";
        } catch (e) {
          // The module must still work after an abort.
          const again = await segment(new Uint8Array(8), {}).catch((e2) => e2.message);
          return `${e.name}|${again}`;
        }
      });
      const [name, next] = out.split("|");
      assert.equal(name, "AbortError");
      assert.match(next, /NIfTI|short|bytes/i, "the next call runs and reports its own error");
    } finally {
      await browser.close();
    }
  });
});

describe("iframe protocol", () => {
  test("an allowed host sends a scan and gets the mask and report back", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(new URL("host-example.html", server.url).href);
      await page.waitForFunction(() => window.ichnetHost?.ready, null, { timeout: 60_000 });
      await page.evaluate(async () => {
        const bytes = await (await fetch("/samples/sample_head_ct_simulated_bleed.nii.gz")).arrayBuffer();
        window.ichnetHost.send("sample_head_ct_simulated_bleed.nii.gz", bytes);
      });
      await page.waitForFunction(() => window.ichnetHost.result || window.ichnetHost.error, null, { timeout: 600_000, polling: 500 });
      const { result, error, mask, events, keys } = await page.evaluate(() => ({
        keys: Object.keys(window.ichnetHost.lastMessage ?? {}).sort(),
        result: window.ichnetHost.result,
        error: window.ichnetHost.error,
        mask: Array.from(window.ichnetHost.maskNifti ?? []),
        events: [...new Set(window.ichnetHost.events)],
      }));
      assert.equal(error, null);
      assert.ok(events.includes("ichnet:progress"));
      assert.deepEqual(keys, ["id", "mask_nifti", "report", "type"], "the ES module's result shape, plus the message's type and id");
      const { json } = nativeResult();
      assertSameReport(result, json);
      // The mask itself, against the CLI's: same grid, same voxels.
      const a = parseNifti(Buffer.from(mask));
      const b = parseNifti(nativeResult().mask);
      assert.deepEqual(a.dims, b.dims);
      assert.deepEqual(a.srow, b.srow);
      const d = dice(a.data, b.data);
      assert.ok(d >= 0.99, `Dice between the iframe's mask and the CLI's: ${d}`);

      // The reader signs in the app: the host gets the signed result (`ichnet:signed`).
      const app = page.frames().find((f) => f.url().includes("embed=1"));
      assert.ok(app, "the app's frame");
      await app.waitForFunction(() => document.body.dataset.review === "model");
      assert.equal(await page.evaluate(() => window.ichnetHost.signed), null, "nothing signed before the reader signs");
      await app.fill("#reader", "Dr Frame");
      await app.click("#sign");
      await page.waitForFunction(() => window.ichnetHost.signed, null, { timeout: 60_000 });
      const signed = await page.evaluate(() => ({ report: window.ichnetHost.signed, mask: Array.from(window.ichnetHost.signedMask ?? []) }));
      assert.equal(signed.report.review.reader, "Dr Frame");
      assert.equal(signed.report.review.signed, true);
      assert.equal(signed.report.review.edited_voxels, 0);
      assert.equal(signed.report.volume_ml, result.volume_ml);
      assert.ok(Buffer.from(signed.mask).equals(Buffer.from(mask)), "unedited, the signed mask is the model's file");
    } finally {
      await browser.close();
    }
  });

  test("messages from an origin outside the allow-list are ignored", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      // Host on http://localhost:PORT, app on http://127.0.0.1:PORT: two origins for the browser.
      // The app allows only its own origin, so the host is a stranger to it.
      const host = new URL(`http://localhost:${server.port}/host-example.html`);
      host.searchParams.set("app", server.url);
      host.searchParams.set("allow", server.origin);
      await page.goto(host.href);
      const frame = page.frames().find((f) => f.url().startsWith(server.origin));
      assert.ok(frame, "the app frame loaded");
      await frame.waitForFunction(() => document.body.dataset.state === "idle");
      await page.evaluate(() => {
        window.ichnetHost.send("x.nii.gz", new Uint8Array([1, 2, 3]).buffer);
      });
      await frame.waitForFunction(() => Number(document.body.dataset.ignored ?? 0) >= 1, null, { timeout: 30_000 });
      assert.equal(await frame.evaluate(() => document.body.dataset.state), "idle", "the app did not start work");
      const hostSaw = await page.evaluate(() => window.ichnetHost.events);
      assert.deepEqual(hostSaw, [], "the app told the stranger nothing, not even that it is ready");
    } finally {
      await browser.close();
    }
  });
});
