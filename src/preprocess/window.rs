//! CT windows: how Hounsfield units become the network's input channels.
//!
//! A radiologist never looks at raw HU: the range of interest is stretched to the display and
//! the rest saturates. The network gets the same views, one window per channel, so that 40 HU of
//! brain versus 70 HU of blood is a large difference in its input rather than 1 % of a
//! −1024..3071 range.

use ndarray::{Array3, ArrayView2};

use crate::error::try_filled;
use crate::{Error, Result};

/// A display window: `value = clamp((hu − (center − width / 2)) / width, 0, 1)`.
///
/// `hu` at or below `center − width/2` maps to 0, at or above `center + width/2` to 1, linearly
/// in between. NaN maps to 0 (treated as air), ±∞ saturate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Centre (level) in HU.
    pub center: f32,
    /// Width in HU, > 0.
    pub width: f32,
}

impl Window {
    /// Brain window 40/80 (0..80 HU): grey/white matter contrast; blood saturates white.
    pub const BRAIN: Window = Window {
        center: 40.0,
        width: 80.0,
    };
    /// Subdural window 75/215 (−32.5..182.5 HU). Chosen as the "blood" channel because it keeps
    /// blood (50–90 HU) distinct both from brain and from calcifications and partial-volume bone
    /// (100–180 HU), which the brain window flattens to the same white, and it shows thin
    /// extra-axial collections against the inner table of the skull.
    pub const SUBDURAL: Window = Window {
        center: 75.0,
        width: 215.0,
    };
    /// Bone window 600/2800 (−800..2000 HU): skull, fractures, and where the skull base causes
    /// beam-hardening look-alikes.
    pub const BONE: Window = Window {
        center: 600.0,
        width: 2800.0,
    };
    /// The network's default channels, in order.
    pub const DEFAULT_CHANNELS: [Window; 3] = [Window::BRAIN, Window::SUBDURAL, Window::BONE];

    /// A window, refusing widths that are not positive finite numbers.
    pub fn new(center: f32, width: f32) -> Result<Window> {
        if !(center.is_finite() && width.is_finite() && width > 0.0) {
            return Err(Error::InvalidInput(format!(
                "CT window {center}/{width}: the centre must be a number and the width above 0 HU"
            )));
        }
        Ok(Window { center, width })
    }

    /// The windowed value of one voxel, in `[0, 1]`.
    pub fn apply(&self, hu: f32) -> f32 {
        if hu.is_nan() {
            return 0.0;
        }
        ((hu - (self.center - self.width / 2.0)) / self.width).clamp(0.0, 1.0)
    }
}

/// One axial slice `[y, x]` as channel planes `[c, y, x]`, one per window, values in `[0, 1]`.
pub fn window_slice(slice: ArrayView2<'_, f32>, windows: &[Window]) -> Result<Array3<f32>> {
    let (ny, nx) = slice.dim();
    let plane = ny * nx;
    let mut out = try_filled(windows.len() * plane, 0.0f32, "the CT window channels")?;
    for (w, chunk) in windows.iter().zip(out.chunks_mut(plane.max(1))) {
        for (o, &hu) in chunk.iter_mut().zip(slice.iter()) {
            *o = w.apply(hu);
        }
    }
    Array3::from_shape_vec((windows.len(), ny, nx), out)
        .map_err(|e| Error::InvalidInput(format!("window channels {ny}×{nx}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn formula_edges_and_midpoint() {
        let w = Window::BRAIN;
        assert_eq!(w.apply(0.0), 0.0);
        assert_eq!(w.apply(-1000.0), 0.0);
        assert_eq!(w.apply(40.0), 0.5);
        assert_eq!(w.apply(80.0), 1.0);
        assert_eq!(w.apply(3000.0), 1.0);
        assert_eq!(w.apply(f32::NAN), 0.0);
        assert_eq!(w.apply(f32::INFINITY), 1.0);
        assert!((Window::SUBDURAL.apply(75.0) - 0.5).abs() < 1e-6);
        assert!((Window::BONE.apply(-800.0)).abs() < 1e-6);
    }

    #[test]
    fn rejects_bad_widths() {
        assert!(Window::new(40.0, 0.0).is_err());
        assert!(Window::new(40.0, -5.0).is_err());
        assert!(Window::new(f32::NAN, 80.0).is_err());
        assert_eq!(Window::new(40.0, 80.0).unwrap(), Window::BRAIN);
    }

    #[test]
    fn channels_in_window_order() {
        let s = array![[20.0f32, 60.0], [100.0, -50.0]];
        let c = window_slice(s.view(), &Window::DEFAULT_CHANNELS).unwrap();
        assert_eq!(c.dim(), (3, 2, 2));
        assert_eq!(c[[0, 0, 0]], 0.25);
        assert_eq!(c[[0, 1, 0]], 1.0);
        assert!((c[[1, 0, 1]] - (60.0 + 32.5) / 215.0).abs() < 1e-6);
        assert!((c[[2, 1, 1]] - (750.0 / 2800.0)).abs() < 1e-6);
    }
}
