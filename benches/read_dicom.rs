//! Read + assemble a 512×512×40 DICOM series (40 single-frame files, explicit VR little endian),
//! against reading the same volume as one gzipped NIfTI in the same run (the peer).
//!
//! The volume is the real head CT fixture (tests/fixtures/ct) taken to 512×512 pixels (bilinear)
//! and 40 slices; the files are written in memory with dicom-object and handed to
//! `io::read_files` exactly as the CLI and the page do (headers of every file, sort, decode,
//! rescale, scatter into the stack).
//!
//! Run: `cargo bench --bench read_dicom`. Prints figures; asserts nothing about speed.

use std::time::Instant;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::mem::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use ichnet::Stack;
use ichnet::io::{ReadOptions, Scan, Storage, read_files, write_stack_nifti_gz};
use ndarray::Axis;

mod common;

const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn volume() -> ichnet::Result<Stack> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ct/cranium_promed0051_half.nii.gz"
    );
    let bytes = std::fs::read(path).map_err(|e| ichnet::Error::io(path, e))?;
    let head = Scan::from_bytes(&bytes)?.stack;
    let (nz, _, _) = head.dims();
    let picks: Vec<usize> = (0..40).map(|k| (2 * k + 1) * nz / 80).collect();
    let slab = head.hu.select(Axis(0), &picks);
    let hu = common::upsample_512(slab.view());
    let fov = head.spacing[1] * head.dims().1 as f32;
    let spacing = [head.spacing[0] * nz as f32 / 40.0, fov / 512.0, fov / 512.0];
    let voxel_ml = spacing.iter().map(|&s| f64::from(s)).product::<f64>() / 1000.0;
    Ok(Stack {
        hu,
        spacing,
        voxel_ml,
    })
}

fn dicom_files(stack: &Stack) -> Vec<(String, Vec<u8>)> {
    let (nz, ny, nx) = stack.dims();
    let [sz, sy, sx] = stack.spacing;
    (0..nz)
        .map(|k| {
            let mut o = InMemDicomObject::new_empty();
            let put = |o: &mut InMemDicomObject, t, vr, v: String| {
                o.put(DataElement::new(t, vr, PrimitiveValue::from(v)));
            };
            put(
                &mut o,
                tags::SOP_CLASS_UID,
                VR::UI,
                uids::CT_IMAGE_STORAGE.into(),
            );
            put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, format!("2.25.1{k}"));
            put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.2".into());
            put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, "2.25.3".into());
            put(&mut o, tags::MODALITY, VR::CS, "CT".into());
            put(
                &mut o,
                tags::IMAGE_TYPE,
                VR::CS,
                "ORIGINAL\\PRIMARY\\AXIAL".into(),
            );
            // Stack x runs to patient Right = DICOM −x; y to Anterior = DICOM −y.
            put(
                &mut o,
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "-1\\0\\0\\0\\-1\\0".into(),
            );
            put(
                &mut o,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                format!("0\\0\\{}", k as f32 * sz),
            );
            put(&mut o, tags::PIXEL_SPACING, VR::DS, format!("{sy}\\{sx}"));
            put(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-1024".into());
            put(&mut o, tags::RESCALE_SLOPE, VR::DS, "1".into());
            for (t, v) in [
                (tags::ROWS, ny as u16),
                (tags::COLUMNS, nx as u16),
                (tags::SAMPLES_PER_PIXEL, 1),
                (tags::BITS_ALLOCATED, 16),
                (tags::BITS_STORED, 16),
                (tags::HIGH_BIT, 15),
                (tags::PIXEL_REPRESENTATION, 1),
            ] {
                o.put(DataElement::new(t, VR::US, PrimitiveValue::from(v)));
            }
            put(
                &mut o,
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                "MONOCHROME2".into(),
            );
            let px: Vec<u8> = stack
                .slice(k)
                .iter()
                .flat_map(|&v| {
                    ((v.round() as i32 + 1024).clamp(-32768, 32767) as i16).to_le_bytes()
                })
                .collect();
            o.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::from(px),
            ));
            let file = o
                .with_meta(
                    FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
                )
                .expect("meta");
            let mut bytes = Vec::new();
            file.write_all(&mut bytes).expect("write");
            (format!("{k:03}.dcm"), bytes)
        })
        .collect()
}

fn main() -> ichnet::Result<()> {
    let stack = volume()?;
    let files = dicom_files(&stack);
    let total_mb = files.iter().map(|f| f.1.len()).sum::<usize>() as f64 / 1e6;
    let nifti = write_stack_nifti_gz(
        &stack,
        Storage::I16 {
            slope: 1.0,
            inter: 0.0,
        },
    )?;
    let (mut t_dicom, mut t_nifti) = (Vec::new(), Vec::new());
    let mut dims = (0, 0, 0);
    for _ in 0..RUNS {
        let input = files.clone();
        let t0 = Instant::now();
        let scan = read_files(input, &ReadOptions::default())?;
        t_dicom.push(t0.elapsed().as_secs_f64());
        dims = scan.stack.dims();
        let t1 = Instant::now();
        let _ = Scan::from_bytes(&nifti)?;
        t_nifti.push(t1.elapsed().as_secs_f64());
    }
    let (d, n) = (median(t_dicom), median(t_nifti));
    println!(
        "read_dicom: 40 files ({total_mb:.1} MB) → stack {dims:?}: median {:.1} ms over {RUNS} runs; \
         same volume as .nii.gz ({:.1} MB): {:.1} ms; DICOM/NIfTI = {:.2}",
        d * 1e3,
        nifti.len() as f64 / 1e6,
        n * 1e3,
        d / n
    );
    Ok(())
}
