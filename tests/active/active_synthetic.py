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
