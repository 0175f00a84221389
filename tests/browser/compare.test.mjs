// The follow-up comparison (issue 15) in real Chromium: a baseline and a follow-up with known
// growth, made by `ichnet synth --pairs`, through the page (a baseline, then "add follow-up") and
// through the ES module's `compare()`; the verdict and Δ mL against `ichnet compare --json` on the
// same files, and the verdict against the pair's truth; growth in colour; the two views linked through the
// registration.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  assertResponsive,
  chooseFile,
  dice,
  launch,
  nativeCompare,
  parseNifti,
  recordedPage,
  requireWebBuild,
  rigidMaps,
  startServer,
  synthPairs,
  waitSettled,
} from "./helpers.mjs";

/**
 * Δ mL of the page against the CLI's: each scan is segmented as the CLI does (on the CPU path
 * the masks are the CLI's byte for byte, app.test.mjs), and totals are counted on each scan's own
 * grid, so only float noise may differ.
 */
const DELTA_TOLERANCE_ML = 0.05;
/**
 * The follow-up's mask on the baseline's grid against the CLI's: registration in wasm and natively
 * may end a fraction of a millimetre apart (libm differs), which moves the resampled mask's edge.
 */
const OVERLAY_MIN_DICE = 0.9;
/** A linked view's crosshair lands where the registration sends the other's, within this (mm). */
const LINK_TOLERANCE_MM = 0.5;

let server;
let pairs;
before(async () => {
  server = await startServer();
  // 128×128, ≤ 32 slices: pair_00002 grew by 18.7 mL (expansion), pair_00003 by 1.4 mL (none).
  pairs = synthPairs({ n: 4, seed: 3 }).pairs;
});
after(() => server?.stop());

const expanded = () => pairs.find((p) => p.name === "pair_00002");
const stable = () => pairs.find((p) => p.name === "pair_00003");

/** The page's comparison report against the CLI's on the same files and the pair's truth. */
function assertLikeCli(page, cli, pair) {
  const [p, c] = [page.comparison, cli.comparison];
  for (const k of ["baseline_ml", "followup_ml", "delta_ml"]) {
    assert.ok(Math.abs(p[k] - c[k]) <= DELTA_TOLERANCE_ML, `${k}: page ${p[k]}, CLI ${c[k]}`);
  }
  assert.equal(p.expansion.expanded, c.expansion.expanded, `verdicts: page "${p.verdict}", CLI "${c.verdict}"`);
  assert.deepEqual(
    ["by_6_ml", "by_33_percent", "by_12_5_ml"].map((k) => p.expansion[k]),
    ["by_6_ml", "by_33_percent", "by_12_5_ml"].map((k) => c.expansion[k]),
    "the criteria that fired",
  );
  // Against the truth: the verdict. How close Δ comes to the true growth is the model's
  // accuracy, measured over many pairs natively (tests/compare.rs, the README's target), not on
  // this one pair.
  assert.equal(p.expansion.expanded, pair.expansion === 1, `truth: ${pair.growth_ml} mL growth; page: ${p.verdict}`);
  // The largest haematoma is matched across the scans as the CLI matched it.
  assert.equal(p.haematomas[0].status, "persisting");
  assert.equal(p.haematomas[0].status, c.haematomas[0].status);
  assert.ok(Math.abs(p.haematomas[0].delta_ml - c.haematomas[0].delta_ml) <= DELTA_TOLERANCE_ML, "first haematoma's Δ");
  assert.equal(p.registration.quality.poor, false, JSON.stringify(p.registration.quality));
  // The report is `ichnet compare --json`'s shape, plus `masks`.
  assert.deepEqual(Object.keys(page).sort(), [...Object.keys(cli), "masks"].sort());
  assert.deepEqual(Object.keys(page.seconds).sort(), Object.keys(cli.seconds).sort());
  assert.ok(Math.abs(page.baseline.volume_ml - cli.baseline.volume_ml) <= 1e-6, "the baseline's own report");
  assert.ok(Math.abs(page.followup.volume_ml - cli.followup.volume_ml) <= 1e-6, "the follow-up's own report");
}

/** Where the crosshairs of the two views are (world mm). */
const crosshairs = (page) =>
  page.evaluate(async () => {
    const { viewer, followupViewer } = await import("/app.js");
    return { baseline: viewer.crosshairMm, followup: followupViewer.crosshairMm };
  });

/**
 * Click a point of a canvas given as fractions of its box, as a reader would (scrolled into view
 * first: a download's click scrolls the page). In the views' 2×2 grid the axial view is the
 * lower left tile.
 */
async function clickAt(page, selector, fx, fy) {
  const canvas = page.locator(selector);
  const box = await canvas.boundingBox();
  await canvas.click({ position: { x: fx * box.width, y: fy * box.height } });
  await page.waitForTimeout(150);
}

const distance = (a, b) => Math.hypot(...a.map((v, i) => v - b[i]));

describe("follow-up comparison", () => {
  test("the page: a baseline, then 'add follow-up': the CLI's verdict and Δ, growth in colour, linked views", async () => {
    requireWebBuild();
    const pair = expanded();
    const browser = await launch();
    try {
      const { page, consoleLines } = await recordedPage(browser);
      await page.goto(server.url);
      await chooseFile(page, "baseline.nii.gz", readFileSync(pair.baseline));
      assert.equal(await waitSettled(page), "done", await page.textContent("#error"));
      await page.setInputFiles("#followup-file", pair.followup);
      await page.waitForFunction(() => document.body.dataset.state !== "done", null, { polling: 50 });
      assert.equal(await waitSettled(page), "done", `${await page.textContent("#error")}\n${consoleLines.join("\n")}`);
      await page.waitForFunction(() => document.body.dataset.linked === "true", null, { polling: 100, timeout: 60_000 });

      const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#dl-cmp-report")]);
      const report = JSON.parse(readFileSync(await dl.path(), "utf8"));
      const cli = nativeCompare(pair.baseline, pair.followup);
      assertLikeCli(report, cli.json, pair);
      assert.deepEqual(report.masks, { baseline: "model", followup: "model" });
      const c = report.comparison;
      console.log(`page Δ ${c.delta_ml.toFixed(3)} mL, CLI Δ ${cli.json.comparison.delta_ml.toFixed(3)} mL, truth ${pair.growth_ml} mL`);

      // What the reader sees at the top: the verdict and its numbers.
      assert.equal((await page.textContent("#cmp-verdict")).trim(), c.verdict);
      assert.equal(await page.getAttribute("#cmp-verdict", "data-expanded"), "true");
      const numbers = await page.textContent("#cmp-numbers");
      assert.match(numbers, new RegExp(`Change\\s*\\+${c.delta_ml.toFixed(1).replace(".", "\\.")} mL`), numbers);
      assert.match(numbers, /Expansion \(≥ 6 mL or ≥ 33 %\)\s*yes: ≥ 6 mL and ≥ 33 %/, numbers);
      assert.equal(await page.isHidden("#cmp-warning"), true, "no poor-registration warning on a good registration");
      assert.equal(await page.locator("#cmp-haematomas tr").count(), c.haematomas.length + 1);

      // Growth in colour on the baseline: new blood (follow-up only) and persisting blood.
      const labels = await page.evaluate(async () => {
        const { viewer } = await import("/app.js");
        const counts = {};
        for (const v of viewer.niivue.drawBitmap) counts[v] = (counts[v] ?? 0) + 1;
        return counts;
      });
      const [r0, r1, r2] = parseNifti(readFileSync(pair.baseline)).srow;
      const det = r0[0] * (r1[1] * r2[2] - r1[2] * r2[1]) - r0[1] * (r1[0] * r2[2] - r1[2] * r2[0]) + r0[2] * (r1[0] * r2[1] - r1[1] * r2[0]);
      const voxelMl = Math.abs(det) / 1000;
      assert.ok(labels[1] > 0, `persisting blood shown: ${JSON.stringify(labels)}`);
      assert.ok((labels[4] ?? 0) * voxelMl >= 0.5 * c.delta_ml, `new blood shown (${labels[4]} voxels) for ${c.delta_ml} mL of growth: ${JSON.stringify(labels)}`);

      // Linked views: a click in one view puts the other's crosshair where the registration
      // sends that point, and back.
      const maps = rigidMaps(c.registration.transform);
      const seen = [];
      for (const [fx, fy] of [[0.25, 0.62], [0.2, 0.58]]) {
        await clickAt(page, "#nv", fx, fy);
        const x = await crosshairs(page);
        const want = maps.forward(x.baseline);
        assert.ok(distance(x.followup, want) <= LINK_TOLERANCE_MM, `follow-up crosshair ${x.followup} vs ${want}`);
        seen.push(x);
      }
      assert.ok(distance(seen[0].followup, seen[1].followup) > 2, `the follow-up's crosshair moved with the baseline's: ${JSON.stringify(seen)}`);
      await clickAt(page, "#nv-followup", 0.28, 0.66);
      const back = await crosshairs(page);
      assert.ok(distance(back.followup, seen[1].followup) > 2, "the click moved the follow-up's crosshair");
      const wantBase = maps.inverse(back.followup);
      assert.ok(distance(back.baseline, wantBase) <= LINK_TOLERANCE_MM, `baseline crosshair ${back.baseline} vs ${wantBase}`);

      await assertResponsive(page);
      await page.screenshot({ path: "/tmp/ichnet-compare.png", fullPage: true });

      // The two slots of the input panel: the same file in both is refused at once, saying so.
      await page.setInputFiles("#cmp-baseline", pair.baseline);
      assert.equal(await page.getAttribute("body", "data-state"), "done", "one slot alone starts nothing");
      await page.setInputFiles("#cmp-followup", pair.baseline);
      await page.waitForFunction(() => document.body.dataset.state !== "done", null, { polling: 50 });
      assert.equal(await waitSettled(page), "error");
      assert.match(await page.textContent("#error"), /same file: choose the later CT as the follow-up/);
    } finally {
      await browser.close();
    }
  });

  test("compare(baseline, followup) from the ES module: the CLI's report, both results, the follow-up on the baseline's grid", async () => {
    requireWebBuild();
    const pair = stable();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      const [b, f] = [readFileSync(pair.baseline), readFileSync(pair.followup)];
      const out = await page.evaluate(
        async ([b64, f64]) => {
          const { compare, segment } = await import("/embed.js");
          const bytes = (s) => Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));
          const [base, follow] = [bytes(b64), bytes(f64)];
          let t = performance.now();
          const single = await segment(base);
          const segmentMs = performance.now() - t;
          const progress = [];
          t = performance.now();
          const r = await compare(base, follow, { onProgress: (p) => progress.push(`${p.scan ?? ""}:${p.stage}`) });
          const compareMs = performance.now() - t;
          const same = await compare(base, base).catch((e) => e.message);
          const brokenProgress = [];
          const broken = await compare(base, new Uint8Array(400), { onProgress: (p) => brokenProgress.push(`${p.scan ?? ""}:${p.stage}`) }).catch((e) => e.message);
          const badOption = await compare(base, follow, { similarity: "ssd" }).catch((e) => e.message);
          return {
            keys: Object.keys(r).sort(),
            report: r.report,
            baselineReport: r.baseline.report,
            singleVolume: single.report.volume_ml,
            baselineMask: Array.from(r.baseline.mask_nifti),
            followupMask: Array.from(r.followup.mask_nifti),
            overlay: Array.from(r.followup_in_baseline_nifti),
            progress: [...new Set(progress)],
            callerKept: base.byteLength > 0 && follow.byteLength > 0,
            segmentMs,
            compareMs,
            same,
            broken,
            brokenProgress,
            badOption,
          };
        },
        [b.toString("base64"), f.toString("base64")],
      );
      assert.deepEqual(out.keys, ["baseline", "followup", "followup_in_baseline_nifti", "report"]);
      assert.ok(out.callerKept, "the caller's buffers are not detached");
      const cli = nativeCompare(pair.baseline, pair.followup);
      assertLikeCli(out.report, cli.json, pair);
      assert.equal(out.report.comparison.expansion.expanded, false);
      assert.deepEqual(out.report.masks, { baseline: "model", followup: "model" });
      assert.deepEqual(out.baselineReport, out.report.baseline);
      // The baseline is segmented exactly as segment() segments it.
      assert.equal(out.report.baseline.volume_ml, out.singleVolume);
      console.log(`ES compare(): Δ ${out.report.comparison.delta_ml.toFixed(3)} mL (CLI ${cli.json.comparison.delta_ml.toFixed(3)} mL, truth ${pair.growth_ml} mL); wall ${(out.compareMs / 1000).toFixed(1)} s vs one segment() ${(out.segmentMs / 1000).toFixed(1)} s`);

      // Progress: each scan's stages, then the registration.
      for (const want of ["baseline:network", "followup:network", "followup:crf", ":register", ":done"]) {
        assert.ok(out.progress.includes(want), `progress ${want}: ${out.progress.join(" ")}`);
      }
      assert.ok(out.progress.indexOf("followup:network") > out.progress.indexOf("baseline:network"));
      assert.ok(out.progress.indexOf(":register") > out.progress.indexOf("followup:network"));

      // Both results and the overlay: each mask on its own scan's grid; the overlay on the
      // baseline's, where it matches the CLI's.
      const [bm, fm, ov] = [out.baselineMask, out.followupMask, out.overlay].map((a) => parseNifti(Buffer.from(a)));
      const [bs, fs] = [parseNifti(b), parseNifti(f)];
      assert.deepEqual(bm.dims, bs.dims);
      assert.deepEqual(fm.dims, fs.dims);
      assert.deepEqual(ov.dims, bs.dims);
      assert.deepEqual(ov.srow, bm.srow);
      const d = dice(ov.data, parseNifti(cli.overlay).data);
      assert.ok(d >= OVERLAY_MIN_DICE, `the follow-up on the baseline's grid vs the CLI's: Dice ${d}`);

      // Errors say which scan they are about.
      assert.match(out.same, /same file/, out.same);
      assert.match(out.broken, /^the follow-up scan: /, out.broken);
      // Both scans are read first: an unreadable follow-up is said before the baseline's network.
      assert.ok(out.brokenProgress.includes("baseline:read"), out.brokenProgress.join(" "));
      assert.ok(!out.brokenProgress.includes("baseline:network"), out.brokenProgress.join(" "));
      assert.match(out.badOption, /"ssd"/, out.badOption);
    } finally {
      await browser.close();
    }
  });
});
