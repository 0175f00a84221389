#!/usr/bin/env python3
"""Rebuild the vendored base anatomy of `ichnet synth` from the shared originals (see README.md).

Needs numpy and nibabel. Usage: python3 make_anatomy.py SHARED_DATA_DIR
(SHARED_DATA_DIR holds ct-heads/ and ct-templates/ as described in README.md).

Both outputs are int16 HU (scl_slope 1, scl_inter 0), cropped to the head's bounding box plus a
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
