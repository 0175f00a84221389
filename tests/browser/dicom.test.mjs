// DICOM in the page, the ES module and the iframe protocol: a folder chosen with the folder
// picker, a study as a .zip, several series (the reader chooses), folder traversal of dropped
// items, the DICOM SEG download. The native CLI on the same files is the reference: same mask
// bytes, same report, same SEG bytes. Patient identity must appear nowhere the page writes.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ROOT, ichnetBin, launch, recordedPage, requireWebBuild, startServer, waitSettled } from "./helpers.mjs";

const FIXTURES = join(ROOT, "tests/fixtures/dicom");
/** A second real head (GE, BSD-2), 28 files, 18.5° gantry tilt, unequal steps, no bleed. */
const GE_ZIP = join(FIXTURES, "ge-head-half.zip");
/** Several series of one study (make_fixtures.py), with a fictitious patient identity. */
const MIXED_ZIP = join(FIXTURES, "mixed.zip");
/** What mixed.zip says about its patient: none of it may reach the page, the report or the console. */
const IDENTITY = ["Fixture", "FIXTURE-0051", "19700101"];

let server;
const scratch = [];
before(async () => {
  server = await startServer({ embedFromLocalhost: true });
});
after(async () => {
  await server?.stop();
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

function tempDir(tag) {
  const d = mkdtempSync(join(tmpdir(), `ichnet-dicom-${tag}-`));
  scratch.push(d);
  return d;
}

/** A fixture zip unpacked into a fresh folder (python3's zipfile: node has no unzip). */
function unzipped(zip) {
  const dir = tempDir("folder");
  execFileSync("python3", ["-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])", zip, dir]);
  return dir;
}

/** `ichnet segment INPUT… --json -o mask --seg-out seg`: the reference for the page. */
function cli(inputs, extra = []) {
  const dir = tempDir("cli");
  const mask = join(dir, "mask.nii.gz");
  const seg = join(dir, "seg.dcm");
  const args = ["segment", ...inputs, "-o", mask, "--seg-out", seg, "--json", "--weights", join(ROOT, "weights/ichnet.bpk"), ...extra];
  const json = JSON.parse(execFileSync(ichnetBin(), args, { encoding: "utf8", maxBuffer: 1 << 24 }));
  return { json, mask: readFileSync(mask), seg: readFileSync(seg) };
}

async function download(page, selector) {
  const [d] = await Promise.all([page.waitForEvent("download"), page.click(selector)]);
  return { name: d.suggestedFilename(), bytes: readFileSync(await d.path()) };
}

/** The result's report, mask and SEG as the user downloads them. */
async function downloads(page) {
  const report = JSON.parse((await download(page, "#dl-report")).bytes.toString("utf8"));
  return { report, mask: await download(page, "#dl-mask"), seg: await download(page, "#dl-seg") };
}

function assertNoIdentity(where, text) {
  for (const secret of IDENTITY) assert.ok(!text.includes(secret), `"${secret}" in ${where}`);
}

describe("DICOM in the page", () => {
  test("a folder chosen with the folder picker: the CLI's mask, report and DICOM SEG", async () => {
    requireWebBuild();
    const folder = unzipped(GE_ZIP);
    assert.equal(readdirSync(folder).length, 28);
    const browser = await launch();
    try {
      const { page, requests } = await recordedPage(browser);
      await page.goto(server.url);
      const stages = [];
      await page.exposeFunction("__stage", (t) => stages.push(t));
      await page.evaluate(() => {
        new MutationObserver(() => window.__stage(document.getElementById("stage").textContent)).observe(document.getElementById("stage"), { childList: true, characterData: true, subtree: true });
      });
      await page.setInputFiles("#folder", folder);
      assert.equal(await waitSettled(page), "done", await page.textContent("#error"));
      // Reading hundreds of files shows its own progress before the core's stages.
      assert.ok(stages.some((s) => /^reading files: \d+\/28$/.test(s)), `progress lines: ${[...new Set(stages)].join(" | ")}`);
      assert.ok(stages.includes("reading files: 28/28"));
      const { report, mask, seg } = await downloads(page);
      const ref = cli([folder]);
      assert.ok(mask.bytes.equals(ref.mask), "the page's mask bytes equal the CLI's on the same folder");
      assert.ok(seg.bytes.equals(ref.seg), "the page's DICOM SEG bytes equal the CLI's --seg-out");
      assert.equal(seg.bytes.toString("latin1", 128, 132), "DICM");
      assert.match(seg.name, /_ich_seg\.dcm$/);
      assert.equal(report.volume_ml, ref.json.volume_ml);
      assert.deepEqual(report.warnings, ref.json.warnings);
      // The reader's notes reach the user: this series is tilted and unequally spaced.
      const notes = await page.textContent("#warnings");
      assert.match(notes, /gantry tilt/);
      assert.match(notes, /unequally spaced/);
      // Negative control (a real head without a bleed, read from its DICOM series): next to
      // nothing found.
      assert.ok(report.volume_ml <= 0.5, `${report.volume_ml} mL on a head without a bleed`);
      for (const r of requests) assert.ok(r.url.startsWith(server.origin + "/") || r.url.startsWith("blob:"), `request to ${r.url}`);
    } finally {
      await browser.close();
    }
  });

  test("several series: the page lists them without patient identity, and segments the one chosen", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page, consoleLines } = await recordedPage(browser);
      await page.goto(server.url);
      await page.setInputFiles("#file", MIXED_ZIP);
      assert.equal(await waitSettled(page), "error");
      assert.ok(await page.isVisible("#series"), "the series chooser is shown");
      const choices = await page.$$eval("#series-list button", (bs) => bs.map((b) => ({ text: b.textContent, uid: b.dataset.uid })));
      assert.ok(choices.length >= 2, JSON.stringify(choices));
      const head = choices.find((c) => c.text.includes("HEAD 6mm"));
      assert.ok(head, `no "HEAD 6mm" among ${choices.map((c) => c.text).join(" | ")}`);
      await page.click(`#series-list button[data-uid="${head.uid}"]`);
      assert.equal(await waitSettled(page), "done", await page.textContent("#error"));
      assert.ok(!(await page.isVisible("#series")), "the chooser is gone once a series is chosen");
      const { report, mask, seg } = await downloads(page);
      const ref = cli([MIXED_ZIP], ["--series", head.uid]);
      assert.ok(mask.bytes.equals(ref.mask), "the chosen series' mask equals the CLI's --series");
      assert.ok(seg.bytes.equals(ref.seg), "and so does its SEG");
      assert.equal(report.volume_ml, ref.json.volume_ml);
      const page_text = await page.evaluate(() => document.body.innerText);
      assertNoIdentity("the page", page_text);
      assertNoIdentity("the report", JSON.stringify(report));
      assertNoIdentity("the console", consoleLines.join("\n"));
    } finally {
      await browser.close();
    }
  });

  test("dropped folders are walked: nested folders, batched directory reads, hidden files left out", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      const got = await page.evaluate(async () => {
        const { walkEntries, displayName } = await import("/files.js");
        // FileSystemEntry look-alikes: the page cannot make real ones without a real drop.
        const file = (path) => ({ isFile: true, isDirectory: false, name: path.split("/").pop(), fullPath: `/${path}`, file: (ok) => ok(new File([path], path.split("/").pop())) });
        const dir = (path, children, batch = 2) => ({
          isFile: false,
          isDirectory: true,
          name: path.split("/").pop(),
          fullPath: `/${path}`,
          createReader() {
            let at = 0;
            // Like Chromium: a few entries per call, then an empty batch at the end.
            return { readEntries: (ok) => setTimeout(() => ok(children.slice(at, (at += batch))), 0) };
          },
        });
        const study = dir("study", [
          file("study/IM0001"),
          file("study/.DS_Store"),
          dir("study/series2", [file("study/series2/IM0001"), file("study/series2/IM0002"), file("study/series2/IM0003")]),
          dir("study/.hidden", [file("study/.hidden/x")]),
          file("study/IM0002"),
        ]);
        const picked = await walkEntries([study, file("notes.txt")]);
        const text = await Promise.all(picked.map(async (p) => `${p.path}=${await p.file.text()}`));
        return { text, name: displayName(picked.slice(0, 5)) };
      });
      assert.deepEqual(got.text, [
        "study/IM0001=study/IM0001",
        "study/series2/IM0001=study/series2/IM0001",
        "study/series2/IM0002=study/series2/IM0002",
        "study/series2/IM0003=study/series2/IM0003",
        "study/IM0002=study/IM0002",
        "notes.txt=notes.txt",
      ]);
      assert.equal(got.name, "study/ (5 files)");
    } finally {
      await browser.close();
    }
  });
});

describe("DICOM through the ES module and the iframe", () => {
  test("segment(files) gives mask_seg; several series reject with the list to choose from", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(server.url);
      const zip = readFileSync(MIXED_ZIP).toString("base64");
      const out = await page.evaluate(async (b64) => {
        const { segment } = await import("/embed.js");
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const err = await segment([{ name: "study.zip", bytes }]).then(() => null, (e) => ({ message: e.message, series: e.series }));
        const uid = err?.series?.find((s) => s.description === "HEAD 6mm")?.uid;
        const r = await segment([{ name: "study.zip", bytes }], { series: uid });
        return { err, uid, keys: Object.keys(r).sort(), report: r.report, mask: Array.from(r.mask_nifti), seg: Array.from(r.mask_seg ?? []) };
      }, zip);
      assert.ok(out.err, "several series without a choice are refused");
      assert.ok(out.err.series.length >= 2, JSON.stringify(out.err));
      assert.ok(out.uid, JSON.stringify(out.err.series));
      for (const s of out.err.series) assertNoIdentity("the series list", JSON.stringify(s));
      assert.deepEqual(out.keys, ["mask_nifti", "mask_seg", "report"]);
      const ref = cli([MIXED_ZIP], ["--series", out.uid]);
      assert.ok(Buffer.from(out.mask).equals(ref.mask));
      assert.ok(Buffer.from(out.seg).equals(ref.seg));
    } finally {
      await browser.close();
    }
  });

  test("an allowed host posts the files of a series and gets the mask and the SEG back", async () => {
    requireWebBuild();
    const browser = await launch();
    try {
      const { page } = await recordedPage(browser);
      await page.goto(new URL("host-example.html", server.url).href);
      await page.waitForFunction(() => window.ichnetHost?.ready, null, { timeout: 60_000 });
      const folder = unzipped(GE_ZIP);
      const files = readdirSync(folder).sort().map((n) => ({ name: n, b64: readFileSync(join(folder, n)).toString("base64") }));
      await page.evaluate((files) => {
        const payload = files.map((f) => ({ name: f.name, bytes: Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0)).buffer }));
        window.ichnetHost.sendFiles(payload);
      }, files);
      await page.waitForFunction(() => window.ichnetHost.result || window.ichnetHost.error, null, { timeout: 600_000, polling: 500 });
      const out = await page.evaluate(() => ({
        type: window.ichnetHost.error ? "ichnet:error" : "ichnet:result",
        message: window.ichnetHost.error,
        keys: Object.keys(window.ichnetHost.lastMessage ?? {}).sort(),
        mask: Array.from(window.ichnetHost.maskNifti ?? []),
        seg: Array.from(window.ichnetHost.maskSeg ?? []),
        volume: window.ichnetHost.result?.volume_ml,
      }));
      assert.equal(out.type, "ichnet:result", out.message);
      assert.deepEqual(out.keys, ["id", "mask_nifti", "mask_seg", "report", "type"]);
      const ref = cli([folder]);
      assert.ok(Buffer.from(out.mask).equals(ref.mask), "the iframe's mask equals the CLI's");
      assert.ok(Buffer.from(out.seg).equals(ref.seg), "the iframe's SEG equals the CLI's");
      assert.equal(out.volume, ref.json.volume_ml);
    } finally {
      await browser.close();
    }
  });
});
