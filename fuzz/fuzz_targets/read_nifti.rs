//! Any bytes into `Scan::from_bytes`: an error is fine, a panic, hang or OOM is a bug. A scan that
//! reads must also write its mask back (exercising the reorientation in reverse).
#![no_main]

use ichnet_fuzz::io::Scan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(scan) = Scan::from_bytes(data) {
        let mask = scan.stack.hu.mapv(|v| u8::from(v > 0.0));
        let _ = scan.mask_nifti_gz(&mask);
    }
});
