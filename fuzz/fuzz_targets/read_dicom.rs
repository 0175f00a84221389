//! Any bytes as a DICOM folder through `io::read_files` (the entry point of the CLI and the page):
//! an error is fine, a panic, hang or OOM is a bug. The first byte chooses how many files the rest
//! is cut into, so series assembly (grouping, sorting, spacing) is reached with several images;
//! a volume that reads also writes its mask back as NIfTI and DICOM SEG.
#![no_main]

use ichnet_fuzz::io::{self, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let parts = usize::from(n % 4) + 1;
    let len = rest.len().div_ceil(parts).max(1);
    let files: Vec<(String, Vec<u8>)> = rest
        .chunks(len)
        .enumerate()
        .map(|(i, c)| (format!("f{i}.dcm"), c.to_vec()))
        .collect();
    if let Ok(scan) = io::read_files(files, &ReadOptions::default()) {
        let mask = scan.stack.hu.mapv(|v| u8::from(v > 0.0));
        let _ = scan.mask_nifti_gz(&mask);
        let _ = scan.mask_seg_dcm(&mask, &io::dicom::seg::SegOptions::default());
    }
});
