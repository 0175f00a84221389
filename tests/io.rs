//! NIfTI reading and writing on real files (tests/fixtures/nifti, see PROVENANCE there) and on
//! files built byte by byte here. Expected values for real files were computed with nibabel
//! (`as_closest_canonical`), an independent reader.

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use ichnet::Error;
use ichnet::io::{AffineSource, Geometry, Scan, Storage, write_nifti_gz, write_stack_nifti_gz};
use ichnet::volume::Stack;
use ndarray::{Array3, Axis, Dimension};
use nifti::{InMemNiftiObject, IntoNdArray, NiftiObject};
use std::io::Write;
use std::path::Path;

const FIX: &str = "tests/fixtures/nifti";

fn bytes(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIX).join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read(rel: &str) -> Scan {
    Scan::from_bytes(&bytes(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Σ v·w with index weights, the same formula as the nibabel script that made the expectations;
/// a wrong axis order, flip or value changes it.
fn checksum(s: &Stack) -> f64 {
    s.hu.indexed_iter()
        .map(|((z, y, x), &v)| f64::from(v) * (1 + x % 7 + 2 * (y % 5) + 3 * (z % 3)) as f64)
        .sum()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

// ---- real files against nibabel ----------------------------------------------------------------

/// (file, axis codes, stack dims, min, max, checksum) from nibabel.
type Expected = (&'static str, &'static str, [usize; 3], f64, f64, f64);

const EXPECTED: &[Expected] = &[
    (
        "nibabel/anatomical.nii",
        "LAS",
        [25, 41, 33],
        -610.0,
        30393.0,
        3030089515.0,
    ),
    (
        "nibabel/reoriented_anat_moved.nii",
        "RAS",
        [22, 26, 21],
        0.0,
        21199.935546875,
        362349698.2937012,
    ),
    (
        "nibabel/example_nifti2.nii.gz",
        "LAS",
        [12, 20, 32],
        49.0,
        742.0,
        37585226.0,
    ),
    (
        "nibabel/functional.nii",
        "LAS",
        [3, 21, 17],
        762.5424365997314,
        5538.065757632256,
        40818868.847560644,
    ),
    (
        "nibabel/standard.nii.gz",
        "RAS",
        [7, 5, 4],
        0.0,
        255.0,
        65280.0,
    ),
    (
        "derived/shear_crop.nii.gz",
        "RAS",
        [8, 32, 32],
        -1024.0,
        113.56866455078125,
        -4067182.638256073,
    ),
    (
        "derived/ct_pitch_crop.nii.gz",
        "RAS",
        [8, 32, 32],
        0.0,
        158.0,
        7658725.0,
    ),
    (
        // No qform/sform: NIfTI method 1 (i → R), where nibabel assumes LAS.
        "nifti-rs/minimal.nii",
        "RAS",
        [10, 64, 64],
        0.0,
        63.0,
        13747648.0,
    ),
    (
        "nifti-rs/f32.nii.gz",
        "RAS",
        [11, 11, 11],
        0.0,
        1.0,
        1774.6000071689487,
    ),
    (
        "niivue/RAS.nii.gz",
        "RAS",
        [67, 79, 64],
        0.0,
        92.5538831949234,
        124640538.55291522,
    ),
    (
        "niivue/LPI.nii.gz",
        "LPI",
        [67, 79, 64],
        0.0,
        92.5538831949234,
        124640538.55291522,
    ),
];

#[test]
fn real_files_match_nibabel_values_orientation_and_dims() {
    for &(f, codes, dims, min, max, sum) in EXPECTED {
        let s = read(f);
        assert_eq!(s.info.axis_codes, codes, "{f}");
        assert_eq!(s.info.stack_dims, dims, "{f}");
        let d = s.stack.dims();
        assert_eq!([d.0, d.1, d.2], dims, "{f}");
        assert!(
            close(f64::from(s.info.hu_min), min, 1e-6),
            "{f}: min {}",
            s.info.hu_min
        );
        assert!(
            close(f64::from(s.info.hu_max), max, 1e-6),
            "{f}: max {}",
            s.info.hu_max
        );
        let cs = checksum(&s.stack);
        assert!(close(cs, sum, 1e-6), "{f}: checksum {cs} vs nibabel {sum}");
    }
}

#[test]
fn all_ten_datatypes_of_the_same_volume_read_alike() {
    let names = [
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32",
        "float64",
    ];
    for n in names {
        let s = read(&format!("nifti-rs/27/{n}.nii"));
        assert_eq!(s.info.datatype, n);
        assert_eq!(s.stack.dims(), (3, 3, 3), "{n}");
        assert_eq!(checksum(&s.stack), 2781.0, "{n}");
    }
}

#[test]
fn big_endian_header_is_detected() {
    let s = read("nibabel/anatomical.nii");
    assert!(s.info.big_endian);
    assert_eq!(s.info.datatype, "int16");
    assert!(!read("nibabel/standard.nii.gz").info.big_endian);
}

#[test]
fn nifti2_is_read_and_its_4d_series_gives_the_first_volume() {
    let s = read("nibabel/example_nifti2.nii.gz");
    assert_eq!(s.info.format, "NIfTI-2");
    assert!(s.info.gzipped);
    assert_eq!(s.info.dims, vec![32, 20, 12, 2]);
    assert!(
        s.warnings.iter().any(|w| w.contains("2 volumes")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn four_d_reads_the_first_volume_with_a_warning() {
    let s = read("nibabel/functional.nii");
    assert_eq!(s.info.dims, vec![17, 21, 3, 20]);
    assert_eq!(s.stack.dims(), (3, 21, 17));
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("20 volumes") && w.contains("first"))
    );
}

#[test]
fn hdr_img_pair_reads_like_the_single_file() {
    let single = read("nifti-rs/minimal.nii").stack;
    let hdr = bytes("nifti-rs/minimal.hdr");
    for img in ["nifti-rs/minimal.img", "nifti-rs/minimal.img.gz"] {
        let pair = Scan::from_pair(&hdr, &bytes(img)).unwrap();
        assert_eq!(pair.stack, single, "{img}");
    }
    let gz_hdr = Scan::from_pair(
        &bytes("nifti-rs/minimal.hdr.gz"),
        &bytes("nifti-rs/minimal.img"),
    );
    assert_eq!(gz_hdr.unwrap().stack, single);
}

#[test]
fn a_pair_header_alone_is_refused_with_a_hint() {
    for f in [
        "nifti-rs/minimal.hdr",
        "nibabel/analyze.hdr",
        "nibabel/nifti1.hdr",
        "nibabel/nifti2.hdr",
    ] {
        let e = Scan::from_bytes(&bytes(f)).unwrap_err();
        assert!(matches!(e, Error::NotNifti(_)), "{f}: {e}");
        assert!(e.to_string().contains(".img"), "{f}: {e}");
    }
}

#[test]
fn a_file_without_qform_or_sform_warns_that_orientation_is_unknown() {
    let s = read("nifti-rs/minimal.nii");
    assert_eq!(s.info.affine_source, AffineSource::Pixdim);
    assert_eq!(s.stack.spacing, [3.0, 3.0, 3.0]);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("orientation is unknown"))
    );
    assert!(
        !read("niivue/RAS.nii.gz")
            .warnings
            .iter()
            .any(|w| w.contains("orientation"))
    );
}

#[test]
fn extended_header_is_skipped() {
    // A 2-D 8×8 image of zeros behind a 32-byte extension (vox_offset 384).
    let s = read("nifti-rs/minimal_extended_hdr.nii");
    assert_eq!(s.stack.dims(), (1, 8, 8));
    assert!(
        s.warnings.iter().any(|w| w.contains("blank")),
        "{:?}",
        s.warnings
    );
}

// ---- orientation -------------------------------------------------------------------------------

#[test]
fn real_niivue_orientations_give_the_identical_canonical_stack() {
    let reference = read("niivue/RAS.nii.gz").stack;
    for codes in ["LPI", "ASL", "SPR", "IRP"] {
        let s = read(&format!("niivue/{codes}.nii.gz"));
        assert_eq!(s.info.axis_codes, codes);
        assert_eq!(s.stack.spacing, reference.spacing, "{codes}");
        assert_eq!(s.stack.hu, reference.hu, "{codes}");
    }
}

/// The file axes for `codes`: for file axis a (i, j, k), its world axis (0 R, 1 A, 2 S) and
/// whether it runs against it.
fn parse_codes(codes: &str) -> [(usize, bool); 3] {
    let mut out = [(0, false); 3];
    for (a, c) in codes.chars().enumerate() {
        out[a] = match c {
            'R' => (0, false),
            'L' => (0, true),
            'A' => (1, false),
            'P' => (1, true),
            'S' => (2, false),
            'I' => (2, true),
            _ => unreachable!(),
        };
    }
    out
}

fn all_48_codes() -> Vec<String> {
    let letters = [['R', 'L'], ['A', 'P'], ['S', 'I']];
    let perms = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let mut out = Vec::new();
    for p in perms {
        for flips in 0..8 {
            out.push((0..3).map(|a| letters[p[a]][(flips >> a) & 1]).collect());
        }
    }
    out
}

/// Store `stack` as a file whose axes run as `codes` say (no resampling, exact f32 values).
fn write_oriented(stack: &Stack, codes: &str) -> Vec<u8> {
    let axes = parse_codes(codes);
    // Array axes in [k, j, i] order; stack axes are [z, y, x] = world [2, 1, 0].
    let perm: Vec<usize> = (0..3).map(|t| 2 - axes[2 - t].0).collect();
    let mut v = stack.hu.clone().permuted_axes([perm[0], perm[1], perm[2]]);
    for t in 0..3 {
        if axes[2 - t].1 {
            v.invert_axis(Axis(t));
        }
    }
    let v = v.as_standard_layout().to_owned();
    let (nk, nj, ni) = v.dim();
    let mut aff = [[0.0; 4]; 4];
    aff[3][3] = 1.0;
    for (a, &(w, flip)) in axes.iter().enumerate() {
        let spacing = f64::from(stack.spacing[2 - w]);
        aff[w][a] = if flip { -spacing } else { spacing };
        aff[w][3] = 10.0 * (w as f64 + 1.0);
    }
    let g = Geometry::from_affine([ni, nj, nk], &aff).unwrap();
    write_nifti_gz(&v, &g, Storage::F32).unwrap()
}

#[test]
fn all_48_orientations_give_the_identical_canonical_stack() {
    let reference = read("niivue/RAS.nii.gz").stack;
    let codes = all_48_codes();
    assert_eq!(codes.len(), 48);
    for c in &codes {
        let s = Scan::from_bytes(&write_oriented(&reference, c)).unwrap();
        assert_eq!(&s.info.axis_codes, c);
        assert_eq!(s.stack.spacing, reference.spacing, "{c}");
        assert!((s.stack.voxel_ml - reference.voxel_ml).abs() < 1e-12, "{c}");
        assert_eq!(s.stack.hu, reference.hu, "{c}");
    }
}

#[test]
fn sheared_affine_is_kept_and_voxel_volume_comes_from_its_determinant() {
    let s = read("derived/shear_crop.nii.gz");
    assert_eq!(s.info.affine_source, AffineSource::Sform);
    // nibabel's affine for this file: the shear (0.153 mm of z per row of j) is kept.
    let a = s.info.affine;
    assert!((a[2][1] - 0.153_074_712).abs() < 1e-6, "{a:?}");
    assert!((a[1][1] - 0.508_710_146).abs() < 1e-6);
    assert!(
        (s.info.voxel_ml - 0.000_551_760_366_712_818).abs() < 1e-12,
        "{}",
        s.info.voxel_ml
    );
    // Spacing is the column lengths, longer than the diagonal for the sheared column.
    let col_j = (0.508_710_146f64.powi(2) + 0.153_074_712f64.powi(2)).sqrt();
    assert!((f64::from(s.stack.spacing[1]) - col_j).abs() < 1e-5);
    assert!(
        s.stack.voxel_ml
            < s.stack
                .spacing
                .iter()
                .map(|&v| f64::from(v))
                .product::<f64>()
                / 1000.0
    );
}

#[test]
fn scaled_uint8_ct_is_hu_and_not_flagged() {
    let s = read("derived/shear_crop.nii.gz");
    assert!((s.info.scl_slope - 7.109_804).abs() < 1e-5);
    assert_eq!(s.info.scl_inter, -1024.0);
    assert!(
        !s.warnings.iter().any(|w| w.contains("not HU")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn a_0_to_255_render_is_flagged_as_not_hu() {
    let s = read("derived/ct_pitch_crop.nii.gz");
    assert!(
        s.warnings.iter().any(|w| w.contains("probably not HU")),
        "{:?}",
        s.warnings
    );
}

// ---- files built byte by byte -------------------------------------------------------------------

/// A single-file NIfTI-1 with the given voxel bytes (already in the file's byte order).
fn nifti1(
    code: i16,
    bitpix: i16,
    be: bool,
    dims: &[i16],
    slope: f32,
    inter: f32,
    data: &[u8],
) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    let i16b = |v: i16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let i32b = |v: i32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let f32b = |v: f32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    h[0..4].copy_from_slice(&i32b(348));
    let mut dim = [1i16; 8];
    dim[0] = dims.len() as i16;
    dim[1..=dims.len()].copy_from_slice(dims);
    for (i, d) in dim.iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&i16b(*d));
    }
    h[70..72].copy_from_slice(&i16b(code));
    h[72..74].copy_from_slice(&i16b(bitpix));
    for i in 0..8 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&f32b(if i == 0 { 1.0 } else { 0.5 * i as f32 }));
    }
    h[108..112].copy_from_slice(&f32b(352.0));
    h[112..116].copy_from_slice(&f32b(slope));
    h[116..120].copy_from_slice(&f32b(inter));
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(data);
    h
}

/// Raw values 0, 1, 2, ... (and negatives for signed types) in every datatype and byte order.
#[test]
fn every_datatype_in_both_byte_orders_with_scaling() {
    let values: [f64; 8] = [0.0, 1.0, 2.0, 3.0, 100.0, 127.0, 5.0, 7.0];
    let signed: [f64; 8] = [-1.0, 1.0, -2.0, 3.0, -100.0, 127.0, -128.0, 7.0];
    type Enc = fn(f64, bool) -> Vec<u8>;
    let cases: [(i16, i16, bool, Enc); 10] = [
        (2, 8, false, |v, _| vec![v as u8]),
        (256, 8, true, |v, _| vec![v as i8 as u8]),
        (512, 16, false, |v, be| {
            if be {
                (v as u16).to_be_bytes().to_vec()
            } else {
                (v as u16).to_le_bytes().to_vec()
            }
        }),
        (4, 16, true, |v, be| {
            if be {
                (v as i16).to_be_bytes().to_vec()
            } else {
                (v as i16).to_le_bytes().to_vec()
            }
        }),
        (768, 32, false, |v, be| {
            if be {
                (v as u32).to_be_bytes().to_vec()
            } else {
                (v as u32).to_le_bytes().to_vec()
            }
        }),
        (8, 32, true, |v, be| {
            if be {
                (v as i32).to_be_bytes().to_vec()
            } else {
                (v as i32).to_le_bytes().to_vec()
            }
        }),
        (1280, 64, false, |v, be| {
            if be {
                (v as u64).to_be_bytes().to_vec()
            } else {
                (v as u64).to_le_bytes().to_vec()
            }
        }),
        (1024, 64, true, |v, be| {
            if be {
                (v as i64).to_be_bytes().to_vec()
            } else {
                (v as i64).to_le_bytes().to_vec()
            }
        }),
        (16, 32, true, |v, be| {
            if be {
                (v as f32).to_be_bytes().to_vec()
            } else {
                (v as f32).to_le_bytes().to_vec()
            }
        }),
        (64, 64, true, |v, be| {
            if be {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        }),
    ];
    for (code, bitpix, is_signed, enc) in cases {
        let vals = if is_signed { signed } else { values };
        for be in [false, true] {
            let data: Vec<u8> = vals.iter().flat_map(|&v| enc(v, be)).collect();
            for (slope, inter) in [(1.0f32, 0.0f32), (2.5, -1024.0), (0.0, 0.0), (0.0, 7.0)] {
                let file = nifti1(code, bitpix, be, &[2, 2, 2], slope, inter, &data);
                let s =
                    Scan::from_bytes(&file).unwrap_or_else(|e| panic!("code {code} be {be}: {e}"));
                assert_eq!(s.info.big_endian, be);
                // slope 0 means "not scaled": the intercept is ignored too.
                let (sl, it) = if slope == 0.0 {
                    (1.0, 0.0)
                } else {
                    (f64::from(slope), f64::from(inter))
                };
                let got: Vec<f32> = s.stack.hu.iter().copied().collect();
                let want: Vec<f32> = vals.iter().map(|&v| (v * sl + it) as f32).collect();
                assert_eq!(got, want, "code {code} be {be} slope {slope} inter {inter}");
                // Gzipped, the same bytes read the same.
                assert_eq!(Scan::from_bytes(&gzip(&file)).unwrap().stack, s.stack);
            }
        }
    }
}

#[test]
fn nan_and_infinite_voxels_become_air_with_a_counted_warning() {
    let vals = [
        1.0f32,
        f32::NAN,
        f32::INFINITY,
        40.0,
        f32::NEG_INFINITY,
        -1000.0,
        3.0,
        2.0,
    ];
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let s = Scan::from_bytes(&nifti1(16, 32, false, &[2, 2, 2], 1.0, 0.0, &data)).unwrap();
    let got: Vec<f32> = s.stack.hu.iter().copied().collect();
    assert_eq!(
        got,
        vec![1.0, -1024.0, -1024.0, 40.0, -1024.0, -1000.0, 3.0, 2.0]
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.starts_with("3 voxels were NaN or infinite")),
        "{:?}",
        s.warnings
    );
}

fn err(file: &[u8]) -> Error {
    match Scan::from_bytes(file) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn absurd_dimensions_are_refused_with_their_numbers() {
    let e = err(&nifti1(2, 8, false, &[512, 512, 0], 1.0, 0.0, &[]));
    assert!(
        matches!(e, Error::BadHeader(_)) && e.to_string().contains("512×512×0"),
        "{e}"
    );
    let e = err(&nifti1(2, 8, false, &[4, -3, 4], 1.0, 0.0, &[]));
    assert!(e.to_string().contains("-3"), "{e}");
    let e = err(&nifti1(2, 8, false, &[32767, 32767, 32767], 1.0, 0.0, &[]));
    assert!(
        matches!(e, Error::TooLarge(_)) && e.to_string().contains("32767×32767×32767"),
        "{e}"
    );
    let mut f = nifti1(2, 8, false, &[2, 2, 2], 1.0, 0.0, &[0; 8]);
    f[40..42].copy_from_slice(&9i16.to_le_bytes());
    assert!(err(&f).to_string().contains("dim[0] is 9"));
    let e = err(&nifti1(2, 8, false, &[2, 2, 2, 1, 3], 1.0, 0.0, &[0; 24]));
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("5-D"),
        "{e}"
    );
}

#[test]
fn nifti2_dims_whose_product_overflows_are_refused() {
    let mut h = vec![0u8; 544];
    h[0..4].copy_from_slice(&540i32.to_le_bytes());
    h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    h[12..14].copy_from_slice(&2i16.to_le_bytes());
    h[14..16].copy_from_slice(&8i16.to_le_bytes());
    let dims = [3i64, 1 << 40, 1 << 40, 1 << 40, 1, 1, 1, 1];
    for (i, d) in dims.iter().enumerate() {
        h[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[168..176].copy_from_slice(&544i64.to_le_bytes());
    let e = err(&h);
    assert!(
        matches!(e, Error::BadHeader(_)) && e.to_string().contains("overflows"),
        "{e}"
    );
}

#[test]
fn vox_offset_beyond_the_file_is_an_error_naming_it() {
    let mut f = nifti1(2, 8, false, &[2, 2, 2], 1.0, 0.0, &[0; 8]);
    f[108..112].copy_from_slice(&100_000f32.to_le_bytes());
    let e = err(&f);
    assert!(e.to_string().contains("100000"), "{e}");
}

#[test]
fn truncated_inputs_are_errors_not_panics() {
    let nii = bytes("nifti-rs/minimal.nii");
    let e = err(&nii[..nii.len() - 100]);
    assert!(matches!(e, Error::Truncated(_)), "{e}");
    assert!(e.to_string().contains("40960"), "{e}");
    let e = err(&nii[..200]);
    assert!(
        matches!(e, Error::Truncated(_)) && e.to_string().contains("348"),
        "{e}"
    );
    let gz = bytes("niivue/RAS.nii.gz");
    let e = err(&gz[..gz.len() / 2]);
    assert!(matches!(e, Error::Gzip(_) | Error::Truncated(_)), "{e}");
    let e = err(&gz[..5]);
    assert!(matches!(e, Error::Gzip(_) | Error::Truncated(_)), "{e}");
    assert!(matches!(err(&[]), Error::Truncated(_)));
}

#[test]
fn garbage_is_not_nifti() {
    let mut x: u32 = 12345;
    let junk: Vec<u8> = (0..4000)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    assert!(matches!(err(&junk), Error::NotNifti(_)));
    assert!(matches!(err(&gzip(&junk)), Error::NotNifti(_)));
    let mut dicom = vec![0u8; 300];
    dicom[128..132].copy_from_slice(b"DICM");
    assert!(err(&dicom).to_string().contains("DICOM"));
}

#[test]
fn rgb_complex_and_binary_are_refused_by_name() {
    let e = err(&bytes("ct-samples/ct_perfusion.nii.gz"));
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("RGB colour data") && e.to_string().contains("not a CT volume"));
    assert!(
        err(&bytes("nifti-rs/rgb/3D.nii"))
            .to_string()
            .contains("RGB colour")
    );
    assert!(
        err(&bytes("nifti-rs/rgb/4D.nii"))
            .to_string()
            .contains("RGB colour")
    );
    assert!(
        err(&bytes("nifti-rs/rgba/4D.nii"))
            .to_string()
            .contains("RGBA colour")
    );
    for f in [
        "nifti-rs/complex/complex32.nii",
        "nifti-rs/complex/complex64.nii",
    ] {
        assert!(err(&bytes(f)).to_string().contains("complex"), "{f}");
    }
    assert!(
        err(&nifti1(1, 1, false, &[8, 1, 1], 1.0, 0.0, &[0]))
            .to_string()
            .contains("binary")
    );
}

#[test]
fn error_messages_can_carry_the_file_name() {
    let e = ichnet::io::in_file(
        "ct_perfusion.nii.gz",
        err(&bytes("ct-samples/ct_perfusion.nii.gz")),
    );
    assert!(
        e.to_string()
            .starts_with("ct_perfusion.nii.gz: the file holds RGB colour data"),
        "{e}"
    );
}

/// Crash files of the nifti crate's own fuzzing, and of ours (tests/fixtures/nifti/fuzz): any
/// result is fine, a panic is not.
#[test]
fn fuzz_crash_files_do_not_panic() {
    let mut n = 0;
    for dir in ["nifti-rs/fuzz_artifacts", "fuzz"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIX).join(dir);
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let b = std::fs::read(&path).unwrap();
            let _ = Scan::from_bytes(&b);
            let at = b.len().min(348);
            let _ = Scan::from_pair(&b[..at], &b[at..]);
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} crash files found");
}

// ---- writing ------------------------------------------------------------------------------------

fn nifti_crate_read(b: &[u8]) -> InMemNiftiObject {
    InMemNiftiObject::from_reader(GzDecoder::new(b)).unwrap()
}

/// The mask written for `scan` has the input's grid (dims, pixdim, qform, sform) and its voxels in
/// the file's own order, checked with the nifti crate as an independent reader.
fn check_mask_round_trip(rel: &str, threshold: f32) {
    let input = bytes(rel);
    let scan = Scan::from_bytes(&input).unwrap();
    let mask = scan.stack.hu.mapv(|v| u8::from(v > threshold));
    assert!(
        mask.iter().any(|&m| m == 1) && mask.iter().any(|&m| m == 0),
        "{rel}: trivial mask"
    );
    let out = scan.mask_nifti_gz(&mask).unwrap();

    let src = if input.starts_with(&[0x1f, 0x8b]) {
        nifti_crate_read(&input)
    } else {
        InMemNiftiObject::from_reader(&input[..]).unwrap()
    };
    let written = nifti_crate_read(&out);
    let (a, b) = (src.header(), written.header());
    assert_eq!(a.dim[1..4], b.dim[1..4], "{rel}");
    assert_eq!(b.dim[0], 3);
    assert_eq!(a.pixdim[..4], b.pixdim[..4], "{rel}");
    assert_eq!(
        (a.qform_code, a.sform_code),
        (b.qform_code, b.sform_code),
        "{rel}"
    );
    assert_eq!(
        [
            a.quatern_b,
            a.quatern_c,
            a.quatern_d,
            a.quatern_x,
            a.quatern_y,
            a.quatern_z
        ],
        [
            b.quatern_b,
            b.quatern_c,
            b.quatern_d,
            b.quatern_x,
            b.quatern_y,
            b.quatern_z
        ],
        "{rel}"
    );
    assert_eq!(
        [a.srow_x, a.srow_y, a.srow_z],
        [b.srow_x, b.srow_y, b.srow_z],
        "{rel}"
    );
    assert_eq!(a.xyzt_units, b.xyzt_units);
    assert_eq!(b.datatype, 2);

    // Voxel by voxel in file order: the mask is where the input is above the threshold.
    let src_vol = src.into_volume().into_ndarray::<f64>().unwrap();
    let mask_vol = written.into_volume().into_ndarray::<u8>().unwrap();
    let mut checked = 0;
    for (idx, &m) in mask_vol.indexed_iter() {
        let mut src_idx = idx.slice().to_vec();
        src_idx.resize(src_vol.ndim(), 0);
        // The nifti crate applies scl_slope/scl_inter itself.
        let v = src_vol[src_idx.as_slice()];
        assert_eq!(
            m,
            u8::from(v as f32 > threshold),
            "{rel} at {:?}",
            idx.slice()
        );
        checked += 1;
    }
    assert_eq!(checked, mask.len());

    // And our reader maps it back onto the same stack positions.
    let back = Scan::from_bytes(&out).unwrap();
    assert_eq!(back.stack.hu.mapv(|v| v as u8), mask, "{rel}");
    assert_eq!(back.info.affine, scan.info.affine, "{rel}");
}

#[test]
fn mask_round_trips_into_the_input_grid() {
    check_mask_round_trip("niivue/LPI.nii.gz", 40.3);
    check_mask_round_trip("niivue/ASL.nii.gz", 40.3);
    check_mask_round_trip("derived/shear_crop.nii.gz", -500.3);
    check_mask_round_trip("nibabel/anatomical.nii", 1000.5);
    check_mask_round_trip("nibabel/standard.nii.gz", 100.5);
}

#[test]
fn mask_of_the_wrong_shape_names_both_shapes() {
    let scan = read("nibabel/standard.nii.gz");
    let e = scan.mask_nifti_gz(&Array3::zeros((1, 2, 3))).unwrap_err();
    assert!(
        e.to_string().contains("(1, 2, 3)") && e.to_string().contains("(7, 5, 4)"),
        "{e}"
    );
}

#[test]
fn written_stacks_read_back_in_every_storage() {
    let base = read("derived/shear_crop.nii.gz").stack;
    let stack = Stack {
        hu: base.hu.mapv(f32::round),
        spacing: [2.5, 0.5, 0.75],
        voxel_ml: 2.5 * 0.5 * 0.75 / 1000.0,
    };
    let storages = [
        (Storage::F32, 0.0),
        (
            Storage::I16 {
                slope: 1.0,
                inter: 0.0,
            },
            0.0,
        ),
        (
            Storage::I16 {
                slope: 0.5,
                inter: -1024.0,
            },
            0.0,
        ),
        (
            Storage::U8 {
                slope: 1138.0 / 255.0,
                inter: -1024.0,
            },
            1138.0 / 255.0 / 2.0 + 1e-3,
        ),
    ];
    for (st, tol) in storages {
        let s = Scan::from_bytes(&write_stack_nifti_gz(&stack, st).unwrap()).unwrap();
        assert_eq!(s.info.axis_codes, "RAS");
        assert_eq!(s.stack.spacing, stack.spacing, "{st:?}");
        assert!((s.stack.voxel_ml - stack.voxel_ml).abs() < 1e-12);
        let worst = s
            .stack
            .hu
            .iter()
            .zip(stack.hu.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= tol, "{st:?}: off by {worst}");
    }
}

#[test]
fn writer_geometry_round_trips_a_sheared_affine_through_the_sform() {
    let aff = [
        [0.5, 0.0, 0.0, -30.0],
        [0.0, 0.5, 0.1, -40.0],
        [0.0, 0.2, 2.0, 10.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let g = Geometry::from_affine([4, 3, 2], &aff).unwrap();
    assert_eq!(g.qform_code, 0, "a qform cannot hold shear");
    let vals = Array3::from_shape_fn((2, 3, 4), |(k, j, i)| (i + 10 * j + 100 * k) as f32);
    let s = Scan::from_bytes(
        &write_nifti_gz(
            &vals,
            &g,
            Storage::I16 {
                slope: 1.0,
                inter: 0.0,
            },
        )
        .unwrap(),
    )
    .unwrap();
    for (got, want) in s.info.affine.iter().zip(&aff) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6);
        }
    }
    assert_eq!(s.geometry(), &g);
    let wrong = write_nifti_gz(&Array3::zeros((4, 3, 2)), &g, Storage::F32).unwrap_err();
    assert!(wrong.to_string().contains("(4, 3, 2)") && wrong.to_string().contains("(2, 3, 4)"));
}

#[test]
fn writer_qform_matches_its_sform_for_rotations() {
    // A 30° rotation about z with a flipped third axis: the qform must describe the same affine.
    let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
    let aff = [
        [0.8 * c, -0.9 * s, 0.0, 1.0],
        [0.8 * s, 0.9 * c, 0.0, 2.0],
        [0.0, 0.0, -3.0, 3.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let mut g = Geometry::from_affine([2, 2, 2], &aff).unwrap();
    assert_eq!(g.qform_code, 1);
    assert_eq!(g.pixdim[0], -1.0);
    g.sform_code = 0;
    let (q, src) = g.affine();
    assert_eq!(src, AffineSource::Qform);
    for r in 0..3 {
        for col in 0..4 {
            assert!((q[r][col] - aff[r][col]).abs() < 1e-5, "{q:?}");
        }
    }
}

/// A NIfTI-2 file built by hand, in either byte order, with an sform that flips x.
fn nifti2(be: bool, data_i16: &[i16]) -> Vec<u8> {
    let mut h = vec![0u8; 544];
    let mut put = |off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    macro_rules! num {
        ($v:expr) => {
            if be {
                $v.to_be_bytes()
            } else {
                $v.to_le_bytes()
            }
        };
    }
    put(0, &num!(540i32));
    put(4, b"n+2\0\r\n\x1a\n");
    put(12, &num!(4i16));
    put(14, &num!(16i16));
    for (i, d) in [3i64, 2, 2, 2, 1, 1, 1, 1].iter().enumerate() {
        put(16 + 8 * i, &num!(*d));
    }
    for (i, p) in [1.0f64, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]
        .iter()
        .enumerate()
    {
        put(104 + 8 * i, &num!(*p));
    }
    put(168, &num!(544i64));
    put(176, &num!(2.0f64));
    put(184, &num!(-10.0f64));
    put(348, &num!(1i32));
    let srow = [
        [-2.0f64, 0.0, 0.0, 5.0],
        [0.0, 3.0, 0.0, 6.0],
        [0.0, 0.0, 4.0, 7.0],
    ];
    for (r, row) in srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(400 + 32 * r + 8 * c, &num!(*v));
        }
    }
    for v in data_i16 {
        h.extend_from_slice(&num!(*v));
    }
    h
}

#[test]
fn nifti2_in_both_byte_orders_with_scaling_and_sform() {
    let raw: Vec<i16> = (0..8).collect();
    for be in [false, true] {
        let s = Scan::from_bytes(&nifti2(be, &raw)).unwrap();
        assert_eq!(s.info.format, "NIfTI-2");
        assert_eq!(s.info.big_endian, be);
        assert_eq!(s.info.axis_codes, "LAS");
        assert_eq!(s.stack.spacing, [4.0, 3.0, 2.0]);
        // x is flipped: file voxel i = 0 lands at stack x = 1.
        let want = Array3::from_shape_fn((2, 2, 2), |(z, y, x)| {
            let i = 1 - x;
            f32::from(raw[i + 2 * y + 4 * z]) * 2.0 - 10.0
        });
        assert_eq!(s.stack.hu, want);
        // The mask written for it carries the same affine (as NIfTI-1).
        let back = Scan::from_bytes(&s.mask_nifti_gz(&Array3::zeros((2, 2, 2))).unwrap()).unwrap();
        assert_eq!(back.info.affine, s.info.affine);
    }
}

#[test]
fn gzip_streams_are_inflated_only_as_far_as_the_header_needs() {
    // A valid 2×2×2 file followed by 8 MB of zeros: the extra is never inflated, and the result
    // is the same as without it.
    let file = nifti1(2, 8, false, &[2, 2, 2], 1.0, 0.0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let mut long = file.clone();
    long.resize(file.len() + (8 << 20), 0);
    let a = Scan::from_bytes(&gzip(&file)).unwrap();
    let b = Scan::from_bytes(&gzip(&long)).unwrap();
    assert_eq!(a.stack, b.stack);
}

#[test]
fn pair_errors_name_the_problem() {
    let hdr = bytes("nifti-rs/minimal.hdr");
    let img = bytes("nifti-rs/minimal.img");
    let e = Scan::from_pair(&hdr, &img[..1000]).unwrap_err();
    assert!(
        matches!(e, Error::Truncated(_)) && e.to_string().contains("40960"),
        "{e}"
    );
    let gz = bytes("nifti-rs/minimal.img.gz");
    assert!(Scan::from_pair(&hdr, &gz[..gz.len() / 2]).is_err());
    let e = Scan::from_pair(&bytes("nifti-rs/minimal.nii")[..352], &img).unwrap_err();
    assert!(e.to_string().contains("same file"), "{e}");
}

#[test]
fn writer_qform_matches_its_sform_in_all_48_orientations() {
    // Every axis permutation and flip (90° and 180° turns, mirrorings): the quaternion path must
    // reproduce the affine the sform holds.
    for codes in all_48_codes() {
        let mut aff = [[0.0; 4]; 4];
        aff[3][3] = 1.0;
        for (a, &(w, flip)) in parse_codes(&codes).iter().enumerate() {
            let size = [0.7, 0.9, 2.5][a];
            aff[w][a] = if flip { -size } else { size };
            aff[w][3] = 3.0 * w as f64 - 4.0;
        }
        let mut g = Geometry::from_affine([3, 4, 5], &aff).unwrap();
        assert_eq!(g.qform_code, 1, "{codes}");
        g.sform_code = 0;
        let (q, src) = g.affine();
        assert_eq!(src, AffineSource::Qform);
        for (got, want) in q.iter().zip(&aff) {
            for (x, y) in got.iter().zip(want) {
                assert!((x - y).abs() < 1e-5, "{codes}: {q:?} vs {aff:?}");
            }
        }
    }
}
