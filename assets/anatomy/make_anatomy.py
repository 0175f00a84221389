#!/usr/bin/env python3
"""Rebuild the vendored base anatomy of `ichnet synth` from the shared originals (see README.md).

Needs numpy and nibabel (and pydicom + scipy for the GE head). Usage:
python3 make_anatomy.py SHARED_DATA_DIR (SHARED_DATA_DIR holds ct-heads/, ct-templates/ and
dicom/ge-head-ct-tilt/ as described in README.md).

All outputs are int16 HU (scl_slope 1, scl_inter 0), cropped to the head's bounding box plus a
small margin, with qform = sform moved so that every kept voxel keeps its world position.
"""
import sys

import nibabel as nib
import numpy as np

src = sys.argv[1]
MARGIN = 3  # voxels of air kept around the head on each side


def crop_to_head(hu, affine, threshold):
    """Crop to the bounding box of voxels above `threshold` HU (+ MARGIN), shifting the affine."""
    idx = np.argwhere(hu > threshold)
    lo = np.maximum(idx.min(axis=0) - MARGIN, 0)
    hi = np.minimum(idx.max(axis=0) + MARGIN + 1, hu.shape)
    out = hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    aff = affine.copy()
    aff[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return out, aff


def save(data, affine, path, code):
    img = nib.Nifti1Image(data.astype(np.int16), affine)
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    nib.save(img, path)


# 1. Real head CT. Air noise (sigma ~16 HU around -996) is what makes the file big, and the
#    synthesiser adds its own noise afterwards: every voxel below -950 HU becomes -1024.
head = nib.load(f"{src}/ct-heads/cranium_promed0051.nii.gz")
hu = np.asanyarray(head.dataobj).astype(np.int16)
hu[hu < -950] = -1024
hu, aff = crop_to_head(hu, head.affine, -400)
save(hu, aff, "cranium_promed0051_head.nii.gz", 1)


# 2. Template with skull, Cormack units -> HU (the inverse of Rorden's h2c with minimum -1024,
#    the same convention as tests/fixtures/ct/make_fixtures.py: x = HU + 1024,
#    c = x for x <= 900, 11x - 9000 for 900 < x <= 1100, 2x + 900 above).
def cormack_to_hu(c):
    x = np.where(c <= 900, c, np.where(c <= 3100, (c + 9000) / 11, (c - 900) / 2))
    return x - 1024


tpl = nib.load(f"{src}/ct-templates/scct_cormack.nii.gz")
c = np.asanyarray(tpl.dataobj).astype(np.float64)
t_hu = np.floor(cormack_to_hu(c) + 0.5).astype(np.int16)
t_hu, t_aff = crop_to_head(t_hu, tpl.affine, -400)
save(t_hu, t_aff, "scct_cormack_hu.nii.gz", 2)


# 3. The GE head CT (DICOM, 28 slices: 4 mm through the posterior fossa, 7 mm above, gantry tilt
#    18.5 degrees). An anatomy is a rectilinear volume, so the tilt is undone here: the grid's axes
#    are the image rows, columns and the slice normal (an oblique but orthogonal affine), and each
#    slice is placed at its own offset along the normal and shifted in-plane by where its origin
#    really lies (the shear the tilt causes). In-plane the 0.49 mm pixels are averaged 2 x 2 and
#    sampled at 0.98 mm; along the normal the slices are interpolated linearly onto 4 mm steps
#    (exact in the 4 mm part; the 7 mm part has no more detail to keep).
def ge_head(folder):
    import glob

    import pydicom
    from scipy.ndimage import map_coordinates

    slices = []
    for f in sorted(glob.glob(f"{folder}/*.dcm")):
        d = pydicom.dcmread(f)
        img = d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        img[img < -1024] = -1024  # outside the reconstruction circle (-1500 in this series)
        iop = np.array([float(x) for x in d.ImageOrientationPatient])
        pos = np.array([float(x) for x in d.ImagePositionPatient])
        slices.append((pos, iop, [float(x) for x in d.PixelSpacing], img))
    row_dir, col_dir = slices[0][1][:3], slices[0][1][3:]
    normal = np.cross(row_dir, col_dir)
    origin = slices[0][0]
    dist = np.array([(s[0] - origin) @ normal for s in slices])
    order = np.argsort(dist)
    slices = [slices[i] for i in order]
    dist = dist[order]
    dy, dx = slices[0][2]  # PixelSpacing: between rows, between columns
    step = 2 * dx, 2 * dy, 4.0
    ny0, nx0 = slices[0][3].shape
    nx, ny = int(round(nx0 * dx / step[0])), int(round(ny0 * dy / step[1]))
    nz = int(np.floor((dist[-1] - dist[0]) / step[2])) + 1
    # Centres of the output pixels, mm from the first slice's origin along rows/columns.
    u, v = np.meshgrid(
        np.arange(nx) * step[0] + (step[0] - dx) / 2,
        np.arange(ny) * step[1] + (step[1] - dy) / 2,
        indexing="ij",
    )

    def resampled(k):
        pos, _, _, img = slices[k]
        off = (pos - origin) - dist[k] * normal  # in-plane offset of this slice's origin
        box = (img + np.roll(img, -1, 0) + np.roll(img, -1, 1) + np.roll(img, (-1, -1), (0, 1))) / 4
        rows = (v - off @ col_dir) / dy - 0.5
        cols = (u - off @ row_dir) / dx - 0.5
        return map_coordinates(box, [rows, cols], order=1, mode="constant", cval=-1024.0)

    cache = {}
    vol = np.empty((nx, ny, nz))
    for z in range(nz):
        w = dist[0] + z * step[2]
        k = min(np.searchsorted(dist, w, side="right") - 1, len(dist) - 2)
        t = (w - dist[k]) / (dist[k + 1] - dist[k])
        for j in (k, k + 1):
            if j not in cache:
                cache[j] = resampled(j)
        vol[:, :, z] = (1 - t) * cache[k] + t * cache[k + 1]
    hu = np.floor(vol + 0.5).astype(np.int16)
    hu[hu < -950] = -1024
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = row_dir * step[0], col_dir * step[1], normal * step[2]
    aff[:3, 3] = origin
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff  # DICOM's LPS world -> NIfTI's RAS
    return crop_to_head(hu, aff, -400)


g_hu, g_aff = ge_head(f"{src}/dicom/ge-head-ct-tilt")
save(g_hu, g_aff, "ge_hispeed_head.nii.gz", 1)
