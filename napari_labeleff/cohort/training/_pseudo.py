"""Labels the training makes itself: graph pseudo-labels of weakly labelled volumes,
the teacher's self-training labels of unlabeled ones, and which structures are one
connected object.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
import warnings

import numpy as np

from ._data import build_supervision, make_dataset, read_image, resample_mask, to_item
from ._inference import keep_largest, sliding_window_probs
from ._options import PSEUDO_BAND, PSEUDO_WEIGHT, SELF_CONFIDENCE
from ._spec import read_labels_snapshot


#: A structure counts as one connected object when, in every dense label map that
#: holds it, its largest 26-connected component has at least this share of its voxels.
SINGLE_COMPONENT = 0.95


def single_component_classes(label_maps, k: int) -> list[bool]:
    """Per structure 1..K, whether the training labels show it as one connected object
    (then prediction keeps only its largest component).

    Parameters
    ----------
    label_maps : list of ndarray, shape (z, y, x)
        Dense labels 0..K (-1 = unknown), from masks or graph pseudo-labels; scribbles
        alone say nothing about connectivity and are not passed.
    k : int
        Number of structures.

    Returns
    -------
    list of bool, length K
        False for a structure no dense map holds.
    """
    from scipy import ndimage as ndi

    out = []
    for c in range(1, k + 1):
        shares = []
        for lab in label_maps:
            cc, n = ndi.label(lab == c, structure=np.ones((3, 3, 3), bool))
            if n:
                sizes = np.bincount(cc.ravel())[1:]
                shares.append(sizes.max() / sizes.sum())
        out.append(bool(shares) and bool(min(shares) >= SINGLE_COMPONENT))
    return out


def leave_out_band(lab: np.ndarray, labels: np.ndarray, band: int) -> None:
    """Set ``lab`` to 0 (no information) within ``band`` voxels on each side of every
    boundary of ``labels`` (0..K), in place: a teacher's errors sit at boundaries."""
    from scipy import ndimage as ndi

    if band <= 0:
        return
    for c in range(int(labels.max()) + 1):
        m = labels == c
        edge = ndi.binary_dilation(m, iterations=band) & ~ndi.binary_erosion(m, iterations=band, border_value=1)
        lab[edge] = 0


def self_labels(model, cases, patch, device, amp, single, folder):
    """The teacher's labels of unlabeled volumes (self-training), saved in ``folder``.

    Per volume: class probabilities by sliding window at the target spacing, structures
    known to be one object keep their largest component (as prediction does), then
    voxels below :data:`SELF_CONFIDENCE` and a band of :data:`PSEUDO_BAND` voxels around
    the predicted boundaries are left out. Returns {volume id: (z, y, x) uint8 labels in
    the scribble convention (0 = left out)}.
    """
    os.makedirs(folder, exist_ok=True)
    out = {}
    for pc in cases:
        probs = sliding_window_probs(model, pc.image, patch, device, amp=amp).numpy()
        keep_largest(probs, single)
        labels = probs.argmax(axis=0)
        lab = (labels + 1).astype(np.uint8)
        lab[probs.max(axis=0) < SELF_CONFIDENCE] = 0
        leave_out_band(lab, labels, PSEUDO_BAND)
        np.save(os.path.join(folder, f"{pc.volume_id}.npy"), lab)
        out[pc.volume_id] = lab
    return out


def self_dataset(lab_cases, unl_cases, labels, k_boxes, patch, seed):
    """The labelled dataset with the unlabeled volumes added, supervised by ``labels``
    (:func:`self_labels`); the unlabeled cases themselves are not modified."""
    items = [to_item(pc, k_boxes) for pc in lab_cases]
    for pc in unl_cases:
        c = copy.copy(pc)
        c.role = "labelled"
        build_supervision(c, pseudo=labels[pc.volume_id], pseudo_weight=PSEUDO_WEIGHT)
        items.append(to_item(c, k_boxes))
    return make_dataset(items, patch, labelled=True, seed=seed + 3)


def pseudo_labels(case, pc, k, cache_dir, band=PSEUDO_BAND, confidence=0.0):
    """Graph-method labels for a weakly labelled volume, at the target spacing, in the
    scribble convention, with a band of ``band`` voxels around every predicted boundary
    left out (0): the graph's errors sit at boundaries, its interiors are reliable.
    Voxels whose graph probability of their label is below ``confidence`` are left out
    too (a leak into a look-alike region is less certain than the object's core).

    The graph runs on the ORIGINAL grid with the original scribbles/boxes (thin strokes
    do not survive a coarser grid), then the labels are resampled (nearest).
    Cached in ``cache_dir`` by the image path and the content of the weak labels.
    """
    from ...engine import refine

    snap = read_labels_snapshot(case.labels_path, n_classes=k + 1)
    h = hashlib.sha256(case.image_path.encode() + repr(pc.spacing).encode() + repr(band).encode()
                       + (repr(confidence).encode() if confidence > 0 else b""))
    for name in ("scribbles", "boxes"):  # array content: a re-written snapshot still hits
        h.update(np.ascontiguousarray(snap[name]).tobytes())
    key = h.hexdigest()[:16]
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"pseudo_{pc.volume_id}_{key}.npy")
    if os.path.exists(path):
        try:
            return np.load(path), {"cached": True}
        except (OSError, ValueError):
            pass
    image, spacing = read_image(case.image_path)
    labels = read_labels_snapshot(case.labels_path, shape=image.shape[1:], n_classes=k + 1)
    scr, boxes = labels["scribbles"], [tuple(int(v) for v in b) for b in labels["boxes"]]
    if not (scr > 1).any() and not boxes:
        return None, {"skipped": "no structure scribbled and no boxes"}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # e.g. "box cuts the object"
        warnings.simplefilter("always")
        res = refine(image if image.shape[0] > 1 else image[0], scr, spacing=spacing, boxes=boxes or None)
    seconds = time.perf_counter() - t0
    low = resample_mask(np.asarray(res.labels), spacing, pc.spacing, out_shape=pc.image.shape[1:])
    lab = low.astype(np.uint8) + 1
    if confidence > 0:
        sure = np.asarray(res.probabilities).max(axis=0) >= confidence
        sure = resample_mask(sure, spacing, pc.spacing, out_shape=pc.image.shape[1:])
        lab[sure == 0] = 0
    leave_out_band(lab, low, band)
    np.save(path, lab)
    return lab, {"method": res.method, "seconds": round(seconds, 2), "kept": round(float((lab > 0).mean()), 3),
                 "warnings": [str(w.message) for w in caught]}
