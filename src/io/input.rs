//! The one entry point from "what the user gave" to a [`Scan`]: a list of named byte buffers (a
//! dropped folder, a multi-file selection, a `.zip`, a single `.nii.gz`), used alike by the CLI
//! and the page so both accept exactly the same inputs.
//!
//! Routing is by content, never by file name: zip archives (`PK\x03\x04`) are expanded first; one
//! NIfTI file goes to the NIfTI reader, an Analyze/NIfTI `.hdr` + `.img` pair to the pair reader;
//! anything else is read as a DICOM folder ([`super::dicom`]), where non-DICOM files are counted
//! and ignored.

use std::io::{Cursor, Read};

use super::{Scan, dicom, gz, layout::MAX_DATA_BYTES};
use crate::{Error, Result};

/// Choices the caller makes about what to read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// For a DICOM input holding several series: the Series Instance UID (or Series Number) to
    /// read.
    pub series: Option<String>,
}

/// Most entries a zip archive may have.
const MAX_ZIP_ENTRIES: usize = 100_000;

/// Read a scan from named buffers (names are for messages and for pairing `.hdr` with `.img`).
pub fn read_files(files: Vec<(String, Vec<u8>)>, opts: &ReadOptions) -> Result<Scan> {
    let files = expand_zips(files)?;
    if files.is_empty() {
        return Err(Error::InvalidInput("no files were given".into()));
    }
    let nifti: Vec<usize> = (0..files.len())
        .filter(|&i| is_nifti(&files[i].1))
        .collect();
    let dicom = files.iter().filter(|(_, b)| dicom::sniff(b)).count();
    if dicom == 0 {
        if let [only] = files.as_slice() {
            return Scan::from_bytes(&only.1).map_err(|e| super::in_file(&only.0, e));
        }
        if let Some(scan) = pair(&files, &nifti) {
            return scan;
        }
        if let [i] = nifti.as_slice() {
            let (name, bytes) = &files[*i];
            return Scan::from_bytes(bytes).map_err(|e| super::in_file(name, e));
        }
        if nifti.len() > 1 {
            let names: Vec<&str> = nifti.iter().map(|&i| files[i].0.as_str()).collect();
            return Err(Error::InvalidInput(format!(
                "{} NIfTI files were given ({}): open one scan at a time",
                nifti.len(),
                names.join(", ")
            )));
        }
    }
    dicom::read_series(&files, opts.series.as_deref())
}

/// The DICOM series among the files (zips expanded), for a page to offer a choice.
pub fn list_series(files: Vec<(String, Vec<u8>)>) -> Result<Vec<dicom::SeriesSummary>> {
    dicom::list_series(&expand_zips(files)?)
}

/// Whether `bytes` are (gzipped) NIfTI/Analyze: the header size field reads 348 or 540.
fn is_nifti(bytes: &[u8]) -> bool {
    let head = if gz::is_gzip(bytes) {
        let mut d = flate2::read::GzDecoder::new(bytes);
        let mut h = [0u8; 4];
        if d.read_exact(&mut h).is_err() {
            return false;
        }
        h
    } else {
        match bytes.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(h) => h,
            None => return false,
        }
    };
    let le = i32::from_le_bytes(head);
    let be = i32::from_be_bytes(head);
    [348, 540].contains(&le) || [348, 540].contains(&be)
}

/// An `.hdr`/`.img` pair among the files, by name.
fn pair(files: &[(String, Vec<u8>)], nifti: &[usize]) -> Option<Result<Scan>> {
    if files.len() != 2 || nifti.is_empty() {
        return None;
    }
    let stem = |n: &str| {
        let l = n.to_lowercase();
        l.strip_suffix(".gz").unwrap_or(&l).to_string()
    };
    let (a, b) = (stem(&files[0].0), stem(&files[1].0));
    let (hdr, img) = if a.ends_with(".hdr") && b.ends_with(".img") {
        (&files[0], &files[1])
    } else if b.ends_with(".hdr") && a.ends_with(".img") {
        (&files[1], &files[0])
    } else {
        return None;
    };
    Some(Scan::from_pair(&hdr.1, &img.1).map_err(|e| super::in_file(&hdr.0, e)))
}

/// Replace every zip archive among the files by its entries (named `archive/entry`).
fn expand_zips(files: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        if bytes.starts_with(b"PK\x03\x04") {
            unzip(&name, &bytes, &mut out)?;
        } else {
            out.push((name, bytes));
        }
    }
    Ok(out)
}

fn unzip(name: &str, bytes: &[u8], out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let bad = |e: zip::result::ZipError| {
        Error::InvalidInput(format!("{name}: the zip archive cannot be read ({e})"))
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    if archive.len() > MAX_ZIP_ENTRIES {
        return Err(Error::TooLarge(format!(
            "{name}: the zip archive has {} entries; at most {MAX_ZIP_ENTRIES} are read",
            archive.len()
        )));
    }
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(bad)?;
        if entry.is_dir() {
            continue;
        }
        let entry_name = format!("{name}/{}", entry.name());
        let size = entry.size();
        total = total.saturating_add(size);
        if total > 2 * MAX_DATA_BYTES {
            return Err(Error::TooLarge(format!(
                "{name}: the zip archive unpacks to more than {} bytes",
                2 * MAX_DATA_BYTES
            )));
        }
        // The announced size bounds the read: a lying header cannot inflate without limit.
        let cap = usize::try_from(size).unwrap_or(usize::MAX);
        let mut data = crate::error::try_vec(cap, "a zip entry")?;
        entry
            .by_ref()
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| Error::InvalidInput(format!("{entry_name}: cannot be unpacked ({e})")))?;
        out.push((entry_name, data));
    }
    Ok(())
}
