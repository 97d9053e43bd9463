"""Latency benchmark (issue 20): time to the first and to the final result per refine
call, and the solves each call makes, beside the peers on the same prompts.

Cases: the shipped samples with their own prompts (``sample:brain`` scribbles,
``sample:ct`` boxes + scribbles; what ``labeleff gui --sample`` shows a new user) and any
case of ``benchmarks/cases.py`` with the protocol's prompts (``la:ID``, ``brats:1:wt``,
``ct512:boxes+scribbles``...). Each case gets the initial prompts, then ``k`` corrective
interactions of the protocol (``benchmarks/annotator.py``).

Arms, every one on exactly the same prompts and corrections:

* ``ours`` — ``engine.refine_steps`` as shipped (staged first calls: a coarse first
  result, choices on a coarse grid, one full-resolution solve);
* ``ours:flat`` — the same engine with ``staged=False`` (every choice solved on the
  full grid, as before the latency budget);
* peers (``peers:geodesic``, ``peers:watershed``, ...), timed per call.

Each (case, arm) runs in a fresh spawned process (its own peak RSS). Example::

    python -m benchmarks.bench_latency --cases sample:brain sample:ct \\
        la:06SR5RBREL16DQ6M8LWS brats:1:wt --arms ours ours:flat peers:geodesic \\
        --k 3 --out benchmarks/results/latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .annotator import (box_variant_prompts, corrective_interaction, dice_per_class,
                        initial_scribbles)
from .bench_refine import machine_info, run_isolated
from .cases import case_names, load_case

#: Structures of the shipped samples (their label files' names).
SAMPLES = ("brain", "ct")


def _sample_case(name: str):
    """(image, gt, spacing, K, scribbles, boxes, label names) of a shipped sample with
    its own prompts."""
    from napari_labeleff.io import load_sample

    s = load_sample(name)
    gt = np.asarray(s.labels).astype(np.uint8)
    k = int(gt.max())
    boxes = [tuple(int(v) for v in b) for b in (s.boxes or [])] or None
    return (np.asarray(s.volume.data, np.float32), gt, tuple(s.volume.spacing), k,
            np.asarray(s.scribbles).astype(np.int16), boxes, list(s.class_names[1:k + 1]))


def load(name: str):
    """A case by name: ``sample:<brain|ct>`` or a ``benchmarks/cases.py`` spec."""
    if name.startswith("sample:"):
        return _sample_case(name.split(":", 1)[1])
    case = load_case(name)
    scr = (initial_scribbles(case.gt, seed=0) if "scribbles" in case.prompt
           else np.zeros(case.gt.shape, np.int16))
    boxes = (box_variant_prompts(case.gt, case.box_variant, seed=0)
             if "boxes" in case.prompt else None)
    image = case.image
    return (image, case.gt, tuple(case.spacing), case.n_structures, scr, boxes,
            [case.label_names[c] for c in sorted(case.label_names)])


class _Engine:
    def __init__(self, staged: bool):
        from napari_labeleff.engine import refine_steps

        self.refine_steps, self.staged, self.state = refine_steps, staged, None

    def __call__(self, image, scribbles, spacing, boxes):
        t0 = time.perf_counter()
        gen = self.refine_steps(image, scribbles, spacing=spacing, boxes=boxes,
                                state=self.state, staged=self.staged)
        first = None
        while True:
            try:
                report = next(gen)
            except StopIteration as stop:
                res = stop.value
                break
            if report.preview is not None and first is None:
                first = time.perf_counter() - t0
        final = time.perf_counter() - t0
        self.state = res.state
        solves = res.info.get("solves", {})
        return res.labels, {"first_s": first if first is not None else final,
                            "final_s": final,
                            "full_resolution_solves": solves.get("full_resolution"),
                            "solves": solves.get("total"),
                            "by_stage": solves.get("by_stage"),
                            "unary": res.info.get("unary")}


def run_one(case_name: str, arm: str, k: int) -> dict:
    image, gt, spacing, n, scribbles, boxes, names = load(case_name)
    if arm.startswith("peers:"):
        from .peers import PEERS

        peer = PEERS[arm.split(":", 1)[1]]
        img = image[0] if image.ndim == 4 else image

        def fn(im, scr, sp, bx):
            t0 = time.perf_counter()
            lab = peer(img, scr, sp, bx)
            dt = time.perf_counter() - t0
            return lab, {"first_s": dt, "final_s": dt}
    else:
        fn = _Engine(staged=arm != "ours:flat")
    calls, dice = [], []
    pred = None
    for i in range(k + 1):
        if i:
            nxt = corrective_interaction(gt, pred, scribbles)
            if nxt is None:
                break
            scribbles, _ = nxt
        pred, call = fn(image, scribbles, spacing, boxes)
        call["load_avg"] = os.getloadavg()[0]
        calls.append(call)
        dice.append(dice_per_class(gt, pred, n).tolist())
    return {"case": case_name, "arm": arm, "shape": list(gt.shape), "voxels": int(gt.size),
            "spacing": list(spacing), "prompt": ("boxes+" if boxes else "") + "scribbles"
            if scribbles.any() else "boxes", "label_names": names, "calls": calls,
            "dice": dice, "mean_dice": [float(np.mean(d)) for d in dice],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _short(r) -> str:
    if "error" in r:
        return f"{r['case']:<26} {r['arm']:<16} ERROR {r['error']}"
    c = r["calls"]
    corr = [x["final_s"] for x in c[1:]]
    return (f"{r['case']:<26} {r['arm']:<16} dice {r['mean_dice'][0]:.3f} -> "
            f"{r['mean_dice'][-1]:.3f} first {c[0]['first_s']:.2f} s final "
            f"{c[0]['final_s']:.2f} s corr med "
            f"{np.median(corr) if corr else float('nan'):.2f} s "
            f"RSS {r['peak_rss_mb']:.0f} MB load {c[0]['load_avg']:.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_latency",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", required=True)
    p.add_argument("--arms", nargs="+", default=["ours", "ours:flat", "peers:geodesic"])
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    cases = [n for spec in a.cases
             for n in ([spec] if spec.startswith("sample:") else case_names(spec))]
    doc = {"meta": {**machine_info("auto"), "k": a.k,
                    "command": " ".join(["python -m benchmarks.bench_latency",
                                         *(sys.argv[1:] if argv is None else argv)])},
           "runs": []}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for arm in a.arms:
            r = run_isolated((case, arm, a.k), a.timeout, fn=run_one)
            doc["runs"].append(r)
            doc["meta"]["load_avg_end"] = os.getloadavg()
            out.write_text(json.dumps(doc, indent=1))
            print(_short(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
