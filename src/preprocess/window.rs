//! CT windows: how Hounsfield units become grey values in `[0, 1]`.
//!
//! A radiologist never looks at raw HU: the range of interest is stretched to the display and
//! the rest saturates. [`Window`] is that mapping, used in one way everywhere: the display presets
//! here (previews, montages) and the network's input channels, which are defined as windows in
//! [`crate::model::input::WINDOWS`] (its own choice of ranges, made for the network, not for
//! the eye) and applied with the same [`Window::apply`].

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
