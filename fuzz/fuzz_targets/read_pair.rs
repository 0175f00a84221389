//! Any bytes into `Scan::from_pair`: the first byte chooses where to split header from image.
#![no_main]

use ichnet_fuzz::io::Scan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    // Headers are 348 or 540 bytes (plus gzip framing); spread the split over that range.
    let at = (usize::from(split) * 4).min(rest.len());
    let (hdr, img) = rest.split_at(at);
    let _ = Scan::from_pair(hdr, img);
});
