"""Active-learning benchmark: the slice-level variant of ``benchmarks/PROTOCOL.md``.

Every strategy starts from the same single annotated axial slice (the middle of the
structures' extent); each round it names one unannotated axial slice, the simulated
annotator draws one stroke per class present there, and the same refinement method
refines (incremental state). Recorded per round: mean Dice, the slice picked, seconds
per refine and per suggestion; per case and strategy: annotated slices needed to reach
mean Dice 0.90. Calibration of the uncertainty on every refinement of the ``default``
runs: share of the errors held by the 10% most uncertain voxels and the AUROC of
uncertainty for predicting an error (whole volume and inside the padded bounding box
of ground truth and prediction). Scoring speed on the 256^3 phantom.

Usage (from the repository root)::

    python -m benchmarks.bench_active --cases mni2 la:4 --rounds 12 --seeds 2
    python -m benchmarks.bench_active --cases brats:pat0002 acdc:patient001_frame01 \
        la:2 --halve brats la --rounds 8 --seeds 2

``brats:patNNNN`` is the BRATS development subject's T1c with the tumour core
(labels 1, 3, 4) as the one structure: a small lesion.
    python -m benchmarks.bench_active --report benchmarks/results/active.json

The run writes ``benchmarks/results/active.json``; ``--report`` (also done after a
run) draws ``docs/images/active_dice.png`` and rewrites the active section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_labeleff.active import STRATEGIES, suggest, uncertainty_map
from napari_labeleff.engine import refine
from napari_labeleff.engine._device import resolve_device

from .active_report import ROOT, write_report
from .annotator import al_start_slice, dice_per_class, slice_annotation
from .cases import downsample2, load_case, load_cases

RESULTS = ROOT / "benchmarks" / "results" / "active.json"
RANDOMISED = ("random", "foreground_random")


def calibration(uncertainty: np.ndarray, errors: np.ndarray) -> dict:
    """Share of errors among the 10% most uncertain voxels and the AUROC of
    uncertainty as an error detector (sklearn)."""
    from sklearn.metrics import roc_auc_score

    u, e = uncertainty.ravel(), errors.ravel()
    if not e.any() or e.all():
        return {"top10_error_share": None, "auroc": None}
    k = max(1, int(0.1 * u.size))
    top = np.argpartition(-u, k - 1)[:k]
    return {"top10_error_share": float(e[top].sum() / e.sum()),
            "auroc": float(roc_auc_score(e, u))}


def _roi(gt: np.ndarray, pred: np.ndarray, pad: int = 5) -> tuple:
    """Bounding box of ground truth and prediction, padded: where errors can be."""
    idx = np.argwhere((gt > 0) | (pred > 0))
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, gt.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def run_strategy(case, strategy: str, rounds: int, method: str, seed: int,
                 calibrate: bool) -> dict:
    """One active-learning run of ``rounds`` rounds; returns the per-round record."""
    k = case.n_structures
    start = al_start_slice(case.gt)
    scribbles = slice_annotation(case.gt, np.zeros(case.gt.shape, np.int16), 0, start)
    names = {0: "background", **case.label_names}
    state, rec = None, {"slices": [start], "dice": [], "refine_s": [], "suggest_s": [],
                        "calibration": []}
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        res = refine(case.image, scribbles, spacing=case.spacing, method=method,
                     state=state)
        rec["refine_s"].append(time.perf_counter() - t0)
        state = res.state
        rec["method"] = res.method
        rec["dice"].append(float(dice_per_class(case.gt, res.labels, k).mean()))
        if calibrate:
            u = uncertainty_map(res)
            err = res.labels != case.gt
            roi = _roi(case.gt, res.labels)
            rec["calibration"].append({"volume": calibration(u, err),
                                       "roi": calibration(u[roi], err[roi])})
        if r == rounds:
            break
        t0 = time.perf_counter()
        (s,) = suggest(case.image, scribbles, spacing=case.spacing, result=res, n=1,
                       strategy=strategy, seed=seed * 1000 + r, class_names=names)
        rec["suggest_s"].append(time.perf_counter() - t0)
        rec["slices"].append(s.index)
        scribbles = slice_annotation(case.gt, scribbles, 0, s.index)
    return rec


def scoring_speed(repeats: int = 3) -> dict:
    """Seconds to score the 256^3 phantom (3 classes).

    The probabilities are the phantom's one-hot labels, Gaussian-blurred (sigma 2
    voxels) plus noise, then renormalised: scoring cost does not depend on how they
    were made, and a 256^3 CPU refinement would dominate the benchmark's time.
    """
    from scipy import ndimage as ndi

    case = load_case("syn256")
    rng = np.random.default_rng(0)
    probs = np.stack([ndi.gaussian_filter((case.gt == c).astype(np.float32), 2.0)
                      for c in range(3)])
    probs += rng.uniform(0, 0.05, probs.shape).astype(np.float32)
    probs /= probs.sum(0)
    scr = np.zeros(case.gt.shape, np.int16)
    out = {"shape": list(case.gt.shape), "device": str(resolve_device("auto"))}
    for label, fn in {
        "uncertainty_map_s": lambda: uncertainty_map(probs),
        "suggest_slice_s": lambda: suggest(case.image, scr, spacing=case.spacing,
                                           result=probs, n=5),
        "suggest_region_s": lambda: suggest(case.image, scr, spacing=case.spacing,
                                            result=probs, n=5, granularity="region"),
    }.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[label] = float(np.median(times))
    out["loadavg"] = list(os.getloadavg())
    return out


def _brats(spec: str):
    """``brats:pat0002``: T1c and the tumour core (necrotic 1 + non-enhancing 3 +
    enhancing 4) of a BRATS development subject, read with ``io.read_volume``."""
    from napari_labeleff.io import read_volume

    from .cases import DATA, Case

    subject = spec.partition(":")[2] or "pat0002"
    stem = DATA / "brats_dev" / f"brats_2013_{subject}_1"
    img = read_volume(f"{stem}_t1c.nii.gz")
    lab = read_volume(f"{stem}_label.nii.gz")
    gt = np.isin(np.asarray(lab.data), (1, 3, 4)).astype(np.uint8)
    return Case(f"brats:{subject}", np.asarray(img.data, np.float32), gt,
                img.geometry.spacing, {1: "tumour core"},
                notes=["T1c; tumour core = labels 1, 3, 4 (a small lesion)"])


def _git_commit() -> dict:
    import subprocess

    def git(*a):
        return subprocess.run(["git", *a], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "clean": git("status", "--porcelain", "--untracked-files=no") == ""}


def _load(spec: str, halve: tuple) -> list:
    cases = [_brats(spec)] if spec.startswith("brats") else load_cases([spec])
    for c in cases:
        if c.name.split(":")[0] in halve:
            c.image, c.gt = downsample2(c.image, c.gt, c.n_structures + 1)
            c.spacing = tuple(2 * s for s in c.spacing)
            c.notes.append("2x2x2 block-downsampled for the CPU budget")
    return cases


def run(specs, rounds: int, seeds: int, method: str, halve: tuple, speed: bool) -> dict:
    out = {"date": datetime.datetime.now().isoformat(timespec="minutes"),
           "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                      f"{os.cpu_count()} CPU cores",
           "rounds": rounds, "seeds": seeds, "method": method,
           "loadavg_start": list(os.getloadavg()), "cases": {}, **_git_commit()}
    for spec in specs:
        for case in _load(spec, halve):
            runs = {}
            for strategy in STRATEGIES:
                n_seeds = seeds if strategy in RANDOMISED else 1
                runs[strategy] = [run_strategy(case, strategy, rounds, method, s,
                                               calibrate=strategy == "default")
                                  for s in range(n_seeds)]
                print(case.name, strategy, [np.round(r["dice"], 3).tolist()
                                            for r in runs[strategy]], flush=True)
            out["cases"][case.name] = {"shape": list(case.gt.shape),
                                       "spacing": list(case.spacing),
                                       "notes": case.notes, "runs": runs}
    out["loadavg_end"] = list(os.getloadavg())
    if speed:
        out["scoring_speed"] = scoring_speed()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["mni2", "la:4"])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=2,
                    help="runs of the randomised strategies per case (averaged)")
    ap.add_argument("--method", default="auto")
    ap.add_argument("--halve", nargs="*", default=[],
                    help="datasets (la, acdc, mni2...) to 2x2x2 block-downsample")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report", type=Path, help="only redraw plots/docs from a JSON")
    args = ap.parse_args(argv)
    if args.report:
        write_report(json.loads(args.report.read_text()))
        return
    res = run(args.cases, args.rounds, args.seeds, args.method, tuple(args.halve),
              not args.no_speed)
    res["command"] = "python -m benchmarks.bench_active " + " ".join(
        sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    write_report(res)


if __name__ == "__main__":
    main()
