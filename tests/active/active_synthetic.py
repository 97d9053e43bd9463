"""Synthetic refinement results for the active-learning tests (no engine needed)."""

import numpy as np
from scipy import ndimage as ndi

from napari_labeleff.engine import RefineResult, RefineState

SHAPE = (40, 40, 40)
ANNOTATED = 30  # the scribbled axial slice
SMALL = (33, 6, 6, 37, 10, 10)  # structure 2, near the scribbled slice


def make_result(big_centre=(12, 20, 20), big_radius=9, small_box=SMALL, shape=SHAPE,
                annotated=ANNOTATED):
    """Image, scribbles and a hand-built RefineResult.

    Structure 1 is a large sphere far from the scribbled slice, structure 2 a small
    cube near it, outside the sphere's axial extent. Probabilities are a softmax of
    signed distances whose temperature grows with the distance to the scribbled
    slice, so boundaries blur away from it: the sphere holds far more uncertainty.
    """
    zz, yy, xx = np.indices(shape)
    gt = np.zeros(shape, np.uint8)
    gt[(zz - big_centre[0]) ** 2 + (yy - big_centre[1]) ** 2
       + (xx - big_centre[2]) ** 2 <= big_radius ** 2] = 1
    z0, y0, x0, z1, y1, x1 = small_box
    gt[z0:z1, y0:y1, x0:x1] = 2
    sd = []
    for c in (1, 2):
        inside = gt == c
        sd.append(ndi.distance_transform_edt(inside) - ndi.distance_transform_edt(~inside))
    sd = np.stack([-np.maximum(sd[0], sd[1])] + sd)
    temp = 0.5 + 0.25 * np.abs(zz - annotated)
    logits = sd / temp
    p = np.exp(logits - logits.max(0))
    p = (p / p.sum(0)).astype(np.float32)
    ent = -(p * np.log(np.clip(p, 1e-7, 1))).sum(0) / np.log(3)
    labels = p.argmax(0).astype(np.uint8)
    rng = np.random.default_rng(0)
    image = (gt * 100.0 + rng.normal(0, 10, shape)).astype(np.float32)
    scribbles = np.zeros(shape, np.int16)
    scribbles[annotated, 2:5, 2:30] = 1
    scribbles[annotated, 18:22, 18:22] = 2
    result = RefineResult(labels=labels, probabilities=p, uncertainty=ent.astype(np.float32),
                          method="synthetic", device="cpu",
                          state=RefineState("synthetic", shape, 3))
    return image, scribbles, result, gt


def make_lesion(shape=(40, 48, 48), centre=(30, 24, 24), radius=4, annotated=30):
    """A small lesion and a large diffusely uncertain area far from it.

    Structure 1 is a sphere of ``radius`` voxels around ``centre``, stroked on slice
    ``annotated`` (with background strokes there too). Probabilities: confident around
    the stroke, blurring with the distance to it inside the lesion's rim; slices
    0..15 hold a big block of tissue the refinement is unsure about (p(lesion) 0.35,
    predicted background), as a graph method leaves on tissue that looks alike.
    """
    zz, yy, xx = np.indices(shape)
    gt = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
          <= radius ** 2).astype(np.uint8)
    inside = gt == 1
    sd = ndi.distance_transform_edt(inside) - ndi.distance_transform_edt(~inside)
    temp = 0.4 + 0.5 * np.abs(zz - annotated)
    p1 = 1.0 / (1.0 + np.exp(-sd / temp))
    p1[:16, 4:44, 4:44] = 0.35
    p = np.stack([1.0 - p1, p1]).astype(np.float32)
    labels = (p1 > 0.5).astype(np.uint8)
    rng = np.random.default_rng(1)
    image = (gt * 80.0 + rng.normal(0, 10, shape)).astype(np.float32)
    image[:16, 4:44, 4:44] += 40.0
    scribbles = np.zeros(shape, np.int16)
    scribbles[annotated, 23:26, centre[2] - 2:centre[2] + 3] = 2
    scribbles[annotated, 2:5, 2:40] = 1
    ent = -(p * np.log(np.clip(p, 1e-7, 1))).sum(0) / np.log(2)
    result = RefineResult(labels=labels, probabilities=p, uncertainty=ent.astype(np.float32),
                          method="synthetic", device="cpu",
                          state=RefineState("synthetic", shape, 2))
    return image, scribbles, result, gt


def make_two_structures(shape=(48, 40, 40)):
    """Two structures: a big sphere stroked on three axial slices, a smaller one on a
    single slice. Probabilities blur with the distance to the nearest stroked slice of
    the same structure."""
    zz, yy, xx = np.indices(shape)
    gt = np.zeros(shape, np.uint8)
    gt[(zz - 14) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 11 ** 2] = 1
    gt[(zz - 36) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 6 ** 2] = 2
    strokes = {1: (7, 14, 21), 2: (36,)}
    scribbles = np.zeros(shape, np.int16)
    dist = np.full(shape, 99.0)
    for c, zs in strokes.items():
        for z in zs:
            scribbles[z, 19:22, 16:25][gt[z, 19:22, 16:25] == c] = c + 1
            scribbles[z, 1:4, 2:38] = 1
        near = np.min([np.abs(zz - z) for z in zs], axis=0)
        dist = np.where(np.abs(zz - (14 if c == 1 else 36)) <= (11 if c == 1 else 6),
                        np.minimum(dist, near), dist)
    sd = []
    for c in (1, 2):
        inside = gt == c
        sd.append(ndi.distance_transform_edt(inside) - ndi.distance_transform_edt(~inside))
    sd = np.stack([-np.maximum(sd[0], sd[1])] + sd)
    temp = 0.5 + 0.3 * np.minimum(dist, 20)
    logits = sd / temp
    p = np.exp(logits - logits.max(0))
    p = (p / p.sum(0)).astype(np.float32)
    rng = np.random.default_rng(2)
    image = (gt * 60.0 + rng.normal(0, 10, shape)).astype(np.float32)
    result = RefineResult(labels=p.argmax(0).astype(np.uint8), probabilities=p,
                          uncertainty=np.zeros(shape, np.float32), method="synthetic",
                          device="cpu", state=RefineState("synthetic", shape, 3))
    return image, scribbles, result, gt
