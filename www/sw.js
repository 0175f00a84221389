// Offline support: after one visit the app, the wasm engine, the weights and the sample are in
// Cache Storage, so the page works with the network off (teaching rooms, travel).
//
// Network first, cache as the fallback: a rebuilt wasm module and its JS glue must never be mixed
// (a stale cached .wasm with a fresh ichnet.js fails to link), and the server answers unchanged
// files with 304, so being online costs little. Only this origin's GET requests are handled;
// the scan itself is never fetched (it comes from a file picker), so it is never cached.

// Renamed whenever the list below changes shape, so activation drops the old cache's strays.
const CACHE = "ichnet-v2";
const PRECACHE = [
  "./",
  "index.html",
  "style.css",
  "app.js",
  "view.js",
  "niivue/niivue.js",
  "niivue/LICENSE.txt",
  "embed.js",
  "files.js",
  "protocol.js",
  "worker.js",
  "host-example.html",
  "host-example.js",
  "pkg/ichnet.js",
  "pkg/ichnet_bg.wasm",
  "weights/ichnet.bpk",
  "samples/sample_head_ct_simulated_bleed.nii.gz",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      // One missing file (e.g. no sample in a custom build) must not cost the rest their place.
      await Promise.all(
        PRECACHE.map(async (path) => {
          try {
            const res = await fetch(new Request(path, { cache: "no-cache" }));
            if (res.ok) await cache.put(path, res);
          } catch {
            // offline during install: nothing to store
          }
        }),
      );
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) if (key !== CACHE) await caches.delete(key);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET" || new URL(req.url).origin !== self.location.origin) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const res = await fetch(req);
        if (res.ok && res.status === 200) await cache.put(req, res.clone());
        return res;
      } catch (e) {
        const hit = await cache.match(req, { ignoreSearch: true });
        if (hit) return hit;
        throw e;
      }
    })(),
  );
});
