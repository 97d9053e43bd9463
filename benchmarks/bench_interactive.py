"""Interactive cohort network benchmark (issue 19), through the Project contract only.

Two parts, each its own results file:

``model``  The LA cohort sorted by case id: cases 1-8 are accepted with their
           reference masks (no model yet: no running score) and the project trains
           (``Project.train(max_minutes=--budget)``); then on test cases 15-20:
           the model alone (``Project.predict``, no stroke), and every arm of the
           ablation on the protocol's initial scribbles followed by ``--k`` corrective
           strokes (``annotator.corrective_interaction`` on that arm's own result):

           ========  ============================================================
           graph     ``mode="graph"``: the graph method alone
           prior     ``mode="prior"``: the graph with the model's draft as prior
           network   ``mode="network"``: the network with the strokes as prompts
           fused     ``mode="fused"``: network + ``engine.fuse`` (the product's)
           adapt     ``mode="fused", adapt_steps=--adapt``: per-volume adaptation too
           auto      ``mode="auto"``: what the project chooses (and why)
           ========  ============================================================

           With ``--plain`` a second project trains the same network without prompt
           channels (``interactive=False``) and runs ``prior``, ``fused`` (plain draft
           + graph) and ``adapt`` (adaptation only).
``curve``  The learning curve: ``--n`` volumes of cases 1-14 in a seeded order; on each
           the initial scribbles, then corrections until Dice >= 0.90 or ``--k``
           interactions (``mode="auto"``); the final result is accepted
           (``Project.accept``: the running score) and the project fine-tunes
           (``Project.train(max_minutes=--budget)``, warm start; ``--steps`` makes it a
           step budget, the same whatever else runs) before the next.

Per call it records the time to the first and to the final result. Run from a clean
worktree of a commit (the file records it)::

    python -m benchmarks.bench_interactive model --budget 10 --plain \\
        --out benchmarks/results/interactive_model.json
    python -m benchmarks.bench_interactive curve --n 12 --budget 2.5 \\
        --out benchmarks/results/interactive_curve.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .annotator import corrective_interaction, dice_per_class, initial_scribbles, noc
from .bench_refine import machine_info
from .cases import DATA, _entries, _read

CLASS_NAMES = ["left atrium"]
ARMS = {"graph": {"mode": "graph"}, "prior": {"mode": "prior"},
        "network": {"mode": "network", "adapt_steps": 0}, "fused": {"mode": "fused", "adapt_steps": 0},
        "adapt": {"mode": "fused", "adapt_steps": None}, "auto": {"mode": "auto"}}
PLAIN_ARMS = ("prior", "fused", "adapt")


def _log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _dice(gt, labels):
    return float(dice_per_class(gt, labels, len(CLASS_NAMES)).mean())


def _timed_refine(project, vid, scr, state, **kw):
    """(result, first-result seconds, final seconds) of one Project.refine_steps call."""
    t0 = time.perf_counter()
    first = None
    gen = project.refine_steps(vid, scr, state=state, **kw)
    try:
        while True:
            p = next(gen)
            if first is None and getattr(p, "preview", None) is not None:
                first = time.perf_counter() - t0
    except StopIteration as stop:
        res = stop.value
    total = time.perf_counter() - t0
    return res, (first if first is not None else total), total


def run_sequence(project, vid, gt, seed, k, arm_kw, *, stop_at=None):
    """Initial scribbles then up to ``k`` corrections; returns the row."""
    scr = initial_scribbles(gt, seed=seed).astype(np.uint8)
    drawn = int((scr > 0).sum())
    res, first, total = _timed_refine(project, vid, scr, None, **arm_kw)
    dice, firsts, totals = [_dice(gt, res.labels)], [first], [total]
    while len(dice) <= k and not (stop_at is not None and dice[-1] >= stop_at):
        step = corrective_interaction(gt, res.labels, scr)
        if step is None:
            break
        scr, info = step
        scr = scr.astype(np.uint8)
        drawn += info["added"]
        res, first, total = _timed_refine(project, vid, scr, res.state, **arm_kw)
        dice.append(_dice(gt, res.labels))
        firsts.append(first)
        totals.append(total)
    keep = {key: res.info.get(key) for key in ("project_mode", "project_lead", "lead")}
    return res, {"dice": [round(d, 4) for d in dice], "first_s": [round(t, 3) for t in firsts],
                 "total_s": [round(t, 3) for t in totals], "drawn_voxels": drawn,
                 "interactions": len(dice) - 1, "noc85": noc(dice, 0.85), "noc90": noc(dice, 0.90),
                 "info": keep}


def _add_cases(project, entries):
    ids = {}
    for e in entries:
        ids[e["case"]] = project.add(DATA / e["image"], volume_id=e["case"][:12])
    return ids


def _train(project, args, label, **options):
    t0 = time.monotonic()
    report = project.train(max_minutes=args.budget, device=args.device, seed=args.seed,
                           num_threads=args.threads, **options)
    _log(f"  [{label}] {report.message} ({time.monotonic() - t0:.0f} s, {report.steps} steps)")
    return {"version": report.version, "published": report.published, "message": report.message,
            "steps": report.steps, "seconds": round(time.monotonic() - t0, 1),
            "val_score": report.score}


def _net_options(args) -> dict:
    opts = {"semi": args.semi}
    if args.steps:
        opts["max_steps"] = args.steps  # a step budget: the same training whatever the load
    if args.features:
        opts["features"] = args.features
    if args.spacing:
        opts["target_spacing"] = args.spacing
    if args.patch:
        opts["patch_size"] = args.patch
    return opts


def model_part(args, doc, save, work):
    from napari_labeleff.cohort import Project

    entries = sorted(_entries("la_mri"), key=lambda e: e["case"])
    train, tests = entries[:8], entries[14:14 + args.tests]
    doc["protocol"].update(train=[e["case"] for e in train], test=[e["case"] for e in tests])
    variants = [("interactive", {})] + ([("plain", {"interactive": False})] if args.plain else [])
    for name, options in variants:
        p = Project.create(work / name, CLASS_NAMES)
        ids = _add_cases(p, train + tests)
        for e in train:
            _, gt, _ = _read(e)
            p.set_role(ids[e["case"]], "train")  # all 8 train (no held-out mask, as a user has)
            p.accept(ids[e["case"]], gt.astype(np.uint8))
        opts = {**options, **_net_options(args)}
        _log(f"training {name} on 8 accepted masks, {args.budget} min")
        part = doc["variants"][name] = {"train": _train(p, args, name, **opts), "options": opts,
                                        "lead": p.network_lead(), "tests": {}}
        save()
        arms = ARMS if name == "interactive" else {a: ARMS[a] for a in PLAIN_ARMS}
        for e in tests:
            image, gt, spacing = _read(e)
            vid = ids[e["case"]]
            t0 = time.perf_counter()
            draft = p.predict(vid, record=False)
            row = {"model_alone": round(_dice(gt, draft.labels), 4),
                   "predict_s": round(time.perf_counter() - t0, 2), "arms": {}}
            for arm, kw in arms.items():
                kw = dict(kw)
                if "adapt_steps" in kw and kw["adapt_steps"] is None:
                    kw["adapt_steps"] = args.adapt
                if arm == "graph" and name != "interactive":
                    continue
                _, seq = run_sequence(p, vid, gt, args.seed, args.k, kw)
                row["arms"][arm] = seq
                _log(f"  {name} {e['case']} {arm}: {seq['dice'][0]:.3f} -> {seq['dice'][-1]:.3f} "
                     f"(first {seq['first_s'][0]:.2f} s, corrections {np.mean(seq['total_s'][1:] or [0]):.2f} s)")
            part["tests"][e["case"]] = row
            _log(f"  {name} {e['case']}: model alone {row['model_alone']:.3f}")
            save()
        p.close()


def curve_part(args, doc, save, work):
    from napari_labeleff.cohort import Project

    entries = sorted(_entries("la_mri"), key=lambda e: e["case"])[:14]
    order = np.random.default_rng(args.seed).permutation(len(entries))[: args.n]
    chosen = [entries[i] for i in order]
    doc["protocol"].update(order=[e["case"] for e in chosen])
    p = Project.create(work / "curve", CLASS_NAMES)
    ids = _add_cases(p, chosen)
    rows = doc["rows"] = []
    for n, e in enumerate(chosen):
        _, gt, _ = _read(e)
        vid = ids[e["case"]]
        draft = None
        if p.published is not None:
            draft = round(_dice(gt, p.predict(vid, record=False).labels), 4)
        res, seq = run_sequence(p, vid, gt, args.seed, args.k, {"mode": "auto"}, stop_at=0.90)
        p.set_role(vid, "train")
        p.accept(vid, res.labels.astype(np.uint8))
        item = p.curve()[-1]
        row = {"n": n + 1, "case": e["case"], "draft_dice": draft, **seq,
               "model_dice_before": item.model_dice_before, "curve_interactions": item.interactions,
               "curve_seconds": item.seconds}
        _log(f"curve {n + 1} {e['case']}: draft {draft}, {seq['interactions']} interactions, "
             f"Dice {seq['dice'][0]:.3f} -> {seq['dice'][-1]:.3f} ({seq['info']['project_mode']})")
        if n + 1 < len(chosen):
            row["train"] = _train(p, args, f"after {n + 1}", **_net_options(args))
        rows.append(row)
        save()
    p.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=("model", "curve"))
    ap.add_argument("--budget", type=float, default=10.0, help="training minutes (per fine-tune for curve)")
    ap.add_argument("--k", type=int, default=5, help="corrections per test case (curve: the most per volume)")
    ap.add_argument("--n", type=int, default=12, help="curve volumes")
    ap.add_argument("--tests", type=int, default=6)
    ap.add_argument("--adapt", type=int, default=30, help="adaptation steps of the adapt arm")
    ap.add_argument("--plain", action="store_true", help="also train and run the plain network")
    ap.add_argument("--features", type=int, nargs=6, default=None)
    ap.add_argument("--spacing", type=float, nargs=3, default=None)
    ap.add_argument("--patch", type=int, nargs=3, default=None)
    ap.add_argument("--steps", type=int, default=0,
                    help="steps per training (with --budget as a cap): load-independent")
    ap.add_argument("--semi", action="store_true", help="mean-teacher term on the unlabeled volumes too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="labeleff-interactive-"))
    work.mkdir(parents=True, exist_ok=True)
    doc = {"meta": machine_info(args.device),
           "command": " ".join(["python -m benchmarks.bench_interactive"] + (argv or sys.argv[1:])),
           "protocol": {"part": args.part, "seed": args.seed, "k": args.k, "budget_min": args.budget,
                        "threads": args.threads, "adapt_steps": args.adapt},
           "variants": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        doc["meta"]["load_avg_end"] = os.getloadavg()
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, out)

    _log(f"work folder {work}")
    (model_part if args.part == "model" else curve_part)(args, doc, save, work)
    save()


if __name__ == "__main__":
    main()
