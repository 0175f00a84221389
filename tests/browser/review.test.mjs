// The reader's review in real Chromium: the sample shown in NiiVue with the model's mask as its
// drawing layer, strokes drawn with the mouse on the axial view, the volume the core measures for
// them, erase, undo/redo back to the model's mask byte for byte, the downloads, the sign-off (in
// the page and through the ES module API; the iframe's is in embed.test.mjs), the orientation-unknown
// "?", and the page's requests. Run from the repo root: `node --test tests/browser/`.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { SAMPLE, chooseFile, launch, nativeSegment, parseNifti, phantomHead, recordedPage, requireWebBuild, startServer, waitSettled } from "./helpers.mjs";

let server;
let native;
before(async () => {
  server = await startServer({ embedFromLocalhost: true });
  native = nativeSegment(SAMPLE);
});
after(() => server?.stop());

/** Indices (file order) of the non-zero voxels of a mask. */
const nonZero = (data) => {
  const out = [];
  for (let i = 0; i < data.length; i++) if (data[i]) out.push(i);
  return out;
};

/** The viewer's state, read in the page through the app module's exported `viewer`. */
async function viewerState(page) {
  return page.evaluate(async () => {
    const { viewer } = await import("/app.js");
    const nv = viewer.niivue;
    const mask = viewer.mask();
    const set = [];
    for (let i = 0; i < mask.length; i++) if (mask[i]) set.push(i);
    return {
      volumes: nv.volumes.length,
      dims: Array.from(nv.back?.hdr?.dims ?? []).slice(1, 4),
      drawn: nv.drawBitmap ? nv.drawBitmap.reduce((n, v) => n + (v !== 0), 0) : -1,
      set,
      webgl2: nv.gl instanceof WebGL2RenderingContext,
      canUndo: viewer.canUndo,
      canRedo: viewer.canRedo,
    };
  });
}

/**
 * Viewport coordinates (CSS px) of a voxel `[x, y, z]` of NiiVue's RAS grid in the shown view,
 * with the viewer scrolled into the viewport first (the mouse cannot reach outside it).
 */
async function voxelOnScreen(page, vox) {
  return page.evaluate(async (v) => {
    const { viewer } = await import("/app.js");
    const nv = viewer.niivue;
    nv.canvas.scrollIntoView({ block: "center" });
    const pos = nv.frac2canvasPos(nv.vox2frac(v));
    if (!pos) return null;
    const r = nv.canvas.getBoundingClientRect();
    const dpr = nv.uiData.dpr || window.devicePixelRatio || 1;
    return [r.left + pos[0] / dpr, r.top + pos[1] / dpr];
  }, vox);
}

/**
 * Drag with the left button from voxel `from` to voxel `to` (NiiVue's RAS grid), as a reader's
 * stroke. Positions are taken just before: a click elsewhere (a download) scrolls the page.
 */
async function stroke(page, from, to) {
  const a = await voxelOnScreen(page, from);
  const b = await voxelOnScreen(page, to);
  assert.ok(a && b, "the stroke's ends are on the view");
  const viewport = page.viewportSize();
  for (const p of [a, b]) assert.ok(p[0] > 0 && p[1] > 0 && p[0] < viewport.width && p[1] < viewport.height, `the stroke's end ${p} is in the viewport`);
  await page.mouse.move(a[0], a[1]);
  await page.mouse.down();
  await page.mouse.move(b[0], b[1], { steps: 12 });
  await page.mouse.up();
}

/** Wait until the page has measured `n` edits (each stroke, undo and redo is one). */
async function measured(page, n) {
  await page.waitForFunction((k) => Number(document.body.dataset.measured ?? 0) >= k && document.body.dataset.review !== "measuring", n, { timeout: 60_000 });
}

async function download(page, selector) {
  const [d] = await Promise.all([page.waitForEvent("download"), page.click(selector)]);
  return readFileSync(await d.path());
}

const volumeText = async (page) => Number((await page.textContent("#res-list")).match(/Haemorrhage volume\s*([\d.]+) mL/)[1]);

describe("review in NiiVue", () => {
  test("the sample shows in NiiVue with the model's mask; strokes, erase, undo/redo and sign-off go through the core", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page, requests, consoleLines } = await recordedPage(browser);
      await page.goto(server.url);
      await page.click("#sample");
      const state = await waitSettled(page, 900_000);
      assert.equal(state, "done", `${await page.textContent("#error")}\n${consoleLines.join("\n")}`);
      assert.equal(await page.getAttribute("body", "data-review"), "model");

      // The scan is NiiVue's (WebGL2), on the file's grid, and its drawing layer is the model's
      // mask: the same voxels, in file order, as the CLI's mask file.
      const model = parseNifti(native.mask);
      const modelSet = nonZero(model.data);
      assert.ok(modelSet.length > 1000, `the model's mask has ${modelSet.length} voxels`);
      const s0 = await viewerState(page);
      assert.equal(s0.volumes, 1);
      assert.ok(s0.webgl2, "NiiVue renders with WebGL2");
      assert.deepEqual(s0.dims, model.dims);
      assert.equal(s0.drawn, modelSet.length, "the drawing layer holds the model's voxels");
      assert.deepEqual(s0.set, modelSet, "the drawing, mapped back to file order, is the CLI's mask");
      assert.equal(await page.isVisible("#orient-note"), false, "the sample's orientation is known");
      await page.screenshot({ path: "/tmp/ichnet-review-result.png", fullPage: true });

      // A stroke with the pen on the axial view, on the side opposite the haematoma.
      await page.click("[data-layout=axial]");
      await page.keyboard.press("d"); // pen (shortcut)
      assert.equal(await page.getAttribute("[data-tool=pen]", "aria-pressed"), "true");
      const [cx, cy, cz] = await page.evaluate(async () => {
        const { viewer } = await import("/app.js");
        const nv = viewer.niivue;
        return nv.frac2vox(nv.scene.crosshairPos);
      });
      // A line 12 voxels long, 60 voxels (~57 mm) anterior of the haematoma's centre: brain, and
      // no blood on it yet.
      const mx = cx;
      const ly = cy + 60;
      const clear = await page.evaluate(async ([x, y0, z]) => {
        const { viewer } = await import("/app.js");
        const nv = viewer.niivue;
        const [, dx, dy] = nv.back.dimsRAS;
        let blood = 0;
        for (let y = y0 - 9; y <= y0 + 9; y++) for (let xx = x - 3; xx <= x + 3; xx++) blood += nv.drawBitmap[xx + y * dx + z * dx * dy] !== 0;
        return blood;
      }, [mx, ly, cz]);
      assert.equal(clear, 0, "no blood where the stroke goes");
      const a = [mx, ly - 6, cz];
      const b = [mx, ly + 6, cz];
      const voxelMl = model.pixdim.slice(1, 4).reduce((p, v) => p * Math.abs(v), 1) / 1000;
      const before = await volumeText(page);
      await stroke(page, a, b);
      await measured(page, 1);
      const s1 = await viewerState(page);
      const inModel = new Set(modelSet);
      const added = s1.set.filter((i) => !inModel.has(i));
      assert.ok(added.length >= 20, `the stroke added ${added.length} voxels`);
      // Where the stroke went: on the crosshair's axial slice, around the line drawn.
      const where = await page.evaluate(async (idx) => {
        const { viewer } = await import("/app.js");
        const back = viewer.niivue.back;
        const [, ni, nj] = back.hdr.dims;
        // File order → NiiVue's RAS voxel through its own affine-free mapping: invert img2RAS.
        const start = back.img2RASstart;
        const step = back.img2RASstep;
        const d = back.dimsRAS;
        const map = new Map();
        let ras = 0;
        for (let rz = 0; rz < d[3]; rz++)
          for (let ry = 0; ry < d[2]; ry++)
            for (let rx = 0; rx < d[1]; rx++, ras++) map.set(start[0] + rx * step[0] + start[1] + ry * step[1] + start[2] + rz * step[2], [rx, ry, rz]);
        return idx.map((i) => map.get(i));
      }, added);
      for (const [x, y, z] of where) {
        assert.equal(z, cz, "the stroke stays on the axial slice it was drawn on");
        assert.ok(Math.abs(x - mx) <= 3 && y >= ly - 9 && y <= ly + 9, `voxel (${x}, ${y}) is off the line x=${mx}, y=${ly - 6}..${ly + 6}`);
      }
      assert.equal(s1.set.length - added.length, modelSet.length, "the pen removed nothing");
      const rep1 = JSON.parse(await download(page, "#dl-report"));
      assert.equal(rep1.review.added_voxels, added.length, "the core counts the voxels the stroke added");
      assert.equal(rep1.review.removed_voxels, 0);
      assert.ok(Math.abs(rep1.volume_ml - (native.json.volume_ml + added.length * voxelMl)) < 1e-6, `volume ${rep1.volume_ml} vs ${native.json.volume_ml} + ${added.length} × ${voxelMl}`);
      assert.equal(rep1.review.model_volume_ml, native.json.volume_ml);
      assert.equal(rep1.review.signed, false);
      const shown = await volumeText(page);
      assert.equal(shown.toFixed(1), rep1.volume_ml.toFixed(1), "the page shows the core's volume");
      assert.ok(shown > before, `the shown volume rose: ${before} -> ${shown} mL`);
      assert.ok(rep1.haematomas.length >= 2, "the stroke is a haematoma of its own in the list");
      assert.equal(await page.locator("#res-haematomas tr").count(), rep1.haematomas.length + 1);
      // The downloaded mask is the edit, voxel for voxel, on the input's grid.
      const m1 = parseNifti(await download(page, "#dl-mask"));
      assert.deepEqual(m1.dims, model.dims);
      assert.deepEqual(m1.srow, model.srow);
      assert.deepEqual(nonZero(m1.data), s1.set);
      await page.screenshot({ path: "/tmp/ichnet-review-edited.png", fullPage: true });

      // Erase along the same line: the stroke's voxels go (nothing of the model's is there).
      await page.keyboard.press("e");
      await stroke(page, a, b);
      await measured(page, 2);
      const s2 = await viewerState(page);
      const left = s2.set.filter((i) => !inModel.has(i)).length;
      assert.ok(left < added.length, `erasing left ${left} of the ${added.length} added voxels`);
      const rep2 = JSON.parse(await download(page, "#dl-report"));
      assert.ok(rep2.volume_ml < rep1.volume_ml, `erase: ${rep1.volume_ml} -> ${rep2.volume_ml} mL`);

      // Undo both (button, then Ctrl+Z): the model's mask, byte for byte, and its very file.
      await page.click("#undo");
      await measured(page, 3);
      await page.keyboard.press("Escape");
      await page.keyboard.press("Control+z");
      await measured(page, 4);
      const s4 = await viewerState(page);
      assert.deepEqual(s4.set, modelSet, "undo restores the model's mask");
      assert.equal(s4.canUndo, false);
      const m4 = await download(page, "#dl-mask");
      assert.ok(m4.equals(native.mask), "the downloaded mask after undoing every edit is the CLI's file, byte for byte");
      const rep4 = JSON.parse(await download(page, "#dl-report"));
      assert.equal(rep4.review.edited_voxels, 0);
      assert.equal(rep4.volume_ml, native.json.volume_ml);
      assert.deepEqual(rep4.haematomas, native.json.haematomas, "the per-haematoma list is the model's again");

      // Redo the stroke (Ctrl+Y), then sign.
      await page.keyboard.press("Control+y");
      await measured(page, 5);
      assert.deepEqual((await viewerState(page)).set, s1.set, "redo brings the stroke back");
      const t0 = Date.now();
      await page.fill("#reader", "  T. Tester ");
      await page.click("#sign");
      await page.waitForFunction(() => document.body.dataset.review === "signed", null, { timeout: 60_000 });
      const signedText = await page.textContent("#signed");
      assert.match(signedText, /Signed by T\. Tester/);
      const rep5 = JSON.parse(await download(page, "#dl-report"));
      assert.equal(rep5.review.signed, true);
      assert.equal(rep5.review.reader, "T. Tester");
      const at = Date.parse(rep5.review.signed_at);
      assert.ok(at >= t0 - 5000 && at <= Date.now() + 5000, `signed_at ${rep5.review.signed_at}`);
      assert.equal(rep5.review.model_volume_ml, native.json.volume_ml);
      assert.equal(rep5.review.final_volume_ml, rep1.volume_ml);
      assert.equal(rep5.review.edited_voxels, added.length);
      // Everything else is still the model's report (options, timings, backend ...).
      for (const k of ["threshold", "crf", "brain_ml", "backend", "timings"]) assert.deepEqual(rep5[k], rep1[k], k);
      assert.deepEqual(nonZero(parseNifti(await download(page, "#dl-mask")).data), s1.set, "the signed mask is the edited one");

      // An empty name is refused with a sentence; the signature stays.
      await page.fill("#reader", "   ");
      await page.click("#sign");
      await page.waitForSelector("#error:not([hidden])");
      assert.match(await page.textContent("#error"), /name or initials/);

      // Fill: a closed outline drawn with the fill tool adds its inside too; editing after the
      // sign-off voids it on screen.
      await page.keyboard.press("f");
      const sq = [[mx - 6, ly + 20], [mx + 6, ly + 20], [mx + 6, ly + 32], [mx - 6, ly + 32], [mx - 6, ly + 20]].map(([x, y]) => [x, y, cz]);
      const corners = [];
      for (const v of sq) corners.push(await voxelOnScreen(page, v));
      await page.mouse.move(...corners[0]);
      await page.mouse.down();
      for (const c of corners.slice(1)) await page.mouse.move(c[0], c[1], { steps: 8 });
      await page.mouse.up();
      await measured(page, 6);
      const s6 = await viewerState(page);
      const filled = s6.set.length - s1.set.length;
      // A 13 × 13 voxel square: its outline alone is 48 voxels, filled 169.
      assert.ok(filled >= 120 && filled <= 200, `the fill added ${filled} voxels`);
      assert.equal(await page.isVisible("#signed"), false, "an edit after signing voids the signature on screen");
      const rep6 = JSON.parse(await download(page, "#dl-report"));
      assert.equal(rep6.review.signed, false);
      assert.equal(rep6.review.added_voxels, added.length + filled);

      // The viewer's controls: the wheel scrolls slices, layouts, 3-D, window presets, zoom.
      const slice = async () => page.evaluate(async () => {
        const nv = (await import("/app.js")).viewer.niivue;
        return nv.frac2vox(nv.scene.crosshairPos)[2];
      });
      await page.keyboard.press("n");
      const z0 = await slice();
      const centre = await voxelOnScreen(page, [mx, ly, cz]);
      await page.mouse.move(centre[0], centre[1]);
      await page.mouse.wheel(0, -120);
      for (let i = 0; i < 20 && (await slice()) === z0; i++) await new Promise((r) => setTimeout(r, 250));
      assert.notEqual(await slice(), z0, "the wheel moved to another slice");
      for (const l of ["coronal", "sagittal", "render", "multi"]) await page.click(`[data-layout=${l}]`);
      await page.click("[data-preset=bone]");
      assert.equal(await page.inputValue("#win-w"), "2000");
      await page.click("[data-zoom='1.25']");
      assert.ok((await page.evaluate(async () => (await import("/app.js")).viewer.niivue.scene.pan2Dxyzmm[3])) > 1);

      // Privacy: the viewer fetched nothing from anywhere else.
      for (const r of requests) {
        assert.ok(r.url.startsWith(server.origin + "/") || r.url.startsWith("blob:") || r.url.startsWith("data:"), `request to ${r.url}`);
        assert.equal(r.method, "GET", `${r.method} ${r.url}`);
      }
      assert.ok(requests.some((r) => r.url.endsWith("/niivue/niivue.js")), "NiiVue came from this origin");
      assert.ok(!consoleLines.some((l) => /Content.Security.Policy|Refused/i.test(l)), consoleLines.join("\n"));
    } finally {
      await browser.close();
    }
  });

  test("a file without orientation shows '?' instead of R/L letters", async () => {
    requireWebBuild();
    // The phantom with qform and sform codes 0: voxel sizes only, no known left or right.
    const nii = gunzipSync(phantomHead({ nx: 128, ny: 128, nz: 12, pixel: 1.6 }));
    nii.writeInt16LE(0, 252);
    nii.writeInt16LE(0, 254);
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      await chooseFile(page, "no_orientation.nii", nii);
      await waitSettled(page);
      assert.equal(await page.isVisible("#orient-note"), true);
      assert.match(await page.textContent("#orient-note"), /\?/);
      const visible = await page.evaluate(async () => (await import("/app.js")).viewer.niivue.opts.isOrientationTextVisible);
      assert.equal(visible, false, "NiiVue draws no R/L letters");
      // And the sample (orientation known) brings the letters back.
      await page.evaluate(() => (document.body.dataset.state = "test-pending"));
      await page.click("#sample");
      await page.waitForFunction(() => !document.getElementById("viewer-panel").hidden && document.body.dataset.state !== "test-pending");
      await page.waitForFunction(() => document.getElementById("orient-note").hidden);
    } finally {
      await browser.close();
    }
  });
});

describe("signed results for embedding pages", () => {
  test("ES module: signOff() returns the signed result, with or without an edited mask", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      const model = parseNifti(native.mask);
      // One voxel added outside the model's mask.
      const extra = model.data.findIndex((v) => v === 0);
      const out = await page.evaluate(async (extraIndex) => {
        const { segment, signOff } = await import("/embed.js");
        const bytes = await (await fetch("/samples/sample_head_ct_simulated_bleed.nii.gz")).arrayBuffer();
        const r = await segment(bytes);
        const asIs = await signOff({ reader: "AR" });
        // The edited mask: the model's, decoded by the host from mask_nifti, plus one voxel.
        const raw = new Uint8Array(await new Response(new Blob([r.mask_nifti]).stream().pipeThrough(new DecompressionStream("gzip"))).arrayBuffer());
        const off = new DataView(raw.buffer).getFloat32(108, true);
        const mask = raw.slice(off);
        mask[extraIndex] = 1;
        const edited = await signOff({ reader: "AR", mask });
        let refused = null;
        try {
          await signOff({ reader: "" });
        } catch (e) {
          refused = e.message;
        }
        return { model: r.report.volume_ml, asIs: asIs.report, edited: edited.report, editedBytes: edited.mask_nifti.length, refused };
      }, extra);
      assert.equal(out.asIs.review.signed, true);
      assert.equal(out.asIs.review.reader, "AR");
      assert.equal(out.asIs.review.edited_voxels, 0);
      assert.equal(out.asIs.volume_ml, out.model);
      assert.equal(out.edited.review.edited_voxels, 1);
      assert.equal(out.edited.review.added_voxels, 1);
      assert.ok(out.edited.volume_ml > out.model);
      assert.ok(out.editedBytes > 0);
      assert.match(out.refused, /name or initials/);
    } finally {
      await browser.close();
    }
  });
});
