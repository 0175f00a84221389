//! What the network sees: axial slices resampled to a fixed in-plane pixel size around the brain,
//! in three CT windows. Training and inference both go through here, so the two can never
//! disagree about scale, windows or grid placement.

use crate::error::{Error, Result, try_filled};
use crate::preprocess::Window;
use ndarray::{Array2, ArrayView2, ArrayView3, Axis};

/// In-plane pixel size of the network's grid, mm. Scans come at 0.4–1 mm; 1 mm keeps a 1 mL
/// bleed (12 mm across) a dozen pixels wide and a whole brain under 200×200 pixels.
pub const PIXEL_MM: f32 = 1.0;

/// Margin around the brain's bounding box on the network grid, mm: the network sees the inner
/// skull surface around the brain (blood's look-alikes live there). Inference and training place
/// the grid with the same margin, so it lives with the grid.
pub const BOX_MARGIN_MM: f32 = 8.0;

/// The CT windows that form the input channels, each mapping its HU range linearly onto `[0, 1]`
/// and clamping: brain 0–80 HU (grey/white matter and oedema), blood 40–100 HU (haematoma
/// against everything else), and a wide −100–300 HU window that keeps calcification (> 100 HU)
/// and bone apart from blood, which both narrow windows saturate. Chosen for the network (the
/// shipped weights were trained on exactly these), not the display presets of [`Window`].
pub const WINDOWS: [Window; 3] = [
    Window {
        center: 40.0,
        width: 80.0,
    },
    Window {
        center: 70.0,
        width: 60.0,
    },
    Window {
        center: 100.0,
        width: 400.0,
    },
];

/// Number of input channels.
pub const CHANNELS: usize = WINDOWS.len();

/// How far above and below a slice its context planes lie, mm (at least one slice). A 5 mm slice
/// alone often cannot tell a sulcus or the inner table from thin blood; the slices a reader
/// scrolls to next can (blood is continuous across them, bone and partial-volume rims change).
/// 5 mm is the clinical slice thickness: on such scans the context planes are the neighbours
/// themselves, on thin-slice scans they are interpolated at the same physical distance, so the
/// network sees the same anatomy whatever the reconstruction.
pub const CONTEXT_MM: f32 = 5.0;

/// Window of the context planes: the brain window (CSF dark, grey matter mid, blood bright),
/// which is where sulcus and blood differ. One window per context plane keeps the first
/// convolution small (5 input channels, not 9).
pub const CONTEXT_WINDOW: Window = Window {
    center: 40.0,
    width: 80.0,
};

/// What the network's input channels hold, told apart by the weights' channel count: a weights
/// file trained on single slices (3 channels, the layout before 2.5-D input) still loads and
/// runs as trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The slice in the three [`WINDOWS`].
    Slice,
    /// The slice in the three [`WINDOWS`], then the planes [`CONTEXT_MM`] below and above it
    /// in [`CONTEXT_WINDOW`] (2.5-D).
    Context,
}

impl Layout {
    /// Every supported layout, the default (the shipped model's) first.
    pub const ALL: [Layout; 2] = [Layout::Slice, Layout::Context];

    /// Input channels of this layout.
    pub fn channels(self) -> usize {
        match self {
            Layout::Slice => CHANNELS,
            Layout::Context => CHANNELS + 2,
        }
    }

    /// The layout of a network with `channels` input channels.
    pub fn from_channels(channels: usize) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.channels() == channels)
            .ok_or_else(|| {
                Error::Weights(format!(
                    "the network takes {channels} input channels; this version builds {} (one \
                     slice) or {} (a slice with its neighbours)",
                    Layout::Slice.channels(),
                    Layout::Context.channels()
                ))
            })
    }

    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Slice => "slice",
            Layout::Context => "context",
        }
    }
}

/// Fractional stack slices of slice `z`'s two context planes (below, above), [`CONTEXT_MM`]
/// away or one slice, whichever is further, clamped to the stack (the end slices stand in for
/// what the scan did not cover).
pub fn context_z(z: usize, slices: usize, dz: f32) -> [f32; 2] {
    let last = slices.saturating_sub(1) as f32;
    let off = if dz.is_finite() && dz > 0.0 {
        CONTEXT_MM.max(dz) / dz
    } else {
        1.0
    };
    let z = z as f32;
    [(z - off).clamp(0.0, last), (z + off).clamp(0.0, last)]
}

/// Write one slice's network input (`layout.channels()` planes) into `out`: `centre` in the
/// [`WINDOWS`], and for [`Layout::Context`] the two `context` planes in [`CONTEXT_WINDOW`].
pub fn input_into(layout: Layout, centre: &[f32], context: [&[f32]; 2], out: &mut [f32]) {
    let n = centre.len();
    window_into(centre, &mut out[..CHANNELS * n]);
    if layout == Layout::Context {
        for (plane, hu) in out[CHANNELS * n..].chunks_mut(n.max(1)).zip(context) {
            for (o, &v) in plane.iter_mut().zip(hu) {
                *o = CONTEXT_WINDOW.apply(v);
            }
        }
    }
}

/// HU written for network-grid pixels that fall outside the scan's field of view (air).
pub const OUTSIDE_HU: f32 = -1000.0;

/// Write the windowed channels of `hu` (one plane) into `out` (`CHANNELS` planes, same length).
pub fn window_into(hu: &[f32], out: &mut [f32]) {
    let n = hu.len();
    for (w, plane) in WINDOWS.iter().zip(out.chunks_mut(n.max(1))) {
        for (o, &v) in plane.iter_mut().zip(hu) {
            *o = w.apply(v);
        }
    }
}

/// Placement of the network's in-plane grid on a stack's slices: network pixel `(i, j)` lies at
/// stack voxel coordinates `(y0 + i·sy, x0 + j·sx)` (fractional, in the crate's one pixel-centre
/// convention: voxel `k`'s centre is at coordinate `k`, its square spans `k − ½ .. k + ½`, as in
/// [`crate::model::bilinear`]). Built once per scan from the
/// brain's bounding box, so that every slice uses the same grid and results map back exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceGrid {
    /// Stack row of network row 0.
    pub y0: f32,
    /// Stack column of network column 0.
    pub x0: f32,
    /// Stack rows per network row (`PIXEL_MM / spacing_y`).
    pub sy: f32,
    /// Stack columns per network column.
    pub sx: f32,
    /// Network grid height (a multiple of the model's size multiple).
    pub h: usize,
    /// Network grid width.
    pub w: usize,
}

/// Largest network grid side accepted (pixels at [`PIXEL_MM`]): a 40 cm field of view. Larger
/// requests come from absurd voxel sizes and would only exhaust memory.
pub const MAX_SIDE: usize = 512;

impl SliceGrid {
    /// Grid covering stack rows `ys` and columns `xs` (half-open, voxel indices) plus `margin_mm`,
    /// with sides rounded up to a multiple of `multiple` and centred on the box.
    pub fn around(
        ys: (usize, usize),
        xs: (usize, usize),
        spacing_yx: [f32; 2],
        margin_mm: f32,
        multiple: usize,
    ) -> Result<Self> {
        let [dy, dx] = spacing_yx;
        if !(dy.is_finite() && dx.is_finite() && dy > 0.0 && dx > 0.0) {
            return Err(Error::InvalidInput(format!(
                "in-plane voxel size {dy}×{dx} mm: voxel sizes must be positive"
            )));
        }
        let m = multiple.max(1);
        let side = |lo: usize, hi: usize, d: f32| -> Result<(f32, usize)> {
            let extent_mm = (hi.saturating_sub(lo)) as f32 * d + 2.0 * margin_mm;
            let n = ((extent_mm / PIXEL_MM).ceil() as usize).max(m);
            let n = n.div_ceil(m) * m;
            if n > MAX_SIDE {
                return Err(Error::TooLarge(format!(
                    "the brain spans {extent_mm:.0} mm in-plane; at most {} mm is supported",
                    MAX_SIDE as f32 * PIXEL_MM
                )));
            }
            let step = PIXEL_MM / d;
            // Centre of the box in voxel coordinates (voxel centres are at integer indices).
            let centre = (lo as f32 + hi as f32 - 1.0) / 2.0;
            let start = centre - (n as f32 - 1.0) / 2.0 * step;
            Ok((start, n))
        };
        let (y0, h) = side(ys.0, ys.1, dy)?;
        let (x0, w) = side(xs.0, xs.1, dx)?;
        Ok(SliceGrid {
            y0,
            x0,
            sy: PIXEL_MM / dy,
            sx: PIXEL_MM / dx,
            h,
            w,
        })
    }

    /// Number of network pixels in one plane.
    pub fn len(&self) -> usize {
        self.h * self.w
    }

    /// Whether the grid is empty.
    pub fn is_empty(&self) -> bool {
        self.h == 0 || self.w == 0
    }

    /// Resample one stack slice onto the grid (bilinear; [`OUTSIDE_HU`] beyond the scan).
    pub fn resample(&self, slice: ArrayView2<'_, f32>, out: &mut [f32]) {
        let (ny, nx) = slice.dim();
        for i in 0..self.h {
            let y = self.y0 + i as f32 * self.sy;
            for j in 0..self.w {
                let x = self.x0 + j as f32 * self.sx;
                out[i * self.w + j] = sample(slice, ny, nx, y, x).unwrap_or(OUTSIDE_HU);
            }
        }
    }

    /// Resample the stack `hu` (`[z, y, x]`) at fractional slice `zf` onto the grid: bilinear
    /// in-plane, linear between the two nearest slices. `tmp` is a work plane of the grid's size.
    pub fn resample_z(&self, hu: ArrayView3<'_, f32>, zf: f32, out: &mut [f32], tmp: &mut [f32]) {
        let nz = hu.dim().0;
        if nz == 0 {
            out.fill(OUTSIDE_HU);
            return;
        }
        let zf = zf.clamp(0.0, (nz - 1) as f32);
        let lo = zf.floor() as usize;
        let f = zf - lo as f32;
        self.resample(hu.index_axis(Axis(0), lo), out);
        if f > 1e-4 && lo + 1 < nz {
            self.resample(hu.index_axis(Axis(0), lo + 1), tmp);
            for (o, &t) in out.iter_mut().zip(tmp.iter()) {
                *o = *o * (1.0 - f) + t * f;
            }
        }
    }

    /// Nearest-neighbour resampling of a 0/1 plane (labels, brain mask) onto the grid.
    pub fn resample_labels(&self, plane: ArrayView2<'_, u8>, out: &mut [u8]) {
        let (ny, nx) = plane.dim();
        for i in 0..self.h {
            let y = (self.y0 + i as f32 * self.sy).round();
            for j in 0..self.w {
                let x = (self.x0 + j as f32 * self.sx).round();
                out[i * self.w + j] =
                    if y >= 0.0 && x >= 0.0 && (y as usize) < ny && (x as usize) < nx {
                        plane[[y as usize, x as usize]]
                    } else {
                        0
                    };
            }
        }
    }

    /// Map a plane of grid values (probabilities) back onto a stack slice of `ny × nx` voxels,
    /// bilinearly; voxels outside the grid get 0.
    pub fn to_stack(&self, plane: &[f32], ny: usize, nx: usize) -> Result<Array2<f32>> {
        let mut buf = try_filled(ny * nx, 0.0f32, "a probability slice")?;
        let view = self.plane_view(plane)?;
        self.fill_stack_plane(view, &mut buf, nx);
        Array2::from_shape_vec((ny, nx), buf)
            .map_err(|e| Error::InvalidInput(format!("probability slice {ny}×{nx}: {e}")))
    }

    /// `plane` as the grid's `h × w` plane, or an error naming both sizes.
    pub fn plane_view<'a>(&self, plane: &'a [f32]) -> Result<ArrayView2<'a, f32>> {
        ArrayView2::from_shape((self.h, self.w), plane).map_err(|e| {
            Error::InvalidInput(format!(
                "probability plane has {} values, the grid {}×{}: {e}",
                plane.len(),
                self.h,
                self.w
            ))
        })
    }

    /// [`SliceGrid::to_stack`] into `out`, a stack slice of rows of `nx` voxels (row-major),
    /// which it overwrites (0 outside the grid): the pipeline fills a whole volume's slices
    /// side by side without a buffer per slice.
    pub fn fill_stack_plane(&self, view: ArrayView2<'_, f32>, out: &mut [f32], nx: usize) {
        if self.is_empty() || nx == 0 {
            out.fill(0.0);
            return;
        }
        let ny = out.len() / nx;
        // Bilinear is separable: each column's (and each row's) two neighbours and weight are
        // worked out once, not per voxel — a 512² scan has 8 M voxels to fill. The arithmetic
        // per voxel is `sample`'s, so the values are the same.
        let taps =
            |n: usize, origin: f32, step: f32, len: usize| -> Vec<Option<(usize, usize, f32)>> {
                (0..n)
                    .map(|i| {
                        let g = (i as f32 - origin) / step;
                        if g < -0.5 || g > len as f32 - 0.5 {
                            return None;
                        }
                        let c = g.clamp(0.0, (len - 1) as f32);
                        let lo = c.floor() as usize;
                        Some((lo, (lo + 1).min(len - 1), c - lo as f32))
                    })
                    .collect()
            };
        let cols = taps(nx, self.x0, self.sx, self.w);
        // Each grid row is interpolated across (to every stack column) once, not once per stack
        // row that reads it; the stack rows are then a vectorisable blend of two such rows. Same
        // operations in the same order per voxel as the direct form, so the same values.
        let across = |gy: usize, buf: &mut [f32]| {
            let r = view.row(gy);
            for (b, col) in buf.iter_mut().zip(&cols) {
                *b = match *col {
                    Some((x0, x1, fx)) => r[x0] * (1.0 - fx) + r[x1] * fx,
                    None => 0.0,
                };
            }
        };
        let (mut top, mut bot) = ((usize::MAX, vec![0f32; nx]), (usize::MAX, vec![0f32; nx]));
        for (row, dst) in taps(ny, self.y0, self.sy, self.h)
            .into_iter()
            .zip(out.chunks_exact_mut(nx))
        {
            let Some((y0, y1, fy)) = row else {
                dst.fill(0.0);
                continue;
            };
            if top.0 != y0 {
                if bot.0 == y0 {
                    std::mem::swap(&mut top, &mut bot);
                } else {
                    across(y0, &mut top.1);
                    top.0 = y0;
                }
            }
            if bot.0 != y1 {
                across(y1, &mut bot.1);
                bot.0 = y1;
            }
            for ((o, &t), &b) in dst.iter_mut().zip(&top.1).zip(&bot.1) {
                *o = t * (1.0 - fy) + b * fy;
            }
        }
    }
}

/// Bilinear sample at fractional `(y, x)`; `None` more than half a voxel outside the plane.
fn sample(p: ArrayView2<'_, f32>, ny: usize, nx: usize, y: f32, x: f32) -> Option<f32> {
    if ny == 0 || nx == 0 || y < -0.5 || x < -0.5 || y > ny as f32 - 0.5 || x > nx as f32 - 0.5 {
        return None;
    }
    let y = y.clamp(0.0, (ny - 1) as f32);
    let x = x.clamp(0.0, (nx - 1) as f32);
    let y0 = y.floor() as usize;
    let x0 = x.floor() as usize;
    let y1 = (y0 + 1).min(ny - 1);
    let x1 = (x0 + 1).min(nx - 1);
    let fy = y - y0 as f32;
    let fx = x - x0 as f32;
    let top = p[[y0, x0]] * (1.0 - fx) + p[[y0, x1]] * fx;
    let bot = p[[y1, x0]] * (1.0 - fx) + p[[y1, x1]] * fx;
    Some(top * (1.0 - fy) + bot * fy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_round_trip_keeps_values() {
        // A 1 mm grid on a 1 mm slice is the identity: resample then map back.
        let plane = Array2::from_shape_fn((20, 24), |(y, x)| (y * 24 + x) as f32);
        let g = SliceGrid::around((2, 18), (3, 21), [1.0, 1.0], 0.0, 4).unwrap();
        assert_eq!((g.h % 4, g.w % 4), (0, 0));
        let mut buf = vec![0.0; g.len()];
        g.resample(plane.view(), &mut buf);
        let back = g.to_stack(&buf, 20, 24).unwrap();
        for y in 3..17 {
            for x in 4..20 {
                assert!((back[[y, x]] - plane[[y, x]]).abs() < 1e-3, "{y},{x}");
            }
        }
    }

    /// The row-blending form of `to_stack` gives, voxel for voxel, exactly the value of the
    /// direct bilinear sample of the grid plane (0 outside it), on a 0.45 mm stack whose grid
    /// rows each serve two or three stack rows.
    #[test]
    fn to_stack_equals_the_bilinear_sample_of_every_voxel() {
        let (ny, nx) = (57, 49);
        let g = SliceGrid::around((6, 50), (3, 40), [0.45, 0.45], 2.0, 4).unwrap();
        let plane: Vec<f32> = (0..g.len())
            .map(|i| ((i * 7919) % 1009) as f32 / 1009.0)
            .collect();
        let view = ArrayView2::from_shape((g.h, g.w), &plane[..]).unwrap();
        let back = g.to_stack(&plane, ny, nx).unwrap();
        let mut inside = 0;
        for y in 0..ny {
            for x in 0..nx {
                let gy = (y as f32 - g.y0) / g.sy;
                let gx = (x as f32 - g.x0) / g.sx;
                let want = sample(view, g.h, g.w, gy, gx);
                inside += usize::from(want.is_some());
                assert_eq!(back[[y, x]], want.unwrap_or(0.0), "voxel ({y}, {x})");
            }
        }
        // Both inside and outside the grid were checked.
        assert!(inside > 100 && inside < ny * nx, "{inside}");
    }

    #[test]
    fn windows_clamp_to_unit_range() {
        let hu = [-1000.0, 40.0, 2000.0];
        let mut out = [0.0; 9];
        window_into(&hu, &mut out);
        assert_eq!(&out[0..3], &[0.0, 0.5, 1.0]);
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn context_planes_lie_at_five_mm_or_one_slice() {
        // 1 mm slices: five slices away; 5 mm: the neighbours; 7 mm: still the neighbours.
        assert_eq!(context_z(10, 40, 1.0), [5.0, 15.0]);
        assert_eq!(context_z(10, 40, 5.0), [9.0, 11.0]);
        assert_eq!(context_z(10, 40, 7.0), [9.0, 11.0]);
        // 2 mm slices: 2.5 slices away, clamped at the ends of the stack.
        assert_eq!(context_z(1, 4, 2.0), [0.0, 3.0]);
        assert_eq!(Layout::from_channels(5).unwrap(), Layout::Context);
        assert_eq!(Layout::from_channels(3).unwrap(), Layout::Slice);
        assert!(Layout::from_channels(4).is_err());
    }

    #[test]
    fn resample_z_interpolates_between_slices() {
        // Slice k holds the value 10·k everywhere: at z = 1.25 the plane reads 12.5.
        let hu = ndarray::Array3::from_shape_fn((4, 8, 8), |(z, _, _)| 10.0 * z as f32);
        let g = SliceGrid::around((0, 8), (0, 8), [1.0, 1.0], 0.0, 4).unwrap();
        let (mut out, mut tmp) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        g.resample_z(hu.view(), 1.25, &mut out, &mut tmp);
        assert!(out.iter().all(|&v| (v - 12.5).abs() < 1e-4), "{out:?}");
        g.resample_z(hu.view(), 9.0, &mut out, &mut tmp);
        assert!(out.iter().all(|&v| (v - 30.0).abs() < 1e-4));
        // The context channels hold the brain window of the planes: 40 HU is mid-grey.
        let centre = vec![40.0; 4];
        let mut x = vec![0.0; 5 * 4];
        input_into(Layout::Context, &centre, [&[0.0; 4], &[80.0; 4]], &mut x);
        assert_eq!(&x[12..], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        input_into(
            Layout::Slice,
            &centre,
            [&[0.0; 4], &[80.0; 4]],
            &mut x[..12],
        );
        assert_eq!(x[0], 0.5);
    }

    #[test]
    fn absurd_voxel_size_is_refused() {
        assert!(SliceGrid::around((0, 10), (0, 10), [0.0, 1.0], 0.0, 4).is_err());
        assert!(SliceGrid::around((0, 10), (0, 10), [100.0, 1.0], 0.0, 4).is_err());
    }
}
