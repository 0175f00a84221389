// The scan viewer and mask editor: NiiVue (BSD-2, www/niivue/, copied there by the web build)
// showing the scan the user opened, with the haemorrhage mask as NiiVue's drawing layer.
//
// Grids. NiiVue shows a volume on its own RAS-reoriented voxel grid, and its drawing layer (pen,
// fill, erase) lives on that grid. The core measures masks on its canonical stack. The one grid
// both agree on without assumptions is the input FILE's voxel order (`i` fastest), so masks cross
// between the two in file order: NiiVue's own reorientation (`img2RASstart`/`img2RASstep`, the
// mapping it uses to save a drawing) converts here, the core's (`Scan::from_file_order`) in Rust.
//
// Undo/redo keep the exact voxels each edit changed (indices, before, after), so undoing every
// edit restores the model's mask byte for byte, and nothing is kept per edit but what changed.


/** CT windows as [centre, width] in HU. */
export const PRESETS = Object.freeze({
  brain: [40, 80],
  subdural: [75, 215],
  bone: [500, 2000],
});

/** Editing tools; the keys are the keyboard shortcuts' names (see `SHORTCUTS` in app.js). */
export const Tool = Object.freeze({ NAVIGATE: "navigate", PEN: "pen", ERASE: "erase", FILL: "fill" });

/** Layout names → NiiVue's SLICE_TYPE names. */
const LAYOUTS = Object.freeze({ axial: "AXIAL", coronal: "CORONAL", sagittal: "SAGITTAL", multi: "MULTIPLANAR", render: "RENDER" });

/** A frame drawn, and the task after it. */
const nextFrame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));

/**
 * Name of the `performance.measure` entries around the viewer's heavy one-off work (starting
 * WebGL, loading a volume, setting the mask): NiiVue does it on the main thread, and where
 * WebGL is software (SwiftShader, no GPU) loading a volume blocks it for seconds. The tests tell
 * these apart from the app's own tasks, which must stay short.
 */
export const VIEWER_WORK = "ichnet:viewer";

/** Time a promise as a `VIEWER_WORK` measure. */
function timed(promise) {
  const t0 = performance.now();
  return promise.finally(() => performance.measure(VIEWER_WORK, { start: t0 }));
}

/** The mask's label in the drawing layer (NiiVue's first drawing colour, red). */
const BLOOD = 1;

/**
 * Labels of a comparison's overlay on the baseline (NiiVue's drawing colours): blood on both
 * scans red, on the follow-up only (new) yellow, on the baseline only (resolved) cyan.
 */
export const Growth = Object.freeze({ PERSISTING: 1, NEW: 4, RESOLVED: 5 });

export class ScanView {
  /** The NiiVue instance and module, once started (`#start`). */
  #nv = null;
  #lib = null;
  #canvas;
  /** Drawing as last committed, RAS order (what the undo history is relative to). */
  #shown = null;
  #undo = [];
  #redo = [];
  #tool = Tool.NAVIGATE;
  #penMm = 3;
  #opacity = 0.5;
  #visible = true;
  #ready;
  /** Set while the crosshair is moved by `goToMm` (a linked view following another). */
  #following = false;
  /** Called after every edit, undo and redo with the mask in file order. */
  onEdit = null;
  /**
   * Called with `{ vox: [i, j, k] (RAS grid), hu, mm: [x, y, z] (world, RAS+ mm), text, linked }`
   * when the crosshair moves; `linked` when `goToMm` moved it (another view leads).
   */
  onCursor = null;

  constructor(canvas) {
    this.#canvas = canvas;
  }

  /**
   * NiiVue, loaded and attached on first use: its module is 3 MB of JavaScript, so the page
   * (drop zone, options) is usable before it is parsed, and the parse is part of the viewer's
   * timed work (`VIEWER_WORK`) rather than of the page's start.
   */
  #start() {
    this.#ready ??= (async () => {
      const NV = await import("./niivue/niivue.js");
      this.#lib = NV;
      const nv = new NV.Niivue({
        backColor: [0, 0, 0, 1],
        // Radiological convention, as CT is read: the patient's right on the screen's left.
        isRadiologicalConvention: true,
        // Left button: crosshair (or the pen); right button: window by dragging; wheel: slices.
        dragMode: NV.DRAG_MODE.contrast,
        // The three slices as a grid (in a row on a wide screen each would be a third of its
        // width). The 3-D render is its own view ("3-D"), not a fourth tile: ray casting the
        // volume on every crosshair move costs seconds per frame where WebGL is software.
        multiplanarShowRender: NV.SHOW_RENDER.NEVER,
        multiplanarLayout: NV.MULTIPLANAR_TYPE.GRID,
        show3Dcrosshair: true,
        crosshairColor: [0.2, 0.9, 0.2, 1],
        dragAndDropEnabled: false,
        logLevel: "warn",
        loadingText: "",
        isOrientCube: false,
        penSize: 1,
        maxDrawUndoBitmaps: 2,
      });
      await nv.attachToCanvas(this.#canvas);
      nv.onLocationChange = (data) => {
        const v = data?.values?.[0];
        if (!v) return;
        this.onCursor?.({ vox: v.vox, hu: v.value, mm: Array.from(data.mm.slice(0, 3)), text: data.string, linked: this.#following });
      };
      // NiiVue calls this after each finished stroke (pen, erase, filled outline).
      nv.onDrawingChanged = (action) => {
        if (action === "draw") this.#commit();
      };
      this.#nv = nv;
    })();
    return this.#ready;
  }

  /** The NiiVue instance once started (for tests, and for pages that want more of its API). */
  get niivue() {
    return this.#nv;
  }

  /**
   * Show a scan from the bytes of the file the user opened (`.nii`, `.nii.gz`; a `.hdr` with
   * its `.img` as `img`). Rejects when NiiVue cannot read it: the caller then shows the NIfTI
   * the core writes.
   */
  async setScan(scan) {
    return timed(this.#start().then(() => this.#setScan(scan)));
  }

  async #setScan({ bytes, name, img = null, orientationKnown = true }) {
    const nv = this.#nv;
    for (const v of [...nv.volumes]) nv.removeVolume(v);
    nv.closeDrawing();
    if (img) nv.addVolume(await this.#lib.NVImage.new(bytes, name, "gray", 1, img));
    else await nv.loadFromArrayBuffer(bytes, name);
    if (!nv.volumes.length) throw new Error(`the viewer could not read ${name}`);
    // Without qform/sform the file does not say which side is left: no R/L letters then.
    nv.opts.isOrientationTextVisible = orientationKnown;
    this.#canvas.dataset.orientation = orientationKnown ? "known" : "unknown";
    this.#shown = null;
    this.#undo = [];
    this.#redo = [];
    this.setWindow(...PRESETS.brain);
    this.#applyTool();
    nv.drawScene();
    // NiiVue finishes the volume's textures in the next frames: wait for them, so that the
    // timed span holds the work (the tests tell the viewer's work from the app's by it).
    await nextFrame();
    await nextFrame();
  }

  /** Voxels of the shown scan's grid (the file's), or 0 before a scan is shown. */
  get voxelCount() {
    const d = this.#nv?.back?.hdr?.dims;
    return d ? d[1] * d[2] * d[3] : 0;
  }

  /** In-plane pixel size (mm) of the RAS grid, smallest of x and y: the pen's unit. */
  get pixelMm() {
    const p = this.#nv?.back?.pixDimsRAS ?? [1, 1, 1, 1];
    return Math.min(Math.abs(p[1]), Math.abs(p[2])) || 1;
  }

  /** Show `mask` (file order, 0/1) as the drawing; the undo history starts from it. */
  setMask(mask) {
    this.#setDrawing(mask, "mask", false);
  }

  /**
   * Show labels (file order, values of `Growth`) as the drawing, read-only: a comparison's
   * overlay. Editing is off until the next `setMask`.
   */
  setLabels(labels) {
    this.setTool(Tool.NAVIGATE);
    this.#setDrawing(labels, "overlay", true);
  }

  /**
   * The drawing from `file` (file order): 0/1 as blood (editable, the undo history starts from
   * it), or its labels as they are (read-only). Timed as the viewer's work.
   */
  #setDrawing(file, what, labels) {
    const t0 = performance.now();
    try {
      const nv = this.#nv;
      if (!nv?.back) return;
      if (!nv.drawBitmap) nv.createEmptyDrawing();
      if (file.length !== this.voxelCount) throw new Error(`the ${what} has ${file.length} voxels, the scan ${this.voxelCount}`);
      const ras = new Uint8Array(file.length);
      this.#walk((r, native) => (ras[r] = labels ? file[native] : file[native] ? BLOOD : 0));
      nv.drawBitmap.set(ras);
      this.#shown = labels ? null : ras;
      this.#undo = [];
      this.#redo = [];
      nv.refreshDrawing(true);
      this.#applyOverlay();
    } finally {
      performance.measure(VIEWER_WORK, { start: t0 });
    }
  }

  /** The drawing now, in file order (0/1). */
  mask() {
    if (!this.#nv?.back) return new Uint8Array(0);
    return this.#rasToFile(this.#nv.drawBitmap ?? new Uint8Array(this.voxelCount));
  }

  /** Window the CT: centre and width in HU. */
  setWindow(centre, width) {
    const v = this.#nv?.volumes[0];
    if (!v) return;
    v.cal_min = centre - width / 2;
    v.cal_max = centre + width / 2;
    this.#nv.updateGLVolume();
  }

  /** Overlay visibility and opacity (0–1). */
  setOverlay({ visible = this.#visible, opacity = this.#opacity } = {}) {
    this.#visible = visible;
    this.#opacity = opacity;
    this.#applyOverlay();
  }

  #applyOverlay() {
    this.#nv?.setDrawOpacity(this.#visible ? this.#opacity : 0);
  }

  /** "axial" | "coronal" | "sagittal" | "multi" | "render" (3-D). */
  setLayout(name) {
    if (!(name in LAYOUTS)) throw new Error(`no layout "${name}"`);
    this.#nv?.setSliceType(this.#lib.SLICE_TYPE[LAYOUTS[name]]);
  }

  /** Zoom the 2-D views by `factor` about the crosshair (1 resets zoom and pan). */
  zoom(factor) {
    if (!this.#nv) return;
    const p = this.#nv.scene.pan2Dxyzmm;
    if (factor === 1) this.#nv.scene.pan2Dxyzmm = [0, 0, 0, 1];
    else p[3] = Math.min(8, Math.max(0.5, p[3] * factor));
    this.#nv.drawScene();
  }

  /** Move the crosshair to a voxel of the RAS grid `[x, y, z]`. */
  goToVoxel(vox) {
    const nv = this.#nv;
    if (!nv?.back) return;
    nv.scene.crosshairPos = nv.vox2frac(vox);
    nv.createOnLocationChange?.();
    nv.drawScene();
  }

  /** The crosshair in world coordinates (RAS+ mm, the file's qform/sform), or null. */
  get crosshairMm() {
    const nv = this.#nv;
    if (!nv?.back) return null;
    return Array.from(nv.frac2mm(nv.scene.crosshairPos, 0, true).slice(0, 3));
  }

  /**
   * Move the crosshair to a world point (RAS+ mm; clamped to the volume): how a linked view
   * follows another. The cursor callback then says `linked`, so it is not echoed back.
   */
  goToMm(mm) {
    const nv = this.#nv;
    if (!nv?.back) return;
    const frac = Array.from(nv.mm2frac(mm, 0, true)).slice(0, 3).map((f) => Math.min(1, Math.max(0, f)));
    nv.scene.crosshairPos = frac;
    this.#following = true;
    try {
      nv.createOnLocationChange?.();
    } finally {
      this.#following = false;
    }
    nv.drawScene();
  }

  get tool() {
    return this.#tool;
  }

  /** Choose the tool: navigate (crosshair), pen (add), erase, fill (a closed outline, filled). */
  setTool(tool) {
    if (!Object.values(Tool).includes(tool)) throw new Error(`no tool "${tool}"`);
    this.#tool = tool;
    this.#applyTool();
  }

  /** Pen diameter in mm (rounded to whole pixels of the in-plane grid, at least one). */
  setPenMm(mm) {
    this.#penMm = mm;
    this.#applyTool();
  }

  get penVoxels() {
    return Math.max(1, Math.round(this.#penMm / this.pixelMm));
  }

  #applyTool() {
    const nv = this.#nv;
    if (!nv?.back) return;
    const drawing = this.#tool !== Tool.NAVIGATE;
    nv.setDrawingEnabled(drawing);
    if (!drawing) return;
    nv.opts.penSize = this.#tool === Tool.FILL ? 1 : this.penVoxels;
    nv.setPenValue(this.#tool === Tool.ERASE ? 0 : BLOOD, this.#tool === Tool.FILL);
    // A filled outline adds blood everywhere inside it; erasing is a pen stroke.
    nv.drawFillOverwrites = true;
  }

  get canUndo() {
    return this.#undo.length > 0;
  }

  get canRedo() {
    return this.#redo.length > 0;
  }

  /** Undo the last edit (a stroke, a fill); false when there is none. */
  undo() {
    if (!this.#nv) return false;
    const e = this.#undo.pop();
    if (!e) return false;
    this.#apply(e, "before");
    this.#redo.push(e);
    return true;
  }

  /** Redo the last undone edit; false when there is none. */
  redo() {
    if (!this.#nv) return false;
    const e = this.#redo.pop();
    if (!e) return false;
    this.#apply(e, "after");
    this.#undo.push(e);
    return true;
  }

  #apply(edit, which) {
    const bmp = this.#nv.drawBitmap;
    const vals = edit[which];
    for (let k = 0; k < edit.index.length; k++) {
      bmp[edit.index[k]] = vals[k];
      this.#shown[edit.index[k]] = vals[k];
    }
    this.#nv.refreshDrawing(true);
    this.onEdit?.(this.mask());
  }

  /** After a stroke: keep what changed (if anything) and tell the page. */
  #commit() {
    const bmp = this.#nv.drawBitmap;
    if (!bmp || !this.#shown) return;
    // Any label NiiVue wrote counts as blood: the mask is 0/1.
    const changed = [];
    for (let i = 0; i < bmp.length; i++) {
      if (bmp[i] > 1) bmp[i] = BLOOD;
      if (bmp[i] !== this.#shown[i]) changed.push(i);
    }
    if (!changed.length) return;
    const index = Uint32Array.from(changed);
    const before = new Uint8Array(index.length);
    const after = new Uint8Array(index.length);
    for (let k = 0; k < index.length; k++) {
      before[k] = this.#shown[index[k]];
      after[k] = bmp[index[k]];
      this.#shown[index[k]] = after[k];
    }
    this.#undo.push({ index, before, after });
    this.#redo = [];
    this.#nv.refreshDrawing(true);
    this.onEdit?.(this.mask());
  }

  /** NiiVue's reorientation of the shown scan: RAS voxel order ↔ file voxel order. */
  #walk(visit) {
    const back = this.#nv.back;
    const start = back.img2RASstart;
    const step = back.img2RASstep;
    const d = back.dimsRAS;
    let ras = 0;
    for (let rz = 0; rz < d[3]; rz++) {
      const zi = start[2] + rz * step[2];
      for (let ry = 0; ry < d[2]; ry++) {
        const yi = start[1] + ry * step[1];
        for (let rx = 0; rx < d[1]; rx++) visit(ras++, start[0] + rx * step[0] + yi + zi);
      }
    }
  }

  #rasToFile(ras) {
    const out = new Uint8Array(ras.length);
    this.#walk((r, native) => (out[native] = ras[r] ? 1 : 0));
    return out;
  }
}
