//! Declared value lengths checked against the file before dicom-rs parses it.
//!
//! dicom-parser 0.10 reserves (and zero-fills) an element's declared length before reading its
//! value, so a 6 KB file that declares a 3.84 GB element made it allocate 3.84 GB natively, or
//! spend seconds filling it, before failing (found by the `read_dicom` fuzz target). A file in
//! memory cannot hold a value longer than what is left of it, so any such declaration is damage:
//! refused here, with the element and the numbers, before anything is allocated. No DICOM crate
//! offers this check, so the walk is ours: element headers only (tag, VR, length), descending into
//! sequences and items, skipping encapsulated pixel fragments; a deflated data set is left to the
//! parser (its lengths count inflated bytes).

use crate::{Error, Result};

/// VRs whose explicit-VR header has a 16-bit length (PS3.5 7.1.2). Every other VR, and any
/// two bytes that are no VR at all, have two reserved bytes and a 32-bit length: dicom-rs reads
/// an unknown VR as UN (a fuzz finding: "A\0" read with a 16-bit length here hid the 2 GB that
/// dicom-object then reserved).
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

const UNDEFINED: u32 = 0xFFFF_FFFF;

#[derive(Clone, Copy)]
struct Syntax {
    explicit: bool,
    big_endian: bool,
}

/// `Ok` unless an element of `bytes` declares more bytes than the file has left after it.
pub fn check(bytes: &[u8]) -> Result<()> {
    // dicom-rs also opens a file whose "DICM" magic comes first, without the 128-byte preamble
    // (a fuzz finding: the walk started at the magic, found no meta group, and a 2.4 GB meta
    // string reached the parser).
    let mut pos = if bytes.get(128..132) == Some(b"DICM") {
        132
    } else if bytes.get(..4) == Some(b"DICM") {
        4
    } else {
        0
    };
    // File meta group (0002,xxxx): always explicit VR little endian.
    let meta = Syntax {
        explicit: true,
        big_endian: false,
    };
    let mut transfer_syntax: Option<&[u8]> = None;
    // dicom-object reads the meta group as (0002,0000) and then elements of any group until the
    // group length it declares is used up (a fuzz finding: a (0000,xxxx) element inside that
    // length declared 4 GB, and the walk had stopped at the first element of another group).
    let mut meta_left: Option<usize> = None;
    while let Some(h) = header(bytes, pos, meta) {
        let inside = match meta_left {
            Some(left) => left > 0,
            None => h.group == 0x0002,
        };
        if !inside {
            break;
        }
        let end = value_end(bytes, pos, &h)?;
        if meta_left.is_none() && h.group == 0x0002 && h.element == 0x0000 {
            meta_left = bytes
                .get(pos + h.size..end)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(|v| u32::from_le_bytes(v) as usize);
            pos = end;
            continue;
        }
        if h.group == 0x0002 && h.element == 0x0010 {
            transfer_syntax = bytes.get(pos + h.size..end);
        }
        if let Some(left) = meta_left.as_mut() {
            *left = left.saturating_sub(end - pos);
        }
        pos = end;
    }
    let uid = transfer_syntax
        .map(|t| {
            String::from_utf8_lossy(t)
                .trim_end_matches(['\0', ' '])
                .to_string()
        })
        .unwrap_or_default();
    let syntax = match uid.as_str() {
        "1.2.840.10008.1.2.1.99" => return Ok(()),
        "1.2.840.10008.1.2" => Syntax {
            explicit: false,
            big_endian: false,
        },
        "1.2.840.10008.1.2.2" => Syntax {
            explicit: true,
            big_endian: true,
        },
        // No meta group at all: a bare data set, most often implicit VR little endian.
        "" => Syntax {
            explicit: false,
            big_endian: false,
        },
        _ => Syntax {
            explicit: true,
            big_endian: false,
        },
    };
    let mut fragments = false;
    while let Some(h) = header(bytes, pos, syntax) {
        if h.group == 0xFFFE {
            match h.element {
                // An item: a fragment's bytes are skipped, a sequence item's data set is walked.
                0xE000 if fragments || h.length != UNDEFINED => {
                    let end = value_end(bytes, pos, &h)?;
                    pos = if fragments { end } else { pos + h.size };
                }
                0xE0DD => {
                    fragments = false;
                    pos += h.size;
                }
                _ => pos += h.size,
            }
            continue;
        }
        if h.length == UNDEFINED {
            // UN of undefined length holds an implicit-VR sequence whatever the file's syntax:
            // the walk would misread it, so the parser has the rest.
            if h.vr == Some(*b"UN") {
                return Ok(());
            }
            fragments |= (h.group, h.element) == (0x7FE0, 0x0010);
            pos += h.size;
            continue;
        }
        let end = value_end(bytes, pos, &h)?;
        // A sequence with a defined length (its VR says so, or, without VRs, its value opens
        // with an item tag) is walked into; any other value is skipped whole.
        let opens_item = matches!(
            header(bytes, pos + h.size, syntax),
            Some(Header {
                group: 0xFFFE,
                element: 0xE000,
                ..
            })
        );
        pos = if h.vr == Some(*b"SQ") || (!syntax.explicit && opens_item) {
            pos + h.size
        } else {
            end
        };
    }
    Ok(())
}

struct Header {
    group: u16,
    element: u16,
    vr: Option<[u8; 2]>,
    length: u32,
    /// Bytes of the header itself.
    size: usize,
}

fn u16_at(b: &[u8], at: usize, big: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

fn u32_at(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

/// The element header at `pos`, `None` at the end of the bytes (or a header cut short, which
/// the parser reports better).
fn header(b: &[u8], pos: usize, s: Syntax) -> Option<Header> {
    let big = s.big_endian;
    let group = u16_at(b, pos, big)?;
    let element = u16_at(b, pos + 2, big)?;
    if group == 0xFFFE || !s.explicit {
        return Some(Header {
            group,
            element,
            vr: None,
            length: u32_at(b, pos + 4, big)?,
            size: 8,
        });
    }
    let vr: [u8; 2] = b.get(pos + 4..pos + 6)?.try_into().ok()?;
    if !SHORT_VRS.iter().any(|v| **v == vr) {
        Some(Header {
            group,
            element,
            vr: Some(vr),
            length: u32_at(b, pos + 8, big)?,
            size: 12,
        })
    } else {
        Some(Header {
            group,
            element,
            vr: Some(vr),
            length: u32::from(u16_at(b, pos + 6, big)?),
            size: 8,
        })
    }
}

/// Where the value of `h` (at `pos`) ends; an error when that is past the end of the file.
fn value_end(b: &[u8], pos: usize, h: &Header) -> Result<usize> {
    let start = pos + h.size;
    let left = b.len().saturating_sub(start);
    if h.length != UNDEFINED && h.length as usize > left {
        return Err(Error::Truncated(format!(
            "element ({:04X},{:04X}) declares {} bytes but only {left} are left in the file: the \
             file is damaged or cut short",
            h.group, h.element, h.length
        )));
    }
    Ok(start
        + if h.length == UNDEFINED {
            0
        } else {
            h.length as usize
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal explicit-VR-LE file: preamble, meta with the transfer syntax, then `body`.
    fn file(body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        let ts = b"1.2.840.10008.1.2.1\0";
        f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        f.extend_from_slice(&(ts.len() as u16).to_le_bytes());
        f.extend_from_slice(ts);
        f.extend_from_slice(body);
        f
    }

    fn elem_long(group: u16, element: u16, vr: &[u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&group.to_le_bytes());
        e.extend_from_slice(&element.to_le_bytes());
        e.extend_from_slice(vr);
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(value);
        e
    }

    #[test]
    fn a_value_longer_than_the_file_is_refused_with_its_numbers() {
        let ok = file(&elem_long(0x0009, 0x0010, b"OB", 4, &[1, 2, 3, 4]));
        assert!(check(&ok).is_ok());
        let bad = file(&elem_long(
            0x0009,
            0x0010,
            b"OB",
            3_840_206_052,
            &[1, 2, 3, 4],
        ));
        let e = check(&bad).unwrap_err().to_string();
        assert!(
            e.contains("(0009,0010) declares 3840206052 bytes but only 4"),
            "{e}"
        );
    }

    #[test]
    fn lengths_inside_a_sequence_item_are_checked_too() {
        // SQ of undefined length, one item of undefined length holding an OB that lies.
        let inner = elem_long(0x0011, 0x0010, b"OB", 1_000_000, &[0; 8]);
        let mut sq = elem_long(0x0008, 0x1115, b"SQ", UNDEFINED, &[]);
        sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        sq.extend_from_slice(&inner);
        let e = check(&file(&sq)).unwrap_err().to_string();
        assert!(e.contains("(0011,0010)"), "{e}");
    }

    #[test]
    fn pixel_fragments_are_skipped_not_parsed() {
        // Encapsulated pixel data: offset table item, one fragment whose bytes look like a
        // lying element header, then the sequence delimiter: all fine.
        let mut px = elem_long(0x7FE0, 0x0010, b"OB", UNDEFINED, &[]);
        px.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        let frag = elem_long(0x0011, 0x0010, b"OB", 1_000_000, &[]);
        px.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        px.extend_from_slice(&(frag.len() as u32).to_le_bytes());
        px.extend_from_slice(&frag);
        px.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert!(check(&file(&px)).is_ok());
    }
}
