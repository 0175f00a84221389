//! The one error type of the crate.
//!
//! Every message is a sentence a radiologist or an embedding developer can act on, and carries the
//! numbers that explain it ("dims 512×512×0: a volume needs at least one slice"). The CLI prints
//! `Display` as-is; the wasm layer turns it into a JS `Error` with the same text.

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, from bytes to report.
///
/// `#[non_exhaustive]` because new stages add new failure modes; match with a wildcard arm.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- input bytes / NIfTI ------------------------------------------------------------------
    /// The bytes are not a NIfTI-1/NIfTI-2/Analyze file (magic and header size do not match).
    #[error("{0}")]
    NotNifti(String),
    /// The file ends before the header or the voxel data it announces.
    #[error("{0}")]
    Truncated(String),
    /// A gzip stream that cannot be inflated.
    #[error("the gzip stream is damaged or cut short: {0}")]
    Gzip(String),
    /// A header field with an impossible value (dimensions, voxel sizes, offsets).
    #[error("{0}")]
    BadHeader(String),
    /// Data that is valid NIfTI but not a CT volume we can segment (RGB, complex, 5-D ...).
    #[error("{0}")]
    Unsupported(String),
    /// A volume or buffer larger than the limit this build accepts, refused before allocation.
    #[error("{0}")]
    TooLarge(String),
    /// An allocation that the allocator refused (checked with `try_reserve`).
    #[error("not enough memory for {what}: {bytes} bytes could not be allocated")]
    OutOfMemory {
        /// What the memory was for.
        what: &'static str,
        /// How many bytes were asked for.
        bytes: usize,
    },

    /// The voxel values cannot be Hounsfield units of a head CT (see [`crate::io::not_hu_reason`]):
    /// a volume in mL measured on them would look exact and mean nothing, so quantification is
    /// refused unless the caller says the values are HU (`--assume-hu`, `assumeHu`).
    #[error(
        "{}; the haemorrhage volume would be unreliable, so the scan was not segmented (if you \
         know these values are Hounsfield units, run again with --assume-hu, or the page's \
         'values are HU' option)",
        crate::io::not_hu_reason(*min, *max).unwrap_or_default()
    )]
    NotHu {
        /// Lowest voxel value after the header's scaling.
        min: f32,
        /// Highest voxel value after the header's scaling.
        max: f32,
    },
    /// Every voxel has the same value: there is no image to segment.
    #[error("every voxel of the scan is {value}: the image is blank, there is nothing to segment")]
    BlankScan {
        /// The one value.
        value: f32,
    },
    /// The brain extraction found no brain: a "0 mL" answer would be a confident wrong one.
    #[error(
        "no brain was found: the scan has no soft-tissue body between 0 and 100 HU large enough \
         to be a brain (its values range from {hu_min} to {hu_max} HU); this tool needs a \
         non-contrast head CT in Hounsfield units"
    )]
    NoBrain {
        /// Lowest value in the scan (HU).
        hu_min: f32,
        /// Highest value in the scan (HU).
        hu_max: f32,
    },
    /// An error from reading one named input, shown as "name: reason".
    #[error("{file}: {source}")]
    InFile {
        /// The file (name only: no directory, nothing identifying the patient).
        file: String,
        /// What went wrong in it.
        source: Box<Error>,
    },

    // ---- DICOM (io::dicom) -----------------------------------------------------------------------
    /// Files that hold no DICOM image the reader can use (none at all, or only non-image objects).
    #[error("{0}")]
    NotDicom(String),
    /// More than one series could be read: the caller must choose one (page) or pass `--series`.
    #[error("{0}")]
    SeveralSeries(String),

    // ---- processing ---------------------------------------------------------------------------
    /// Two grids that must be the same are not (a mask for another scan, a truncated array).
    #[error("{what}: expected {} voxels (x×y×z) but got {}", dims_text(*expected), dims_text(*found))]
    ShapeMismatch {
        /// What was being matched ("the mask", "the probabilities").
        what: &'static str,
        /// The shape required, `(z, y, x)`.
        expected: (usize, usize, usize),
        /// The shape given, `(z, y, x)`.
        found: (usize, usize, usize),
    },
    /// An option outside the values it accepts.
    #[error("{name} {value}: {allowed}")]
    InvalidOption {
        /// The option's name as the user typed it ("threshold", "batch").
        name: &'static str,
        /// The value given.
        value: String,
        /// What would have been accepted.
        allowed: &'static str,
    },
    /// A stage was asked for a result that needs network slices not computed yet.
    #[error("{missing} of {total} network slices have no probabilities yet")]
    Incomplete {
        /// Slices still without probabilities.
        missing: usize,
        /// Slices in all.
        total: usize,
    },
    /// Arguments that do not fit together and have no variant of their own.
    #[error("{0}")]
    InvalidInput(String),
    /// The network weights could not be loaded or do not match the model configuration.
    #[error("{0}")]
    Weights(String),
    /// A failure inside the tensor backend (device lost, buffer too large for the GPU, ...).
    #[error("{0}")]
    Backend(String),
    /// The work was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,

    // ---- follow-up comparison (registration) -------------------------------------------------
    /// Two scans that cannot be aligned or compared (no brain in one, no overlap).
    #[error("{0}")]
    Registration(String),

    // ---- files (CLI only) ---------------------------------------------------------------------
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// `(z, y, x)` as the "x×y×z" users read in viewers.
fn dims_text((z, y, x): (usize, usize, usize)) -> String {
    format!("{x}×{y}×{z}")
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Reserve `n` elements in a fresh `Vec`, turning allocation failure into [`Error::OutOfMemory`].
///
/// Volumes are the one place where a hostile or simply huge header can ask for gigabytes; every
/// voxel-sized buffer goes through here so the answer is a message, not an abort.
pub fn try_vec<T>(n: usize, what: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        what,
        bytes: n.saturating_mul(std::mem::size_of::<T>()),
    })?;
    Ok(v)
}

/// A `Vec` of `n` copies of `value`, allocation checked like [`try_vec`].
pub fn try_filled<T: Clone>(n: usize, value: T, what: &'static str) -> Result<Vec<T>> {
    let mut v = try_vec(n, what)?;
    v.resize(n, value);
    Ok(v)
}
