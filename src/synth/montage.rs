//! A picture of generated cases for a human to check: axial slices in the brain window with the
//! mask's outline, as 8-bit palette indices (grey 0..=253, outline [`OUTLINE`]).
//!
//! Slices are shown in radiological convention (patient right on the image's left, anterior up),
//! which is how a reader would look at them, so a wrong flip is visible at a glance.

use super::Case;

/// Palette index of the mask outline.
pub const OUTLINE: u8 = 254;

/// The 256-entry RGB palette: a grey ramp, red for the outline.
pub fn palette() -> Vec<u8> {
    let mut p = Vec::with_capacity(256 * 3);
    for i in 0..=253u16 {
        let g = (i * 255 / 253) as u8;
        p.extend_from_slice(&[g, g, g]);
    }
    p.extend_from_slice(&[255, 40, 40]);
    p.extend_from_slice(&[255, 220, 0]);
    p
}

/// One row of `cols` thumbnails (`size`×`size` each) of `case`: the slice with the most blood
/// first (when there is any), then slices spread evenly through the volume.
pub fn case_row(case: &Case, cols: usize, size: usize) -> Vec<u8> {
    let (nk, nj, ni) = case.image.dim();
    let mut slices: Vec<usize> = Vec::new();
    let areas: Vec<usize> = (0..nk)
        .map(|k| {
            case.mask
                .index_axis(ndarray::Axis(0), k)
                .iter()
                .filter(|&&m| m != 0)
                .count()
        })
        .collect();
    if let Some((k, _)) = areas
        .iter()
        .enumerate()
        .filter(|(_, a)| **a > 0)
        .max_by_key(|(_, a)| **a)
    {
        slices.push(k);
    }
    let spread = cols - slices.len().min(cols);
    for s in 0..spread {
        let k = ((s as f64 + 0.5) / spread as f64 * nk as f64) as usize;
        slices.push(k.min(nk.saturating_sub(1)));
    }
    if slices.len() > 1 {
        slices[1..].sort_unstable();
    }
    let width = cols * size;
    let mut out = vec![0u8; width * size];
    let n = ni.max(nj).max(1) as f64;
    let mut inside = vec![false; size * size];
    for (c, &k) in slices.iter().enumerate().take(cols) {
        inside.iter_mut().for_each(|m| *m = false);
        for py in 0..size {
            for px in 0..size {
                // Radiological view: image left = patient right (high x), top = anterior (high y).
                let x = ni as f64 - 1.0 - (px as f64 + 0.5) / size as f64 * n;
                let y = nj as f64 - 1.0 - (py as f64 + 0.5) / size as f64 * n;
                if x < 0.0 || y < 0.0 || nk == 0 {
                    continue;
                }
                let (xi, yi) = (x as usize, y as usize);
                let hu = case.image[[k, yi, xi]];
                out[py * width + c * size + px] = ((hu / 80.0).clamp(0.0, 1.0) * 253.0) as u8;
                inside[py * size + px] = case.mask[[k, yi, xi]] != 0;
            }
        }
        // Outline drawn at thumbnail resolution so that it stays a closed line.
        for py in 0..size {
            for px in 0..size {
                let at = |y: usize, x: usize| inside[y * size + x];
                let edge = at(py, px)
                    && (py == 0
                        || px == 0
                        || py + 1 == size
                        || px + 1 == size
                        || !at(py - 1, px)
                        || !at(py + 1, px)
                        || !at(py, px - 1)
                        || !at(py, px + 1));
                if edge {
                    out[py * width + c * size + px] = OUTLINE;
                }
            }
        }
    }
    out
}
