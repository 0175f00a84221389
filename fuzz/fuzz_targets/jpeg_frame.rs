//! Any bytes as one JPEG stream through `io::dicom::jpeg::decode`, the decoder of 12-bit JPEG
//! Extended frames: an error is fine, a panic, hang or OOM is a bug. The size limit is the
//! caller's (a DICOM header's rows × columns); here 1024 × 1024.
#![no_main]

use ichnet_fuzz::io::dicom::jpeg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = jpeg::precision(data);
    if let Ok(img) = jpeg::decode(data, 1 << 20) {
        assert_eq!(img.samples.len(), img.width * img.height);
        assert!(
            img.samples
                .iter()
                .all(|&s| u32::from(s) < 1 << img.precision)
        );
    }
});
