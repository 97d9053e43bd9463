"""Cohort benchmark: the hybrid-learning network on the left-atrium cohort.

Implements the cohort protocol of ``benchmarks/PROTOCOL.md`` (``BENCHMARK_PROTOCOL.md``):
the 20 LA cases of the shared data sorted by case id; cases 1-6 get the protocol's
initial scribbles (3 axial slices per class, seed ``--seed``; no masks), cases 7-14 stay
unlabeled, cases 15-20 are the test cases. Every arm trains with the product's own
``train_steps`` (in a spawned process, as the GUI runs it: ``train_in_background``)
under the same wall-time budget and seed; then on each test case:

(a) the model alone (``LoadedModel.predict``, argmax) - Dice and seconds per volume;
(b) ``engine.refine`` with the same initial scribbles and the model's probabilities as
    ``prior=`` (arms in ``--prior-arms``);
(c) ``engine.refine`` with the same scribbles and no prior (once; arm-independent).

Arms (ablation): ``labelled`` (the 6 weakly labelled volumes: scribbles + graph
pseudo-labels), ``semi`` (+ mean-teacher consistency on the 8 unlabeled volumes),
``semi+pretrain`` (+ self-supervised pretraining on all 14 training images, 25% of the
budget), ``self`` (semi-supervised by self-training instead: at half the budget the
model labels the 8 unlabeled volumes and their confident voxels join the labelled
pool). The graph pseudo-labels are computed once before the arms (shared cache; their
time is reported separately and added to each arm's total training time).

Example (about 3 x 8 min of training + ~15 min of evaluation on 2 busy cores)::

    python -m benchmarks.bench_cohort --budget 8 --threads 2 \\
        --out benchmarks/results/cohort_la.json

The results JSON is written after every arm (partial results survive an interruption).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .annotator import dice_per_class, initial_scribbles
from .bench_refine import machine_info
from .cases import DATA, _entries, _read

ARMS = {
    "labelled": {"semi": False, "pretrain": False},
    "semi": {"semi": True, "pretrain": False},
    "semi+pretrain": {"semi": True, "pretrain": True},
    "self": {"semi": False, "pretrain": False, "self_training": 0.5},
}
SPLIT = {"weak": (0, 6), "unlabeled": (6, 14), "test": (14, 20)}
#: Cohorts (a dataset of ../shared/data with 20 volumes) and their structures.
COHORTS = {"la_mri": ("left atrium",),
           "acdc": ("RV cavity", "LV myocardium", "LV cavity")}


def _log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def setup(work: Path, seed: int, dataset: str = "la_mri"):
    """Write the weak cases' labels snapshots; return (train cases, test entries)."""
    from napari_labeleff.cohort.training import TrainCase, write_labels_snapshot

    entries = sorted(_entries(dataset), key=lambda e: e["case"])
    if len(entries) < 20:
        raise SystemExit(f"need 20 {dataset} cases in {DATA}, found {len(entries)}")
    cases = []
    a, b = SPLIT["weak"]
    for e in entries[a:b]:
        _, gt, _ = _read(e)
        scr = initial_scribbles(gt, seed=seed)
        npz = write_labels_snapshot(work / "labels" / f"{e['case']}.npz", scr.astype(np.uint8))
        cases.append(TrainCase(e["case"], str(DATA / e["image"]), npz, "labelled"))
    a, b = SPLIT["unlabeled"]
    for e in entries[a:b]:
        cases.append(TrainCase(e["case"], str(DATA / e["image"]), None, "unlabeled"))
    a, b = SPLIT["test"]
    return cases, entries[a:b]


def _spec(cases, work, name, options, class_names=COHORTS["la_mri"]):
    from napari_labeleff.cohort.training import TrainSpec

    return TrainSpec(cases=tuple(cases), class_names=tuple(class_names), out_dir=str(work / "models" / name),
                     run_dir=str(work / "runs" / name), options=options)


def _drive(gen, label):
    last = 0.0
    try:
        while True:
            p = next(gen)
            if time.monotonic() - last > 30 or p.stage not in ("train", "pretrain"):
                _log(f"  [{label}] {p.stage}: {p.message}")
                last = time.monotonic()
    except StopIteration as stop:
        return stop.value


def train_arm(cases, work, name, flags, args):
    from napari_labeleff.cohort.training import train_in_background

    seed = args.seed if args.train_seed is None else args.train_seed
    opts = {"max_minutes": args.budget, "device": args.device, "seed": seed, "num_threads": args.threads,
            "pseudo_cache_dir": str(work / "pseudo"),
            "pseudo_confidence": args.pseudo_confidence, "pseudo_band": args.pseudo_band, **flags}
    if args.max_steps:
        opts["max_steps"] = args.max_steps
    t0, c0 = time.monotonic(), os.times()
    folder = f"{name}_{time.strftime('%H%M%S')}"  # a new checkpoint folder per invocation
    report = _drive(train_in_background(_spec(cases, work, folder, opts, COHORTS[args.dataset])), name)
    wall = time.monotonic() - t0
    c1 = os.times()
    return report, {"wall_s": round(wall, 1), "options": opts,
                    "child_cpu_s": round((c1.children_user + c1.children_system)
                                         - (c0.children_user + c0.children_system), 1)}


def _test_case(e):
    image, gt, spacing = _read(e)
    return image, gt, spacing


def evaluate(ckpt, tests, args, *, prior: bool):
    import torch

    from napari_labeleff.cohort.prediction import load_model
    from napari_labeleff.engine import refine

    torch.set_num_threads(args.threads)
    model = load_model(ckpt, device=args.device)
    K = len(COHORTS[args.dataset])
    rows = []
    for e in tests:
        image, gt, spacing = _test_case(e)
        t0 = time.perf_counter()
        probs = model.predict(image, spacing)
        t_pred = time.perf_counter() - t0
        pred = probs.argmax(0).astype(np.uint8)
        row = {"case": e["case"], "dice_model": float(dice_per_class(gt, pred, K).mean()),
               "dice_model_per_class": dice_per_class(gt, pred, K).round(4).tolist(),
               "predict_s": round(t_pred, 2)}
        if prior:
            scr = initial_scribbles(gt, seed=args.seed)
            t0 = time.perf_counter()
            res = refine(image, scr, spacing=spacing, prior=probs)
            row["dice_prior"] = float(dice_per_class(gt, res.labels, K).mean())
            row["refine_prior_s"] = round(time.perf_counter() - t0, 2)
            row["prior_info"] = {k: v for k, v in res.info.items() if k in ("prior", "method")}
        rows.append(row)
        _log(f"  {e['case']}: model {row['dice_model']:.3f}"
             + (f", refine+prior {row['dice_prior']:.3f}" if prior else "") + f" (predict {t_pred:.1f} s)")
    return rows


def no_prior(tests, args):
    import torch

    from napari_labeleff.engine import refine

    torch.set_num_threads(args.threads)
    K = len(COHORTS[args.dataset])
    rows = []
    for e in tests:
        image, gt, spacing = _test_case(e)
        scr = initial_scribbles(gt, seed=args.seed)
        t0 = time.perf_counter()
        res = refine(image, scr, spacing=spacing)
        rows.append({"case": e["case"], "dice_no_prior": float(dice_per_class(gt, res.labels, K).mean()),
                     "refine_s": round(time.perf_counter() - t0, 2), "method": res.method})
        _log(f"  {e['case']}: refine, no prior {rows[-1]['dice_no_prior']:.3f}")
    return rows


def learning_curve(work: Path, args, doc, save):
    """Protocol "learning curve" on the 14 training cases of the split, 2x2x2
    block-downsampled (1.25 mm; refine calls would otherwise dominate the CPU budget):
    volumes in a seeded order; on each, the initial scribbles, refine (with the current
    model as prior once there is one), then corrective interactions until Dice 0.90 or
    ``--k``; the final mask is accepted (the refined mask, not the ground truth) and the
    model is trained further (warm start, ``--curve-budget`` minutes, all accepted
    masks) before the next volume."""
    from napari_labeleff.cohort.prediction import evaluate as evaluate_ckpt
    from napari_labeleff.cohort.prediction import load_model
    from napari_labeleff.cohort.services import prior_gate
    from napari_labeleff.cohort.training import TrainCase, TrainSpec, write_labels_snapshot
    from napari_labeleff.cohort.training import train_steps
    from napari_labeleff.engine import refine
    from napari_labeleff.io import Geometry, write_volume

    from .annotator import corrective_interaction
    from .cases import downsample2

    entries = sorted(_entries("la_mri"), key=lambda e: e["case"])[:14]
    order = np.random.default_rng(args.seed).permutation(len(entries))[: args.curve]
    accepted, ckpt, rows = [], None, []
    doc["curve"] = {"order": [entries[i]["case"] for i in order], "k": args.k,
                    "budget_min_per_volume": args.curve_budget, "resolution": "2x2x2 block-downsampled (1.25 mm)",
                    "gate": args.curve_gate, "gate_independent": False, "rows": rows}
    for n, i in enumerate(order):
        e = entries[i]
        image, gt, spacing = _read(e)
        image, gt = downsample2(image, gt, 2)
        spacing = tuple(2 * s for s in spacing)
        img_path = work / "curve" / f"{e['case']}.nii.gz"
        img_path.parent.mkdir(parents=True, exist_ok=True)
        write_volume(img_path, image, Geometry.from_spacing(spacing))
        scr = initial_scribbles(gt, seed=args.seed)
        drawn = int((scr > 0).sum())
        model = load_model(ckpt, device=args.device) if ckpt else None
        t0 = time.perf_counter()
        prior = model.predict(image, spacing) if model else None
        dice_model = float(dice_per_class(gt, prior.argmax(0), 1).mean()) if prior is not None else None
        use_prior = gate = None
        if prior is not None and args.curve_gate:
            # the project's rule (Project.refine): the model's Dice on the validation
            # volumes with full masks decides whether it serves as the prior
            use_prior, gate = prior_gate(rows[-1]["mask_score"], independent=False)
            prior = prior if use_prior else None
        res = refine(image, scr, spacing=spacing, prior=prior)
        curve = [float(dice_per_class(gt, res.labels, 1).mean())]
        interactions = 0
        while curve[-1] < 0.90 and interactions < args.k:
            step = corrective_interaction(gt, res.labels, scr)
            if step is None:
                break
            scr, info = step
            drawn += info["added"]
            interactions += 1
            res = refine(image, scr, spacing=spacing, prior=prior, state=res.state)
            curve.append(float(dice_per_class(gt, res.labels, 1).mean()))
        seconds = time.perf_counter() - t0
        npz = write_labels_snapshot(work / "curve" / f"{e['case']}.npz", scr.astype(np.uint8),
                                    mask=res.labels.astype(np.uint8))
        accepted.append(TrainCase(e["case"], str(img_path), npz, "labelled"))
        row = {"n": n + 1, "case": e["case"], "model_dice": dice_model, "interactions": interactions,
               "drawn_voxels": drawn, "dice_curve": curve, "final_dice": curve[-1],
               "prior_used": use_prior, "prior_gate": gate,
               "annotate_s": round(seconds, 1)}
        _log(f"curve {n + 1}: {e['case']} model {dice_model if dice_model is None else round(dice_model, 3)}, "
             f"{interactions} interactions, {drawn} voxels, Dice {curve[-1]:.3f}")
        spec = TrainSpec(cases=tuple(accepted), class_names=("left atrium",),
                         out_dir=str(work / "curve_models" / f"v{n + 1}"), run_dir=str(work / "curve_runs" / f"r{n + 1}"),
                         init_checkpoint=ckpt, options={"max_minutes": args.curve_budget, "device": args.device,
                                                        "seed": args.seed, "semi": False,
                                                        "num_threads": args.threads})
        t1 = time.monotonic()
        report = _drive(train_steps(spec), f"curve v{n + 1}")
        row["train_s"], row["train_steps"] = round(time.monotonic() - t1, 1), report.steps
        ckpt = report.out_dir
        # validation as the project does it below VALIDATION_MIN volumes: the accepted
        # (refined) masks, which the model trained on (not independent: the gate says no)
        row["mask_score"] = evaluate_ckpt(ckpt, accepted, device=args.device, with_mask_score=True)[1]
        rows.append(row)
        save()


def _mean(rows, key):
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="la_mri", choices=list(COHORTS),
                    help="cohort: la_mri (left atrium) or acdc (cardiac cine, 3 structures)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--prior-arms", nargs="*", default=list(ARMS), help="arms evaluated with (b)")
    ap.add_argument("--budget", type=float, default=8.0, help="training minutes per arm")
    ap.add_argument("--max-steps", type=int, default=0,
                    help="stop each arm after this many steps (a compute-matched ablation; --budget caps it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-seed", type=int, default=None,
                    help="seed of the training only (default --seed; the weak labels keep --seed)")
    ap.add_argument("--pseudo-confidence", type=float, default=0.0,
                    help="leave out pseudo-label voxels below this graph probability")
    ap.add_argument("--pseudo-band", type=int, default=None,
                    help="voxels left out on each side of a pseudo-label boundary (default: the learner's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tests", type=int, default=6, help="test cases used (of 6)")
    ap.add_argument("--skip-no-prior", action="store_true")
    ap.add_argument("--no-prior-from", default=None, help="reuse (c) from an earlier results JSON")
    ap.add_argument("--eval-checkpoints", nargs="*", default=[],
                    help="name=checkpoint_dir: only evaluate these trained checkpoints (a/b), no training")
    ap.add_argument("--work", default=None, help="work folder (default: a temp folder)")
    ap.add_argument("--out", default="benchmarks/results/cohort_la.json")
    ap.add_argument("--curve", type=int, default=0,
                    help="run only the learning curve over this many volumes")
    ap.add_argument("--curve-budget", type=float, default=1.5, help="training minutes per curve volume")
    ap.add_argument("--no-curve-gate", dest="curve_gate", action="store_false",
                    help="use every model as the prior (no check on the accepted masks)")
    ap.add_argument("--k", type=int, default=10, help="corrective interactions per curve volume")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="labeleff-cohort-"))
    work.mkdir(parents=True, exist_ok=True)
    doc = {"meta": machine_info(args.device), "command": " ".join(["python -m benchmarks.bench_cohort"]
                                                                   + (argv or sys.argv[1:])),
           "protocol": {"cohort": f"{args.dataset} sorted by case id", "dataset": args.dataset,
                        "class_names": list(COHORTS[args.dataset]), "weak": "cases 1-6, initial scribbles (3 axial "
                        "slices per class), no masks", "unlabeled": "cases 7-14", "test": "cases 15-20",
                        "seed": args.seed, "budget_min_per_arm": args.budget, "threads": args.threads,
                        "max_steps": args.max_steps or None},
           "arms": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        doc["meta"]["load_avg_end"] = os.getloadavg()
        doc["meta"]["peak_rss_mb_main"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, out)

    _log(f"work folder {work}")
    if args.eval_checkpoints:
        # re-evaluate trained checkpoints (e.g. after an engine change to refine's prior)
        _, tests = setup(work, args.seed, args.dataset)
        tests = tests[: args.tests]
        doc["protocol"]["test_cases"] = [e["case"] for e in tests]
        doc["eval_only"] = True
        if args.no_prior_from:
            prev = json.loads(Path(args.no_prior_from).read_text())
            doc["no_prior"], doc["mean_no_prior"] = prev["no_prior"], prev["mean_no_prior"]
            doc["no_prior_from"] = {"file": args.no_prior_from, "commit": prev["meta"].get("git_commit")}
        else:
            doc["no_prior"] = no_prior(tests, args)
            doc["mean_no_prior"] = _mean(doc["no_prior"], "dice_no_prior")
        for item in args.eval_checkpoints:
            name, _, path = item.partition("=")
            _log(f"evaluating {name}: {path}")
            rows = evaluate(path, tests, args, prior=True)
            doc["arms"][name] = {"checkpoint": path, "test": rows, "mean_model": _mean(rows, "dice_model"),
                                 "mean_prior": _mean(rows, "dice_prior"),
                                 "max_predict_s": max(r["predict_s"] for r in rows)}
            save()
        _log(f"wrote {out}")
        return
    if args.curve:
        if args.dataset != "la_mri":
            raise SystemExit("the learning curve runs on la_mri only")
        learning_curve(work, args, doc, save)
        _log(f"wrote {out}")
        return
    cases, tests = setup(work, args.seed, args.dataset)
    tests = tests[: args.tests]
    doc["protocol"]["test_cases"] = [e["case"] for e in tests]
    doc["protocol"]["train_cases"] = {c.volume_id: c.role for c in cases}

    # graph pseudo-labels once (shared by every arm through the cache)
    _log("graph pseudo-labels of the weak cases (once)")
    from napari_labeleff.cohort.training import train_steps

    t0 = time.monotonic()
    prep = _drive(train_steps(_spec(cases, work, f"_prep_{time.strftime('%H%M%S')}", {
        "max_steps": 1, "device": args.device, "semi": False, "num_threads": args.threads,
        "pseudo_cache_dir": str(work / "pseudo"), "pseudo_confidence": args.pseudo_confidence,
        "pseudo_band": args.pseudo_band},
        COHORTS[args.dataset])), "prep")
    pseudo_wall = time.monotonic() - t0
    doc["pseudo_labels"] = {"wall_s": round(pseudo_wall, 1), "per_case": prep.info["pseudo_labels"]}
    save()

    if args.no_prior_from:
        prev = json.loads(Path(args.no_prior_from).read_text())
        doc["no_prior"], doc["mean_no_prior"] = prev["no_prior"], prev["mean_no_prior"]
        doc["no_prior_from"] = {"file": args.no_prior_from, "commit": prev["meta"].get("git_commit"),
                                "note": "refine without a prior does not depend on the arms; reused"}
        save()
    elif not args.skip_no_prior:
        _log("refine without prior on the test cases")
        doc["no_prior"] = no_prior(tests, args)
        doc["mean_no_prior"] = _mean(doc["no_prior"], "dice_no_prior")
        save()

    for name in args.arms:
        _log(f"arm {name}: training {args.budget} min")
        report, run = train_arm(cases, work, name, ARMS[name], args)
        arm = {"train": {"steps": report.steps, "seconds": report.seconds, "epochs": report.epochs,
                         "info": report.info, **run,
                         "seconds_incl_pseudo": round(report.seconds + pseudo_wall, 1)},
               "log_tail": report.log[-5:],
               "log_self_training": [e for e in report.log if e.get("stage") == "self_training"]}
        _log(f"arm {name}: {report.steps} steps in {report.seconds} s; evaluating")
        arm["test"] = evaluate(report.out_dir, tests, args, prior=name in (args.prior_arms or []))
        arm["mean_model"] = _mean(arm["test"], "dice_model")
        arm["mean_prior"] = _mean(arm["test"], "dice_prior")
        arm["max_predict_s"] = max(r["predict_s"] for r in arm["test"])
        doc["arms"][name] = arm
        save()
        _log(f"arm {name}: model {arm['mean_model']:.3f}"
             + (f", refine+prior {arm['mean_prior']:.3f}" if arm["mean_prior"] is not None else ""))
    _log(f"wrote {out}")


if __name__ == "__main__":
    main()
