"""Benchmark cases from ``/work/shared/data`` as (Z, Y, X) arrays with spacing.

Case specs (command-line names):

========================  =================================================================
``mni1`` / ``mni2``       MNI152 T1, 3 classes: 1 = gray matter, 2 = white matter, at 1 mm
                          or 2 mm (image 2x2x2 block mean, labels 2x2x2 block mode)
``mni1wm`` / ``mni2wm``   same volume, white matter (1) vs rest
``la:N`` / ``la:ID``      the first N left-atrium LGE-MRI cases (sorted as in the
                          manifest), or one case by ID; 1 = left atrium
``acdc:N`` / ``acdc:ID``  the first N ACDC cine volumes / one by ``patientNNN_frameNN``:
                          1 = RV cavity, 2 = LV myocardium, 3 = LV cavity; spacing is
                          unknown and taken as (1, 1, 1) (Z = the short-axis slices)
``ct:boxes``              abdominal CT, 1 = liver, 2 = spleen, 3 = right kidney,
``ct:boxes+scribbles``    4 = left kidney (pseudo ground truth from TotalSegmentator),
``ct:scribbles``          prompted with boxes only, boxes + scribbles or scribbles only
``syn256``                synthetic 256^3 phantom (1 mm, two ellipsoids in a noisy,
                          bias-modulated background) for the speed/memory targets at
                          256^3; not a quality reference
``ctsmall:<prompt>``      the abdominal CT, small organs: 1 = gallbladder, 2 = pancreas,
                          3 = right adrenal gland, 4 = left adrenal gland
``ct512:<prompt>``        the abdominal CT resampled to 300 x 512 x 512 (Z, Y, X; image
                          trilinear, labels nearest), liver/spleen/kidneys as ``ct``;
                          cached under ``$LABELEFF_CACHE`` (default /tmp)
``brats:<pat>:<reg>[:6mm]``  BRATS glioma (``pat`` = 1 or 2), T1c + FLAIR as two channels,
                          one region: ``wt`` whole tumour (labels 1-4), ``tc`` tumour core
                          (1, 3, 4), ``et`` enhancing tumour (4); ``:6mm`` resamples the
                          slice axis (Z) to 6 mm (image block mean, labels by majority);
                          prompt: scribbles
``<case>@<variant>``      boxes+scribbles with inexact boxes (PROTOCOL.md): variant
                          ``exact``, ``plus20``, ``minus20``, ``shifted``; e.g.
                          ``ct:boxes+scribbles@minus20``
========================  =================================================================

Benchmarks read the shared data; tests never do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_labeleff.io import read_volume

DATA = Path(os.environ.get("LABELEFF_DATA", "/work/shared/data"))
PROMPTS = ("scribbles", "boxes", "boxes+scribbles")
# CT organs: source label id -> benchmark label
_CT_ORGANS = {5: (1, "liver"), 1: (2, "spleen"), 2: (3, "kidney_right"),
              3: (4, "kidney_left")}


@dataclass
class Case:
    """One benchmark case.

    Attributes
    ----------
    name : str
    image : ndarray, shape (Z, Y, X), float32
    gt : ndarray, shape (Z, Y, X), uint8
        0 = background, c = structure c.
    spacing : tuple of float
        (Z, Y, X) mm.
    label_names : dict
        c -> name, for c = 1..K.
    prompt : {"scribbles", "boxes", "boxes+scribbles"}
        Which weak labels the annotator gives initially.
    notes : list of str
    """

    name: str
    image: np.ndarray
    gt: np.ndarray
    spacing: tuple
    label_names: dict
    prompt: str = "scribbles"
    notes: list = field(default_factory=list)
    box_variant: str = "exact"
    peer_channel: int = 0  # single-channel peers get this channel of a (C, Z, Y, X) image

    @property
    def n_structures(self) -> int:
        """K."""
        return len(self.label_names)


def manifest() -> list[dict]:
    """Entries of ``manifest.json``."""
    return json.loads((DATA / "manifest.json").read_text())


def _read(entry: dict):
    """Image (float32) and label (uint8) as (Z, Y, X) plus (Z, Y, X) spacing, read with
    the package's own reader (``napari_labeleff.io.read_volume``)."""
    img = read_volume(DATA / entry["image"])
    lab = read_volume(DATA / entry["label"])
    image = np.asarray(img.data, dtype=np.float32)
    gt = np.asarray(lab.data).astype(np.uint8)
    return image, gt, img.geometry.spacing


def downsample2(image: np.ndarray, gt: np.ndarray, n_labels: int):
    """Halve the resolution: image by 2x2x2 block mean, labels by 2x2x2 block mode
    (ties go to the lower label). Odd trailing planes are dropped."""
    z, y, x = (s // 2 * 2 for s in image.shape)

    def blocks(a):
        a = a[:z, :y, :x]
        return a.reshape(z // 2, 2, y // 2, 2, x // 2, 2)

    img2 = blocks(image).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
    votes = np.stack([blocks(gt == c).sum(axis=(1, 3, 5)) for c in range(n_labels)])
    return img2, votes.argmax(axis=0).astype(np.uint8)


def _entries(dataset: str) -> list[dict]:
    return [e for e in manifest() if e["dataset"] == dataset]


def _select(dataset: str, arg: str) -> list[dict]:
    entries = _entries(dataset)
    if arg.isdigit():
        return entries[: int(arg)]
    hit = [e for e in entries if e["case"] == arg]
    if not hit:
        raise ValueError(f"no {dataset} case {arg!r}; known: "
                         f"{', '.join(e['case'] for e in entries)}")
    return hit


def _mni(spec: str) -> Case:
    (entry,) = _entries("mni152")
    image, gt, spacing = _read(entry)
    names = {1: "gray matter", 2: "white matter"}
    notes = ["ground truth derived from the GM/WM probability maps (not manual)"]
    if spec.startswith("mni2"):
        image, gt = downsample2(image, gt, 3)
        spacing = tuple(2 * s for s in spacing)
    if spec.endswith("wm"):
        gt = (gt == 2).astype(np.uint8)
        names = {1: "white matter"}
    return Case(spec, image, gt, spacing, names, notes=notes)


def _la(arg: str) -> list[Case]:
    return [Case(f"la:{e['case']}", *_read(e), {1: "left atrium"})
            for e in _select("la_mri", arg)]


def _acdc(arg: str) -> list[Case]:
    out = []
    for e in _select("acdc", arg):
        image, gt, _ = _read(e)
        names = {int(k): v for k, v in e["label_names"].items()}
        out.append(Case(f"acdc:{e['case']}", image, gt, (1.0, 1.0, 1.0), names,
                        notes=["spacing unknown, taken as (1, 1, 1)"]))
    return out


def _ct(prompt: str) -> Case:
    image, gt, spacing, names = _ct_organs(_CT_ORGANS, prompt)
    return Case(f"ct:{prompt}", image, gt, spacing, names,
                prompt=prompt,
                notes=["pseudo ground truth (TotalSegmentator output), not manual"])


def _synthetic(n: int = 256, seed: int = 0) -> Case:
    """Deterministic phantom: ellipsoid 1 (bright) holding sphere 2 (mid-grey) in a
    noisy background with a smooth multiplicative bias."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:n, :n, :n]
    c = (n - 1) / 2
    r1 = ((z - c) / (0.35 * n)) ** 2 + ((y - c) / (0.28 * n)) ** 2 + ((x - c) / (0.4 * n)) ** 2
    r2 = ((z - c) ** 2 + (y - c) ** 2 + (x - 0.62 * n) ** 2) / (0.12 * n) ** 2
    gt = np.zeros((n, n, n), dtype=np.uint8)
    gt[r1 <= 1] = 1
    gt[r2 <= 1] = 2
    image = np.choose(gt, np.array([0.0, 1.0, 0.55], dtype=np.float32))
    image *= (1 + 0.2 * np.sin(2 * np.pi * x / n)).astype(np.float32)
    image += rng.normal(0, 0.15, gt.shape).astype(np.float32)
    return Case("syn256", image.astype(np.float32), gt, (1.0, 1.0, 1.0),
                {1: "ellipsoid", 2: "sphere"},
                notes=["synthetic phantom for speed and memory at 256^3"])


_CT_SMALL = {4: (1, "gallbladder"), 7: (2, "pancreas"), 8: (3, "adrenal_gland_right"),
             9: (4, "adrenal_gland_left")}
BOX_VARIANTS = ("exact", "plus20", "minus20", "shifted")
CACHE = Path(os.environ.get("LABELEFF_CACHE", "/tmp"))


def _ct_organs(organs, prompt):
    """(image, gt renumbered 1..K, spacing, names) of the shipped CT for ``organs``
    (source id -> (new id, name))."""
    if prompt not in PROMPTS:
        raise ValueError(f"ct prompt must be one of {PROMPTS}, got {prompt!r}")
    (entry,) = _entries("ct_abdomen_example")
    image, src, spacing = _read(entry)
    gt = np.zeros_like(src)
    names = {}
    for old, (new, label) in organs.items():
        gt[src == old] = new
        names[new] = label
    return image, gt, spacing, dict(sorted(names.items()))


def _ct_small(prompt: str) -> Case:
    image, gt, spacing, names = _ct_organs(_CT_SMALL, prompt)
    return Case(f"ctsmall:{prompt}", image, gt, spacing, names, prompt=prompt,
                notes=["pseudo ground truth (TotalSegmentator output), not manual",
                       "small organs: gallbladder, pancreas, adrenal glands (3 mm voxels)"])


def _ct512(prompt: str) -> Case:
    """The shipped CT resampled to 300 x 512 x 512 (image trilinear, labels nearest),
    cached as .npy files."""
    from scipy import ndimage

    image, gt, spacing, names = _ct_organs(_CT_ORGANS, prompt)
    target = (300, 512, 512)
    zoom = [t / n for t, n in zip(target, image.shape)]
    new_spacing = tuple(float(h * n / t) for h, n, t in zip(spacing, image.shape, target))
    ci, cg = CACHE / "labeleff_ct512_image.npy", CACHE / "labeleff_ct512_gt.npy"
    if ci.exists() and cg.exists():
        big, big_gt = np.load(ci, mmap_mode="r"), np.load(cg)
    else:
        big = ndimage.zoom(image, zoom, order=1, grid_mode=True, mode="grid-constant",
                           cval=float(image.min())).astype(np.float32)
        big_gt = ndimage.zoom(gt, zoom, order=0, grid_mode=True, mode="grid-constant")
        np.save(ci, big)
        np.save(cg, big_gt)
        big = np.load(ci, mmap_mode="r")
    return Case(f"ct512:{prompt}", big, big_gt, new_spacing, names, prompt=prompt,
                notes=["the shipped CT resampled to 300 x 512 x 512 (image trilinear, labels "
                       "nearest); pseudo ground truth", "image memory-mapped (lazy)"])


def _brats(arg: str) -> Case:
    parts = arg.split(":")
    pat, region = parts[0], parts[1]
    thick = len(parts) > 2 and parts[2] == "6mm"
    regions = {"wt": ((1, 2, 3, 4), "whole tumour"), "tc": ((1, 3, 4), "tumour core"),
               "et": ((4,), "enhancing tumour")}
    if pat not in ("1", "2") or region not in regions or (len(parts) > 2 and not thick):
        raise ValueError(f"brats spec {arg!r}: use brats:<1|2>:<wt|tc|et>[:6mm]")
    entries = {e["case"]: e for e in _entries("brats_dev")}
    t1c = entries[f"brats_2013_pat000{pat}_1_t1c"]
    flair = entries[f"brats_2013_pat000{pat}_1_flair"]
    a, lab, spacing = _read(t1c)
    b, _, _ = _read(flair)
    ids, label = regions[region]
    gt = np.isin(lab, ids).astype(np.uint8)
    image = np.stack([a, b])
    notes = ["BRATS 2015 (2013 subset) manual labels; T1c + FLAIR channels"]
    if thick:
        # the file's slice axis is the last voxel axis; after read_volume (Z, Y, X) the
        # axis with 155 planes is the slice axis
        axis = int(np.argmin(gt.shape))
        f = max(1, int(round(6.0 / spacing[axis])))
        n = gt.shape[axis] // f * f
        sl = [slice(None)] * 3
        sl[axis] = slice(0, n)
        gt = gt[tuple(sl)]
        image = image[(slice(None), *sl)]
        shp = list(gt.shape)
        shp[axis:axis + 1] = [n // f, f]
        gt = (gt.reshape(shp).mean(axis=axis + 1) >= 0.5).astype(np.uint8)
        image = image.reshape([2, *shp]).mean(axis=axis + 2).astype(np.float32)
        spacing = tuple(h * f if i == axis else h for i, h in enumerate(spacing))
        notes.append(f"slice axis resampled to {spacing[axis]:.0f} mm (block mean / majority)")
    notes.append("peers (single-channel) get FLAIR for the whole tumour, T1c otherwise")
    return Case(f"brats:{arg}", image.astype(np.float32), gt, spacing, {1: label},
                notes=notes, peer_channel=1 if region == "wt" else 0)


def case_names(spec: str) -> list[str]:
    """Names of the cases a spec stands for, without loading them. Every name is
    itself a spec of exactly one case."""
    if "@" in spec:
        base, _, variant = spec.rpartition("@")
        if variant not in BOX_VARIANTS:
            raise ValueError(f"box variant {variant!r}; known: {BOX_VARIANTS}")
        return [f"{n}@{variant}" for n in case_names(base)]
    dataset, _, arg = spec.partition(":")
    if dataset in ("ctsmall", "ct512") and arg in PROMPTS:
        return [spec]
    if dataset == "brats":
        _brats_check(arg)
        return [spec]
    if spec in ("mni1", "mni2", "mni1wm", "mni2wm", "syn256"):
        return [spec]
    if dataset == "la" and arg:
        return [f"la:{e['case']}" for e in _select("la_mri", arg)]
    if dataset == "acdc" and arg:
        return [f"acdc:{e['case']}" for e in _select("acdc", arg)]
    if dataset == "ct" and arg in PROMPTS:
        return [spec]
    raise ValueError(f"unknown case spec {spec!r}: use mni1, mni2, mni1wm, mni2wm, "
                     "la:N|ID, acdc:N|ID, ct:boxes|boxes+scribbles|scribbles, syn256, "
                     "ctsmall:<prompt>, ct512:<prompt>, brats:<1|2>:<wt|tc|et>[:6mm], "
                     "<case>@<box variant>")


def _brats_check(arg):
    parts = arg.split(":")
    if not (2 <= len(parts) <= 3 and parts[0] in ("1", "2") and parts[1] in ("wt", "tc", "et")
            and (len(parts) == 2 or parts[2] == "6mm")):
        raise ValueError(f"brats spec {arg!r}: use brats:<1|2>:<wt|tc|et>[:6mm]")


def load_case(name: str) -> Case:
    """Load one case by the name :func:`case_names` gives it."""
    (name,) = case_names(name)
    if "@" in name:
        base, _, variant = name.rpartition("@")
        case = load_case(base)
        case.name, case.box_variant = name, variant
        case.prompt = "boxes+scribbles"
        return case
    dataset, _, arg = name.partition(":")
    if dataset == "ctsmall":
        return _ct_small(arg)
    if dataset == "ct512":
        return _ct512(arg)
    if dataset == "brats":
        return _brats(arg)
    if dataset.startswith("mni"):
        return _mni(name)
    if dataset == "syn256":
        return _synthetic()
    if dataset == "la":
        return _la(arg)[0]
    if dataset == "acdc":
        return _acdc(arg)[0]
    return _ct(arg)


def load_cases(specs) -> list[Case]:
    """Cases for a list of specs, in order."""
    return [load_case(n) for spec in specs for n in case_names(spec)]
