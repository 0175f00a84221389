// Three linked slice views (axial, coronal, sagittal) of the canonical stack, with a CT window,
// the mask overlay and a crosshair.
//
// The stack arrives as `hu[z][y][x]` (flat Float32Array) with x -> patient Right, y -> Anterior,
// z -> Superior. Views follow the radiological convention: the patient's right on the screen's
// left, anterior up in the axial view, superior up in the others. Voxels are not cubes (5 mm
// slices are common), so each view is drawn at its physical aspect ratio: the slice is rendered
// at native resolution into an offscreen canvas and scaled onto the visible one, and the
// crosshair is drawn afterwards in screen pixels so it stays thin.

/** CT windows as [centre, width] in HU. */
export const PRESETS = Object.freeze({
  brain: [40, 80],
  blood: [60, 60],
  bone: [500, 2000],
});

// Per view: which canonical axis it fixes, and for screen column/row which axis and direction.
// `flip` true means screen index 0 is the axis' last voxel.
const VIEWS = [
  { name: "axial", fixed: 0, col: { axis: 2, flip: true }, row: { axis: 1, flip: true }, labels: ["R", "L", "A", "P"] },
  { name: "coronal", fixed: 1, col: { axis: 2, flip: true }, row: { axis: 0, flip: true }, labels: ["R", "L", "S", "I"] },
  { name: "sagittal", fixed: 2, col: { axis: 1, flip: true }, row: { axis: 0, flip: true }, labels: ["A", "P", "S", "I"] },
];

const OVERLAY_RGB = [255, 40, 40];

export class Viewer {
  #root;
  #views = [];
  #vol = null; // { dims: [nz, ny, nx], spacing: [sz, sy, sx], hu }
  #mask = null;
  #pos = [0, 0, 0]; // [z, y, x]
  #window = PRESETS.brain;
  #overlay = { visible: true, opacity: 0.5 };
  #active = 0;
  #pending = false;
  /** Called with `{ z, y, x, hu }` whenever the crosshair moves. */
  onCursor = null;

  constructor(root) {
    this.#root = root;
    for (const spec of VIEWS) this.#views.push(this.#buildView(spec));
    new ResizeObserver(() => this.#schedule()).observe(root);
    root.addEventListener("keydown", (e) => this.#onKey(e));
  }

  #buildView(spec) {
    const fig = document.createElement("figure");
    fig.className = "view";
    fig.dataset.view = spec.name;
    const canvas = document.createElement("canvas");
    canvas.tabIndex = 0;
    canvas.setAttribute("aria-label", `${spec.name} slice`);
    const caption = document.createElement("figcaption");
    const label = document.createElement("span");
    const slider = document.createElement("input");
    slider.type = "range";
    slider.min = "0";
    slider.step = "1";
    slider.setAttribute("aria-label", `${spec.name} slice number`);
    caption.append(label, slider);
    fig.append(canvas, caption);
    this.#root.append(fig);
    const view = { spec, fig, canvas, label, slider, offscreen: document.createElement("canvas"), rect: null };

    slider.addEventListener("input", () => this.#setAxis(spec.fixed, Number(slider.value)));
    canvas.addEventListener("wheel", (e) => {
      if (!this.#vol) return;
      e.preventDefault();
      this.#active = VIEWS.indexOf(spec);
      this.#step(spec.fixed, e.deltaY > 0 ? -1 : 1);
    }, { passive: false });
    const pick = (e) => {
      if (!this.#vol || !view.rect) return;
      this.#active = VIEWS.indexOf(spec);
      const r = canvas.getBoundingClientRect();
      const { x0, y0, w, h } = view.rect;
      const u = ((e.clientX - r.left) * (canvas.width / r.width) - x0) / w;
      const v = ((e.clientY - r.top) * (canvas.height / r.height) - y0) / h;
      if (u < 0 || u >= 1 || v < 0 || v >= 1) return;
      const dims = this.#vol.dims;
      const c = Math.floor(u * dims[spec.col.axis]);
      const rr = Math.floor(v * dims[spec.row.axis]);
      this.#pos[spec.col.axis] = spec.col.flip ? dims[spec.col.axis] - 1 - c : c;
      this.#pos[spec.row.axis] = spec.row.flip ? dims[spec.row.axis] - 1 - rr : rr;
      this.#schedule();
    };
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      pick(e);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (e.buttons & 1) pick(e);
    });
    canvas.addEventListener("focus", () => (this.#active = VIEWS.indexOf(spec)));
    return view;
  }

  /**
   * Whether the scan's left and right are known. A file with voxel sizes only (no qform/sform)
   * has no orientation: its x axis may be the patient's left or right, so the views label that
   * axis "?" and anything that names a side must say it is unknown.
   */
  get orientationKnown() {
    return this.#vol?.orientationKnown ?? true;
  }

  /**
   * Show a new volume; the crosshair goes to its centre (or to `focus` = [z, y, x]).
   * `orientationKnown` false draws L/R as "?".
   */
  setVolume({ dims, spacing, hu, orientationKnown = true }, focus = null) {
    this.#vol = { dims, spacing, hu, orientationKnown };
    this.#mask = null;
    this.#pos = focus ?? dims.map((n) => Math.floor(n / 2));
    for (const v of this.#views) {
      v.slider.max = String(dims[v.spec.fixed] - 1);
      v.offscreen.width = dims[v.spec.col.axis];
      v.offscreen.height = dims[v.spec.row.axis];
    }
    this.#root.hidden = false;
    this.#schedule();
  }

  /** Overlay a 0/1 mask in canonical order (or remove it with null). */
  setMask(mask) {
    this.#mask = mask;
    this.#schedule();
  }

  /** Move the crosshair to the mask's largest axial cross-section, so a result is visible at once. */
  focusMask() {
    if (!this.#vol || !this.#mask) return;
    const [nz, ny, nx] = this.#vol.dims;
    const plane = ny * nx;
    let best = -1;
    let bestCount = 0;
    for (let z = 0; z < nz; z++) {
      let n = 0;
      const base = z * plane;
      for (let i = 0; i < plane; i++) n += this.#mask[base + i];
      if (n > bestCount) [best, bestCount] = [z, n];
    }
    if (best < 0) return;
    let sy = 0;
    let sx = 0;
    const base = best * plane;
    for (let i = 0; i < plane; i++) {
      if (this.#mask[base + i]) {
        sy += Math.floor(i / nx);
        sx += i % nx;
      }
    }
    this.#pos = [best, Math.round(sy / bestCount), Math.round(sx / bestCount)];
    this.#schedule();
  }

  // ---- Jump to a place (the per-haematoma list of issue 13). ----

  /** Move the crosshair to voxel `[z, y, x]` (clamped to the volume) and redraw. */
  goTo(pos) {
    if (!this.#vol) return;
    this.#pos = pos.map((v, k) => Math.min(this.#vol.dims[k] - 1, Math.max(0, Math.round(v))));
    this.#active = 0;
    this.#schedule();
  }

  clear() {
    this.#vol = null;
    this.#mask = null;
    this.#root.hidden = true;
  }

  setWindow(centre, width) {
    this.#window = [centre, Math.max(1, width)];
    this.#schedule();
  }

  get window() {
    return [...this.#window];
  }

  setOverlay({ visible = this.#overlay.visible, opacity = this.#overlay.opacity } = {}) {
    this.#overlay = { visible, opacity };
    this.#schedule();
  }

  /** Current crosshair as [z, y, x]. */
  get position() {
    return [...this.#pos];
  }

  #setAxis(axis, value) {
    if (!this.#vol) return;
    const n = this.#vol.dims[axis];
    this.#pos[axis] = Math.min(n - 1, Math.max(0, value));
    this.#schedule();
  }

  #step(axis, delta) {
    this.#setAxis(axis, this.#pos[axis] + delta);
  }

  #onKey(e) {
    if (!this.#vol) return;
    const axis = VIEWS[this.#active].fixed;
    const steps = { ArrowUp: 1, ArrowRight: 1, PageUp: 10, ArrowDown: -1, ArrowLeft: -1, PageDown: -10 };
    if (e.key in steps) {
      e.preventDefault();
      this.#step(axis, steps[e.key]);
    }
  }

  /** Coalesce redraws into one animation frame (wheel events come faster than frames). */
  #schedule() {
    if (this.#pending) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      this.#draw();
    });
  }

  #draw() {
    if (!this.#vol) return;
    for (const v of this.#views) this.#drawView(v);
    const [z, y, x] = this.#pos;
    const [, ny, nx] = this.#vol.dims;
    this.onCursor?.({ z, y, x, hu: this.#vol.hu[(z * ny + y) * nx + x] });
  }

  #tables = null;

  /** Grey level -> RGBA pixel (as one little-endian u32), plain and blended with the overlay. */
  #colourTables() {
    const alpha = this.#overlay.opacity;
    if (this.#tables?.alpha === alpha) return this.#tables.t;
    const pack = (r, g, b) => (255 << 24) | (b << 16) | (g << 8) | r;
    const grey = new Uint32Array(256);
    const red = new Uint32Array(256);
    for (let g = 0; g < 256; g++) {
      grey[g] = pack(g, g, g);
      const mix = (c) => Math.round(g + (c - g) * alpha);
      red[g] = pack(mix(OVERLAY_RGB[0]), mix(OVERLAY_RGB[1]), mix(OVERLAY_RGB[2]));
    }
    this.#tables = { alpha, t: [grey, red] };
    return this.#tables.t;
  }

  #drawView(view) {
    const { spec, canvas, offscreen } = view;
    const { dims, spacing, hu } = this.#vol;
    const cols = dims[spec.col.axis];
    const rows = dims[spec.row.axis];
    const fixedIndex = this.#pos[spec.fixed];

    // Native-resolution slice into the offscreen canvas: one 32-bit write per pixel through
    // colour tables, so a 512×512 slice stays a few milliseconds of main-thread time.
    const ctx = offscreen.getContext("2d");
    if (!view.img || view.img.width !== cols || view.img.height !== rows) {
      view.img = ctx.createImageData(cols, rows);
      view.px = new Uint32Array(view.img.data.buffer);
    }
    const px = view.px;
    const [grey, red] = this.#colourTables();
    const [centre, width] = this.#window;
    const lo = centre - width / 2;
    const scale = 255 / width;
    const [, ny, nx] = dims;
    const strides = [ny * nx, nx, 1];
    const mask = this.#overlay.visible ? this.#mask : null;
    const base = fixedIndex * strides[spec.fixed];
    const cs = spec.col.flip ? -strides[spec.col.axis] : strides[spec.col.axis];
    const rs = spec.row.flip ? -strides[spec.row.axis] : strides[spec.row.axis];
    const c0 = spec.col.flip ? (cols - 1) * strides[spec.col.axis] : 0;
    const r0 = spec.row.flip ? (rows - 1) * strides[spec.row.axis] : 0;
    let o = 0;
    for (let r = 0; r < rows; r++) {
      let i = base + r0 + r * rs + c0;
      for (let c = 0; c < cols; c++, i += cs, o++) {
        let g = ((hu[i] - lo) * scale) | 0;
        g = g < 0 ? 0 : g > 255 ? 255 : g;
        px[o] = mask !== null && mask[i] !== 0 ? red[g] : grey[g];
      }
    }
    ctx.putImageData(view.img, 0, 0);

    // Fit the physical extent (mm) into the canvas' box, keeping the aspect ratio.
    const dpr = window.devicePixelRatio || 1;
    const box = canvas.getBoundingClientRect();
    const cw = Math.max(1, Math.round(box.width * dpr));
    const ch = Math.max(1, Math.round(box.height * dpr));
    if (canvas.width !== cw || canvas.height !== ch) {
      canvas.width = cw;
      canvas.height = ch;
    }
    const mmW = cols * spacing[spec.col.axis];
    const mmH = rows * spacing[spec.row.axis];
    const k = Math.min(cw / mmW, ch / mmH);
    const w = mmW * k;
    const h = mmH * k;
    const x0 = (cw - w) / 2;
    const y0 = (ch - h) / 2;
    view.rect = { x0, y0, w, h };
    const out = canvas.getContext("2d");
    out.fillStyle = "#000";
    out.fillRect(0, 0, cw, ch);
    out.imageSmoothingEnabled = true;
    out.drawImage(offscreen, x0, y0, w, h);

    // Crosshair through the centres of the other two axes' current voxels.
    const colPos = this.#pos[spec.col.axis];
    const rowPos = this.#pos[spec.row.axis];
    const cx = x0 + ((spec.col.flip ? cols - 1 - colPos : colPos) + 0.5) * (w / cols);
    const cy = y0 + ((spec.row.flip ? rows - 1 - rowPos : rowPos) + 0.5) * (h / rows);
    out.strokeStyle = "rgba(80, 200, 255, 0.7)";
    out.lineWidth = Math.max(1, dpr);
    out.beginPath();
    out.moveTo(cx, y0);
    out.lineTo(cx, y0 + h);
    out.moveTo(x0, cy);
    out.lineTo(x0 + w, cy);
    out.stroke();

    // Orientation letters: left, right, top, bottom.
    out.fillStyle = "rgba(255, 255, 160, 0.9)";
    out.font = `${Math.round(12 * dpr)}px system-ui, sans-serif`;
    const pad = 4 * dpr;
    const side = (letter) => (this.#vol.orientationKnown || (letter !== "R" && letter !== "L") ? letter : "?");
    const [l, rgt, top, bottom] = spec.labels.map(side);
    out.textBaseline = "middle";
    out.textAlign = "left";
    out.fillText(l, x0 + pad, y0 + h / 2);
    out.textAlign = "right";
    out.fillText(rgt, x0 + w - pad, y0 + h / 2);
    out.textAlign = "center";
    out.textBaseline = "top";
    out.fillText(top, x0 + w / 2, y0 + pad);
    out.textBaseline = "bottom";
    out.fillText(bottom, x0 + w / 2, y0 + h - pad);

    view.slider.value = String(fixedIndex);
    view.label.textContent = `${spec.name} ${fixedIndex + 1}/${dims[spec.fixed]}`;
  }
}
