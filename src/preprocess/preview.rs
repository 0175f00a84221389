//! PNG montages of axial slices with a mask outlined, for checking results by eye (native only).
//!
//! Slices are drawn the way radiologists read them: anterior at the top, the patient's right on
//! the viewer's left (canonical `x` grows to the right, so columns are mirrored).

use ndarray::Array3;

use super::window::Window;
use crate::error::try_filled;
use crate::{Error, Result, Stack};

/// RGB PNG bytes: the `slices` (indices into the stack) side by side in rows of `cols`, in
/// `window` grey, each pixel drawn as `scale`×`scale`, with the edge of `mask` (if any) in red.
pub fn montage_png(
    stack: &Stack,
    mask: Option<&Array3<u8>>,
    slices: &[usize],
    window: Window,
    cols: usize,
    scale: usize,
) -> Result<Vec<u8>> {
    let (nz, ny, nx) = stack.dims();
    if let Some(m) = mask
        && m.dim() != stack.dims()
    {
        return Err(Error::InvalidInput(format!(
            "mask {:?} and scan {:?} differ in shape",
            m.dim(),
            stack.dims()
        )));
    }
    if slices.is_empty() || slices.iter().any(|&z| z >= nz) || cols == 0 || scale == 0 {
        return Err(Error::InvalidInput(format!(
            "montage of slices {slices:?} of {nz} in {cols} columns at ×{scale}: need at least \
             one slice, all below {nz}, and positive columns and scale"
        )));
    }
    let cols = cols.min(slices.len());
    let rows = slices.len().div_ceil(cols);
    let (w, h) = (cols * nx * scale, rows * ny * scale);
    let mut rgb = try_filled(w * h * 3, 0u8, "a PNG montage")?;
    for (k, &z) in slices.iter().enumerate() {
        let (ox, oy) = ((k % cols) * nx * scale, (k / cols) * ny * scale);
        for y in 0..ny {
            for x in 0..nx {
                let grey = (window.apply(stack.hu[[z, y, x]]) * 255.0).round() as u8;
                let edge = mask.is_some_and(|m| is_edge(m, z, y, x));
                let px = if edge { [255, 0, 0] } else { [grey; 3] };
                let (row0, col0) = (oy + (ny - 1 - y) * scale, ox + (nx - 1 - x) * scale);
                for r in row0..row0 + scale {
                    for c in col0..col0 + scale {
                        let i = (r * w + c) * 3;
                        rgb[i..i + 3].copy_from_slice(&px);
                    }
                }
            }
        }
    }
    encode_rgb(&rgb, w, h)
}

/// A mask voxel with a 4-neighbour (in its slice) outside the mask or the image.
fn is_edge(m: &Array3<u8>, z: usize, y: usize, x: usize) -> bool {
    let (_, ny, nx) = m.dim();
    if m[[z, y, x]] == 0 {
        return false;
    }
    y == 0
        || x == 0
        || y + 1 == ny
        || x + 1 == nx
        || m[[z, y - 1, x]] == 0
        || m[[z, y + 1, x]] == 0
        || m[[z, y, x - 1]] == 0
        || m[[z, y, x + 1]] == 0
}

fn encode_rgb(rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>> {
    let too_big = || Error::InvalidInput(format!("a {w}×{h} montage is too large for PNG"));
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| too_big())?,
        u32::try_from(h).map_err(|_| too_big())?,
    );
    let mut out = Vec::new();
    let png_err = |e: png::EncodingError| Error::InvalidInput(format!("PNG encoding: {e}"));
    let mut enc = png::Encoder::new(&mut out, w32, h32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}
