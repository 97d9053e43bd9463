"""Anatomical rules benchmark (issue 21): refine with and without rules, rule learning,
rule QA.

Parts (``--part``):

``cine``   ACDC cine (``acdc:N``), both frames: the protocol's initial scribbles, then up
           to ``--corrections`` corrective strokes on each arm's own errors; arm
           ``none`` = the engine alone, arm ``rules`` = the same engine with
           ``Rules.template("cardiac", names)``. Per step: Dice per class, rule
           violations of the mask, and the share of the refine call spent enforcing the
           rules (in-process ``info`` timings, a ratio, not a latency benchmark).
``brats``  BRATS dev, the two patients (cropped to the tumour's box + ``CROP`` voxels) as
           3 nested classes from the label ids
           (1 = whole tumour outside the core = edema, 2 = tumour core outside the
           enhancing tumour, 3 = enhancing tumour), T1c + FLAIR; arms as for cine with
           ``Rules.template("brain_tumour", names)``; Dice of the regions (whole tumour
           = 1-3, core = 2-3, enhancing = 3).
``learn``  ``Rules.learn`` on the reference masks of the first 6 ACDC volumes.
``qa``     20 ACDC reference masks, 5 of them with an injected fault (cavity leaking
           through its ring, a second piece, an RV blob touching the LV cavity), checked
           with the cardiac template; precision and recall of the flagged masks. The
           references that break a rule as given are reported and left out of the clean
           pool.

Usage::

    python -m benchmarks.bench_rules --part cine --cases acdc:20 --out results/rules_cine.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_labeleff import engine
from napari_labeleff.rules import Rules

from .annotator import corrective_interaction, dice_per_class, initial_scribbles
from .bench_refine import machine_info
from .cases import Case, _entries, _read, load_cases

TUNE_PATIENTS = ("patient001", "patient002", "patient007")
#: BRATS volumes are cropped to the whole tumour's box grown by this many voxels (1 mm)
CROP = 20


def brats_cases() -> list[Case]:
    """The two BRATS dev patients with nested sub-region classes (see module doc)."""
    out = []
    entries = {e["case"]: e for e in _entries("brats_dev")}
    for pat in ("1", "2"):
        a, lab, spacing = _read(entries[f"brats_2013_pat000{pat}_1_t1c"])
        b, _, _ = _read(entries[f"brats_2013_pat000{pat}_1_flair"])
        gt = np.zeros(lab.shape, dtype=np.uint8)
        gt[lab == 2] = 1
        gt[np.isin(lab, (1, 3))] = 2
        gt[lab == 4] = 3
        box = tuple(slice(max(s.start - CROP, 0), min(s.stop + CROP, n))
                    for s, n in zip(ndi.find_objects((gt > 0).astype(np.uint8))[0], gt.shape))
        image = np.stack([a[box], b[box]]).astype(np.float32)
        out.append(Case(f"brats3:{pat}", image, gt[box], spacing,
                        {1: "whole tumour", 2: "tumour core", 3: "enhancing tumour"},
                        notes=["class 1 = edema (whole tumour outside the core), 2 = core "
                               "outside the enhancing tumour, 3 = enhancing tumour",
                               f"cropped to the whole tumour's box grown by {CROP} voxels"]))
    return out


def region_dice(gt, pred) -> dict:
    """Dice of the nested BRATS regions."""
    out = {}
    for name, ids in (("whole tumour", (1, 2, 3)), ("tumour core", (2, 3)),
                      ("enhancing tumour", (3,))):
        g, p = np.isin(gt, ids), np.isin(pred, ids)
        d = g.sum() + p.sum()
        out[name] = float(2 * (g & p).sum() / d) if d else 1.0
    return out


def run_case(case: Case, template: str, arm: str, corrections: int, seed: int = 0,
             regions: bool = False) -> dict:
    names = [case.label_names[c] for c in sorted(case.label_names)]
    rules = Rules.template(template, names)
    use = rules if arm == "rules" else None
    K = case.n_structures
    scr = initial_scribbles(case.gt, seed=seed)
    steps = []
    state = None
    for step in range(corrections + 1):
        res = engine.refine(case.image, scr, spacing=case.spacing, method="randomwalk",
                            device="cpu", state=state, rules=use)
        state = res.state
        d = dice_per_class(case.gt, res.labels, K)
        viol = rules.violations(res.labels, spacing=case.spacing)
        rec = {"step": step, "dice": [float(v) for v in d], "mean_dice": float(np.mean(d)),
               "violations": len(viol), "violated": sorted({rules.text(v.rule) for v in viol}),
               "total_s": res.info["timings"]["total_s"]}
        if regions:
            rec["region_dice"] = region_dice(case.gt, res.labels)
        if use is not None:
            r = res.info["rules"]
            rec.update(rules_s=r["seconds"], rules_share=r["seconds"] / res.info["timings"]["total_s"],
                       conflicts=r["conflicts"], unresolved=r["unresolved"],
                       changed=r["changed_voxels"])
        steps.append(rec)
        print(f"  {case.name} {arm} step {step}: dice {np.round(d, 3).tolist()} "
              f"viol {len(viol)}" + (f" share {rec['rules_share']:.2f}" if use else ""),
              flush=True)
        if step == corrections:
            break
        nxt = corrective_interaction(case.gt, res.labels, scr)
        if nxt is None:
            break
        scr = nxt[0]
    return {"case": case.name, "arm": arm, "label_names": case.label_names,
            "rules": rules.to_list(), "unmatched": rules.unmatched, "steps": steps}


def part_refine(cases, template, corrections, regions=False, arms=("none", "rules")):
    runs = []
    for case in cases:
        for arm in arms:
            runs.append(run_case(case, template, arm, corrections, regions=regions))
    return runs


def part_learn(n=6):
    cases = load_cases([f"acdc:{n}"])
    names = [cases[0].label_names[c] for c in sorted(cases[0].label_names)]
    props = Rules.learn([c.gt for c in cases], names, [c.spacing for c in cases],
                        min_support=0.5)
    template = Rules.template("cardiac", names)
    true = set(template.rules)
    out = [{"rule": list(p.rule.as_tuple(template.names)), "text": p.text,
            "support": list(p.support), "in_template": p.rule in true} for p in props]
    full = [p for p in props if p.fraction == 1.0]
    return {"cases": [c.name for c in cases], "proposals": out,
            "full_support": [p.text for p in full],
            "false_at_full_support": [p.text for p in full if p.rule not in true
                                      and not _implied(p.rule, template)],
            "template_rules_missed_at_full_support": [
                template.text(r) for r in template.rules if r not in {p.rule for p in full}]}


def _implied(rule, template) -> bool:
    """touches(A, B) is implied by inside(A, B) for a non-empty A (the ring touches its
    contents); counted as true, not false."""
    return rule.relation == "touches" and any(
        r.relation == "inside" and {r.a, r.b} == {rule.a, rule.b} for r in template.rules)


def inject(gt, kind, rng):
    """A copy of the reference mask with one rule-breaking fault."""
    m = gt.copy()
    zs = np.flatnonzero((gt == 2).any(axis=(1, 2)) & (gt == 3).any(axis=(1, 2)))
    z = int(zs[len(zs) // 2])
    if kind == "leak":  # open the ring: a wedge of myocardium becomes cavity, and beyond
        cy, cx = ndi.center_of_mass(gt[z] == 3)
        yy, xx = np.mgrid[: gt.shape[1], : gt.shape[2]]
        ang = np.arctan2(yy - cy, xx - cx)
        a0 = rng.uniform(-np.pi, np.pi)
        wedge = np.abs(np.angle(np.exp(1j * (ang - a0)))) < 0.35
        ring = ndi.binary_fill_holes(gt[z] >= 2)
        grow = ndi.binary_dilation(ring, iterations=4)
        m[z][wedge & grow & (gt[z] != 1)] = 3
    elif kind == "piece":  # a second piece of RV cavity, apart from the first
        rv = gt == 1
        zr = np.flatnonzero(rv.any(axis=(1, 2)))
        k = int(zr[len(zr) // 2])
        ry, rx = ndi.center_of_mass(rv[k])
        ly, lx = ndi.center_of_mass(gt[k] == 3)
        d = np.array([ry - ly, rx - lx]) / max(np.hypot(ry - ly, rx - lx), 1e-6)
        yy, xx = np.mgrid[: gt.shape[1], : gt.shape[2]]
        for step in (30, 40, 50, 20):  # beyond the RV, away from the LV
            cy, cx = ry + step * d[0], rx + step * d[1]
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 36) & (gt[k] == 0)
            trial = m.copy()
            trial[k][blob] = 1
            if blob.sum() > 20 and ndi.label(trial == 1, np.ones((3, 3, 3)))[1] > 1:
                m = trial
                break
    elif kind == "overlap":  # RV cavity painted across the septum into the LV cavity
        lv = gt[z] == 3
        rv = gt[z] == 1
        path = ndi.binary_dilation(rv, iterations=12) & (ndi.binary_dilation(lv, iterations=2))
        m[z][path & (gt[z] != 0)] = 1
    return m


def part_qa(seed=0):
    cases = load_cases(["acdc:20"])
    names = [cases[0].label_names[c] for c in sorted(cases[0].label_names)]
    rules = Rules.template("cardiac", names)
    as_given = {}
    for c in cases:
        v = rules.violations(c.gt, spacing=c.spacing)
        if v:
            as_given[c.name] = [x.message for x in v]
    clean = [c for c in cases if c.name not in as_given]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clean))
    faulty_src = [clean[i] for i in order[:5]]
    clean_set = [clean[i] for i in order[5:]] + [clean[i] for i in order[:5]]
    clean_set = clean_set[:15]
    kinds = ["leak", "piece", "overlap", "leak", "piece"]
    masks, truth = {}, {}
    for c in clean_set:
        masks[c.name] = c.gt
        truth[c.name] = False
    for c, kind in zip(faulty_src, kinds):
        key = f"{c.name}+{kind}"
        masks[key] = inject(c.gt, kind, rng)
        truth[key] = True
    from napari_labeleff.rules import qa

    items = qa(rules, masks, {k: (1.0, 1.0, 1.0) for k in masks})
    flagged = {i["id"] for i in items}
    tp = sum(1 for k in masks if truth[k] and k in flagged)
    fp = sum(1 for k in masks if not truth[k] and k in flagged)
    fn = sum(1 for k in masks if truth[k] and k not in flagged)
    return {"masks": len(masks), "faulty": sum(truth.values()),
            "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "tp": tp, "fp": fp, "fn": fn,
            "items": [{**i, "bbox": list(i["bbox"]), "rule": list(i["rule"])} for i in items],
            "references_breaking_rules_as_given": as_given}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("cine", "brats", "learn", "qa"), required=True)
    ap.add_argument("--cases", default="acdc:20")
    ap.add_argument("--corrections", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = {"part": args.part, "machine": machine_info("cpu"),
           "argv": sys.argv[1:] if argv is None else list(argv),
           "tune_patients": list(TUNE_PATIENTS)}
    if args.part == "cine":
        res["runs"] = part_refine(load_cases([args.cases]), "cardiac", args.corrections)
    elif args.part == "brats":
        res["runs"] = part_refine(brats_cases(), "brain_tumour", args.corrections, regions=True)
    elif args.part == "learn":
        res["learn"] = part_learn()
    else:
        res["qa"] = part_qa()
    res["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
