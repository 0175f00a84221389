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

describe("ES module API", () => {
  test("segment(bytes, { onProgress }) resolves with the mask and the numbers", async () => {
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
          volumeMl: r.volumeMl,
          abc2: r.abc2,
          backend: r.backend,
          callerKeptBytes: bytes.byteLength > 0,
          mask: Array.from(r.maskNifti),
        };
      });
      assert.ok(out.callerKeptBytes, "the caller's buffer is not detached");
      assert.deepEqual(out.stages.slice(-1), ["done"]);
      assert.ok(out.stages.includes("network"));
      assert.ok(Number.isFinite(out.volumeMl));
      assert.ok(Number.isFinite(out.abc2.ml));
      const { mask: nativeMask } = nativeResult();
      const d = dice(parseNifti(Buffer.from(out.mask)).data, parseNifti(nativeMask).data);
      assert.ok(d >= 0.99, `Dice vs the CLI: ${d}`);
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
      const { result, error, mask, events } = await page.evaluate(() => ({
        result: window.ichnetHost.result,
        error: window.ichnetHost.error,
        mask: Array.from(window.ichnetHost.maskNifti ?? []),
        events: [...new Set(window.ichnetHost.events)],
      }));
      assert.equal(error, null);
      assert.ok(events.includes("ichnet:progress"));
      const { json } = nativeResult();
      const nativeMl = json.volume_ml;
      assert.ok(Math.abs(result.volume_ml - nativeMl) <= 0.01 * Math.max(nativeMl, 0.1), `${result.volume_ml} vs ${nativeMl}`);
      // The mask itself, against the CLI's: same grid, same voxels.
      const a = parseNifti(Buffer.from(mask));
      const b = parseNifti(nativeResult().mask);
      assert.deepEqual(a.dims, b.dims);
      assert.deepEqual(a.srow, b.srow);
      const d = dice(a.data, b.data);
      assert.ok(d >= 0.99, `Dice between the iframe's mask and the CLI's: ${d}`);
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
