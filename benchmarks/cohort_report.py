"""Docs section for the cohort benchmark, generated from its results JSON.

Writes the text between ``<!-- cohort:start -->`` and ``<!-- cohort:end -->`` in
``docs/benchmarks.md`` (appended when the markers are absent)::

    python -m benchmarks.cohort_report benchmarks/results/cohort_la.json \\
        --curve benchmarks/results/cohort_la_curve.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_labeleff.cohort.services import PRIOR_MIN_DICE

START, END = "<!-- cohort:start -->", "<!-- cohort:end -->"
TARGETS = {"model": 0.82, "prior": 0.90, "prior_gain": 0.05, "semi_gain": 0.02, "train_min": 15.0,
           "ram_gb": 4.0, "predict_s": 10.0}


def _f(x, nd=3):
    return "n/a" if x is None else f"{x:.{nd}f}"


def _met(ok):
    return "met" if ok else "**not met**"


def render(doc: dict, source: str, curves=(), also=None) -> str:
    meta, proto = doc["meta"], doc["protocol"]
    arms = doc.get("arms", {})
    lines = ["## Cohort learning (hybrid network, left-atrium cohort)", ""]
    commit = meta.get("git_commit", "?")[:8] + (" (+local changes)" if meta.get("git_dirty") else "")
    lines += [
        f"Measured {meta.get('date')} on {meta.get('cpu')}, {meta.get('cores')} CPU cores, "
        f"{proto['threads']} torch threads, no GPU (GPU figures: unmeasured); load average "
        f"{', '.join(f'{x:.1f}' for x in meta.get('load_avg_start', []))} at start, "
        f"{', '.join(f'{x:.1f}' for x in meta.get('load_avg_end', []))} at the end (the machine was shared "
        f"with other work); commit {commit}; command `{doc.get('command')}`; raw results in `{source}`.",
        "",
        f"Protocol (`BENCHMARK_PROTOCOL.md`, cohort): {proto['cohort']}; {proto['weak']}; unlabeled "
        f"{proto['unlabeled']}; test {proto['test']} ({len(proto.get('test_cases', []))} used); seed "
        f"{proto['seed']}; training budget {proto['budget_min_per_arm']} min per arm (same seed and budget for "
        "every arm). The graph method's pseudo-labels of the 6 weak volumes are computed once "
        f"({doc.get('pseudo_labels', {}).get('wall_s', 'n/a')} s) and shared by the arms; 'total train min' adds "
        "that time. (a) = the model alone, (b) = `engine.refine` with the initial scribbles and the model's "
        "probabilities as `prior=`, (c) = the same refine without a prior"
        + (f" (reused from `{doc['no_prior_from']['file']}`, commit {str(doc['no_prior_from']['commit'])[:8]}: it "
           "does not depend on the arms)" if doc.get("no_prior_from") else "") + ".",
        "",
        "| arm | steps | train min (budget) | total train min | CPU min (child) | peak RSS GB | "
        "(a) model Dice | (b) refine + prior | predict s/volume (max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in arms.items():
        t = a["train"]
        lines.append(
            f"| {name} | {t['steps']} | {t['seconds'] / 60:.1f} ({proto['budget_min_per_arm']}) | "
            f"{t['seconds_incl_pseudo'] / 60:.1f} | {t['child_cpu_s'] / 60:.1f} | "
            f"{t['info'].get('peak_rss_mb', 0) / 1024:.2f} | {_f(a['mean_model'])} | {_f(a.get('mean_prior'))} | "
            f"{a['max_predict_s']:.1f} |")
    lines.append(f"| (c) refine, no prior | | | | | | | {_f(doc.get('mean_no_prior'))} | |")
    if arms:
        lines += ["", "Reading the numbers:", ""]
        for name, a in arms.items():
            t = a["train"]
            cores = t["child_cpu_s"] / max(t["wall_s"], 1e-9)
            med = sorted(r["predict_s"] for r in a["test"])[len(a["test"]) // 2]
            lines.append(f"- `{name}`: the training process got {t['child_cpu_s'] / 60:.1f} CPU-min in "
                         f"{t['wall_s'] / 60:.1f} wall-min ({cores:.2f} cores on average of the 2), i.e. "
                         f"{t['steps']} optimiser steps of {t['info'].get('batch_size')} patches "
                         f"{'x'.join(str(p) for p in t['info'].get('patch_size', []))} at "
                         f"{t['info'].get('target_spacing', ['?'])[0]} mm"
                         + (f" (+{t['info'].get('unlabeled_batch')} unlabeled patch(es) and "
                            f"{t['info'].get('mc_passes')} teacher passes per step)" if t['info'].get('semi') else "")
                         + (f", after {t['info'].get('pretrain_steps')} pretraining steps"
                            if t['info'].get('pretrain') else "")
                         + f"; predict median {med:.1f} s per volume.")
        steps = {n: x["train"]["steps"] for n, x in arms.items()}
        if "labelled" in steps and len(steps) > 1:
            ratio = ", ".join(f"`{n}` {steps['labelled'] / max(v, 1):.1f}x fewer"
                              for n, v in steps.items() if n != "labelled")
            lines.append("- Under a wall-time budget the semi-supervised and pretraining arms buy fewer "
                         f"supervised steps than `labelled` ({ratio}), so the ablation compares networks "
                         "trained for different numbers of steps; it does not show what the terms give at "
                         "convergence.")
        priors = [x["mean_prior"] for x in arms.values() if x.get("mean_prior") is not None]
        if doc.get("mean_no_prior") is not None and priors and max(priors) < doc["mean_no_prior"]:
            lines.append("- (b) < (c): with a weak model the prior pulls the graph method below its result "
                         "without a prior; the prior only helps once the model is better than the scribbles' "
                         "own intensity model.")
    lines += ["", "### Per test case", ""]
    cases = [r["case"] for r in next(iter(arms.values()))["test"]] if arms else []
    header = "| case | " + " | ".join(f"{n} (a)" for n in arms) + " | " + " | ".join(
        f"{n} (b)" for n, a in arms.items() if a.get("mean_prior") is not None) + " | (c) no prior |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    nop = {r["case"]: r for r in doc.get("no_prior", [])}
    for i, c in enumerate(cases):
        row = [c] + [_f(a["test"][i]["dice_model"]) for a in arms.values()]
        row += [_f(a["test"][i].get("dice_prior")) for a in arms.values() if a.get("mean_prior") is not None]
        row += [_f(nop.get(c, {}).get("dice_no_prior"))]
        lines.append("| " + " | ".join(row) + " |")
    # targets
    lines += ["", "### Targets (issue 7)", ""]
    best = max(arms.items(), key=lambda kv: kv[1]["mean_model"]) if arms else None
    if best:
        name, a = best
        lines.append(f"- Model alone >= {TARGETS['model']}: best arm `{name}` {_f(a['mean_model'])}: "
                     f"{_met(a['mean_model'] >= TARGETS['model'])}.")
        with_prior = {n: x for n, x in arms.items() if x.get("mean_prior") is not None}
        if with_prior:
            pn, pa = max(with_prior.items(), key=lambda kv: kv[1]["mean_prior"])
            lines.append(f"- Refine with prior >= {TARGETS['prior']}: best `{pn}` {_f(pa['mean_prior'])}: "
                         f"{_met(pa['mean_prior'] >= TARGETS['prior'])}.")
            if doc.get("mean_no_prior") is not None:
                gain = pa["mean_prior"] - doc["mean_no_prior"]
                lines.append(f"- Prior gain >= +{TARGETS['prior_gain']}: {gain:+.3f} over no prior "
                             f"({_f(doc['mean_no_prior'])}): {_met(gain >= TARGETS['prior_gain'])}.")
        if "labelled" in arms and "semi" in arms:
            g = arms["semi"]["mean_model"] - arms["labelled"]["mean_model"]
            lines.append(f"- Semi-supervised >= +{TARGETS['semi_gain']} over labelled-only: {g:+.3f}: "
                         f"{_met(g >= TARGETS['semi_gain'])}.")
        if "semi+pretrain" in arms and "semi" in arms:
            g = arms["semi+pretrain"]["mean_model"] - arms["semi"]["mean_model"]
            lines.append(f"- Self-supervised pretraining (same total budget, 25% spent pretraining): {g:+.3f} "
                         f"over semi alone; it is {'on' if False else 'off'} by default "
                         f"({'it helped here' if g > 0 else 'it did not help here'}).")
        t = a["train"]
        lines.append(f"- Training <= {TARGETS['train_min']:.0f} min on 2 CPU cores to the cohort-prior quality: "
                     f"{t['seconds_incl_pseudo'] / 60:.1f} min including pseudo-labels, but the quality target "
                     f"is {'met' if a['mean_model'] >= TARGETS['model'] else 'not reached'}: "
                     f"{_met(a['mean_model'] >= TARGETS['model'] and t['seconds_incl_pseudo'] <= 900)}.")
        rss = max(x["train"]["info"].get("peak_rss_mb", 0) for x in arms.values()) / 1024
        lines.append(f"- Training RAM <= {TARGETS['ram_gb']:.0f} GB: peak RSS of the training process "
                     f"{rss:.2f} GB: {_met(rss <= TARGETS['ram_gb'])}.")
        pmax = max(x["max_predict_s"] for x in arms.values())
        lines.append(f"- Predict one LA volume <= {TARGETS['predict_s']:.0f} s on CPU: max {pmax:.1f} s: "
                     f"{_met(pmax <= TARGETS['predict_s'])}.")
    lines.append("- GPU targets (training <= 2 min, prediction <= 1 s): unmeasured (no GPU in this session).")
    if not curves:
        lines.append("- Learning curve: not run in this session (CPU budget).")
    others = list(also or [])
    if not any(o.get("protocol", {}).get("dataset") == "acdc" for o, _ in others):
        lines.append("- The cardiac cine (ACDC, 3 classes) cohort: not run (CPU budget).")
    for other, other_source in others:
        lines += render_compact(other, other_source, base=doc)
    lines += _seed_summary(doc, [o for o, _ in others])
    for curve, curve_source in curves:
        lines += render_curve(curve, curve_source)
    return "\n".join(lines) + "\n"


def render_compact(doc: dict, source: str, base: dict | None = None) -> list:
    """A short table of another run of the same benchmark (e.g. other threads/budget)."""
    meta, proto = doc["meta"], doc["protocol"]
    if doc.get("eval_only"):
        out = ["", "### Re-evaluation of the same checkpoints with a later engine", "",
               f"Measured {meta.get('date')}, commit {meta.get('git_commit', '?')[:8]}"
               f"{' (+local changes)' if meta.get('git_dirty') else ''} (the engine's handling of `prior=` changed "
               f"after the run above); the checkpoints trained above, evaluated again; raw results in `{source}`.", "",
               "| arm | (a) model Dice | (b) refine + prior | predict s (max) |", "|---|---|---|---|"]
        for name, a in doc.get("arms", {}).items():
            out.append(f"| {name} | {_f(a['mean_model'])} | {_f(a.get('mean_prior'))} | {a['max_predict_s']:.1f} |")
        out.append(f"| (c) refine, no prior | | {_f(doc.get('mean_no_prior'))} | |")
        return out
    opts = [a["train"].get("options", {}) for a in doc.get("arms", {}).values()]
    conf = max((o.get("pseudo_confidence") or 0.0 for o in opts), default=0.0)
    self_at = max((o.get("self_training") or 0.0 for o in opts), default=0.0)
    band = next((o.get("pseudo_band") for o in opts), None)
    agreement = any(o.get("pseudo_agreement") for o in opts)
    title = (f"Cardiac cine cohort (ACDC, {', '.join(proto['class_names'])})"
             if proto.get("dataset") == "acdc" else
             f"Self-training: the model labels the unlabeled volumes after {self_at:.0%} of the budget"
             + (" and checks the graph labels" if agreement else "") if self_at else
             f"Pseudo-label voxels left out below graph probability {conf:g}" if conf else
             f"Graph pseudo-labels with a {band}-voxel boundary band" if band is not None else
             "Other run")
    seeds = {o.get("seed") for o in opts}
    if base and seeds and seeds != {a["train"].get("options", {}).get("seed")
                                    for a in base.get("arms", {}).values()}:
        title += f", training seed {', '.join(str(x) for x in sorted(seeds))}"
    out = ["", f"### {title}: {proto['threads']} torch thread(s), {proto['budget_min_per_arm']} min per arm", "",
           f"Measured {meta.get('date')}, commit {meta.get('git_commit', '?')[:8]}"
           f"{' (+local changes)' if meta.get('git_dirty') else ''}, load average "
           f"{', '.join(f'{x:.1f}' for x in meta.get('load_avg_start', []))} at start, "
           f"{', '.join(f'{x:.1f}' for x in meta.get('load_avg_end', []))} at the end; raw results in `{source}`.", "",
           "| arm | steps | CPU min (child) / wall min | (a) model Dice | (b) refine + prior | predict s (max) |",
           "|---|---|---|---|---|---|"]
    for name, a in doc.get("arms", {}).items():
        t = a["train"]
        out.append(f"| {name} | {t['steps']} | {t['child_cpu_s'] / 60:.1f} / {t['wall_s'] / 60:.1f} | "
                   f"{_f(a['mean_model'])} | {_f(a.get('mean_prior'))} | {a['max_predict_s']:.1f} |")
    out.append(f"| (c) refine, no prior | | | | {_f(doc.get('mean_no_prior'))} | |")
    if conf or self_at or band is not None:
        from napari_labeleff.cohort.training import PSEUDO_BAND, PSEUDO_WEIGHT, SELF_CONFIDENCE

        what = (f"only the graph pseudo-labels of the 6 weak volumes differ: {band} voxel(s) on each side of "
                f"their boundaries are left out of the loss instead of {PSEUDO_BAND}."
                if band is not None and not (conf or self_at) else
                f"only the graph pseudo-labels of the 6 weak volumes differ (voxels whose graph probability of "
                f"their label is below {conf:g} are left out of the loss, besides the band around boundaries)."
                if conf else
                f"the arm trains on the 6 weak volumes alone until {self_at:.0%} of the budget; then the model "
                f"(the EMA teacher) labels the 8 unlabeled volumes, its voxels of probability >= "
                f"{SELF_CONFIDENCE:g} outside a {PSEUDO_BAND}-voxel band around its boundaries join the labelled "
                f"pool at weight {PSEUDO_WEIGHT:g}, and training goes on with all 14 (no mean teacher).")
        if agreement:
            what += (" At that moment the graph pseudo-labels of the 6 weak volumes were also kept only where the "
                     "model agreed with them (option `pseudo_agreement` of that commit). The model had learnt "
                     "those labels by then, so the check left almost nothing out (the runs' training logs) "
                     "and the option was removed: this run is in effect another run of `self`.")
        out += ["", "Same protocol, weak labels and budget as the first table; " + what
                + (f" (c) is reused from `{doc['no_prior_from']['file']}` (commit "
                   f"{str(doc['no_prior_from'].get('commit'))[:8]}), not re-run." if doc.get("no_prior_from")
                   else "")
                + _steps_note(doc, base) + " Model alone per test case:", "",
                "| arm | " + " | ".join(r["case"][:8] for a in list(doc["arms"].values())[:1]
                                       for r in a["test"]) + " |",
                "|---|" + "---|" * len(next(iter(doc["arms"].values()))["test"])]
        for name, a in doc["arms"].items():
            out.append(f"| {name} | " + " | ".join(_f(r["dice_model"]) for r in a["test"]) + " |")
    if proto.get("dataset") == "acdc":
        out += ["", "Same protocol as the left atrium (6 weak, 8 unlabeled, 6 test volumes, sorted by case id: "
                "the two frames of a patient fall in the same split); the files carry no spacing, so 1 mm is "
                "assumed on every axis. Mean Dice over the 3 structures; per structure, model alone:", "",
                "| arm | " + " | ".join(proto["class_names"]) + " |", "|---|" + "---|" * len(proto["class_names"])]
        for name, a in doc.get("arms", {}).items():
            per = [r["dice_model_per_class"] for r in a.get("test", []) if "dice_model_per_class" in r]
            if per:
                means = [sum(p[i] for p in per) / len(per) for i in range(len(proto["class_names"]))]
                out.append(f"| {name} | " + " | ".join(_f(m) for m in means) + " |")
    return out


def _variant(name: str, opts: dict) -> str:
    """An arm with its pseudo-label options, e.g. ``labelled, confidence 0.7``."""
    c, band = opts.get("pseudo_confidence") or 0.0, opts.get("pseudo_band")
    return name + (f", confidence {c:g}" if c else "") + (f", band {band}" if band is not None else "")


def _seed_summary(doc: dict, others: list) -> list:
    """The model alone per training seed for every variant run with it (runs of one seed
    share the weak labels), each variant's gain over ``labelled`` of the same seed, and
    the semi-supervised target for self-training judged on every seed."""
    from napari_labeleff.cohort.training import DEFAULTS, PSEUDO_BAND

    by_seed = {}
    for o in [doc, *others]:
        if o.get("protocol", {}).get("dataset", "la_mri") != doc["protocol"].get("dataset", "la_mri"):
            continue
        for name, a in o.get("arms", {}).items():
            opts = a["train"].get("options", {})
            by_seed.setdefault(opts.get("seed", 0), {})[_variant(name, opts)] = a["mean_model"]
    if not any(len(v) > 1 for v in by_seed.values()):
        return []
    out = ["", "Model alone (a) by training seed (every run has the same weak labels and test cases):", ""]
    for seed, runs in sorted(by_seed.items()):
        out.append(f"- seed {seed}: " + ", ".join(f"`{v}` {_f(m)}" for v, m in runs.items()) + ".")
    gains = {}
    for runs in by_seed.values():
        for v, m in runs.items():
            if v != "labelled" and "labelled" in runs:
                gains.setdefault(v, []).append(m - runs["labelled"])
    if gains:
        out.append("- Over `labelled` of the same seed: " + "; ".join(
            f"`{v}` {', '.join(f'{g:+.3f}' for g in gs)}" for v, gs in gains.items()) + ".")
    spread = {v: [runs[v] for runs in by_seed.values() if v in runs] for v in {v for r in by_seed.values() for v in r}}
    spread = {v: m for v, m in spread.items() if len(m) > 1}
    if spread:
        out.append("- Spread of one variant over training seeds: " + "; ".join(
            f"`{v}` {min(m):.3f}-{max(m):.3f}" for v, m in sorted(spread.items())) + ".")
    winners = [v for v, gs in gains.items() if min(gs) >= TARGETS["semi_gain"] and len(gs) > 1]
    out.append("- Variants ahead of `labelled` by >= +0.02 on every seed they ran with (2 or more): "
               + (", ".join(f"`{v}`" for v in winners) if winners else "none") + ".")
    if "self" in gains:
        g = gains["self"]
        out.append(f"- Semi-supervised by self-training >= +{TARGETS['semi_gain']} over labelled-only on every "
                   f"seed run: {', '.join(f'{x:+.3f}' for x in g)}: {_met(min(g) >= TARGETS['semi_gain'])}.")
    out.append(f"- Shipped defaults: `pseudo_confidence={DEFAULTS['pseudo_confidence']:g}`, "
               f"`pseudo_band={PSEUDO_BAND}`, `self_training={DEFAULTS['self_training']:g}`.")
    return out


def _steps_note(doc: dict, base: dict | None) -> str:
    """How many optimiser steps each arm got here and in ``base`` (a wall-time budget on
    a shared machine buys different numbers of steps)."""
    if not base:
        return ""
    parts = [f"`{n}` {a['train']['steps']} steps here vs {base['arms'][n]['train']['steps']}"
             for n, a in doc.get("arms", {}).items() if n in base.get("arms", {})]
    return (" Under the same wall-time budget the machine's load decides the steps: "
            + "; ".join(parts) + " in the first table, so part of a difference may come "
            "from the extra steps.") if parts else ""


def render_curve(doc: dict, source: str) -> list:
    c = doc["curve"]
    rows = c["rows"]
    meta = doc["meta"]
    title = "Learning curve" if c.get("gate_independent") is False else \
        "Learning curve, earlier run (the prior check accepted a score on the training volumes)"
    out = ["", f"### {title}", "",
           f"Measured {meta.get('date')} (load average {', '.join(f'{x:.1f}' for x in meta.get('load_avg_start', []))} "
           f"at start), command `{doc.get('command')}`, raw results in `{source}`. Volumes of the training split in a "
           f"seeded order ({len(rows)} of {len(c['order'])} planned), {c['resolution']}; on each: the initial "
           f"scribbles, refine (with the current model as `prior=` from the 2nd volume on), corrective "
           f"interactions until Dice 0.90 or {c['k']}; the refined mask is accepted and the model trained further "
           f"({c['budget_min_per_volume']} min per volume, warm start, all accepted masks).", "",
           "| # | case | model Dice before | prior used | interactions | drawn voxels | final Dice | "
           "train steps | model Dice on accepted masks after |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        used = {True: "yes", False: "no (gate)", None: "-" if r["n"] == 1 else "yes"}[r.get("prior_used")]
        out.append(f"| {r['n']} | {r['case'][:8]} | {_f(r['model_dice'])} | {used} | {r['interactions']} | "
                   f"{r['drawn_voxels']} | {_f(r['final_dice'])} | {r.get('train_steps', '')} | "
                   f"{_f(r.get('mask_score'))} |")
    if len(rows) >= 2:
        steps = [r.get("train_steps", 0) for r in rows]
        later = [r["final_dice"] for r in rows[1:]]
        gated = [r for r in rows[1:] if r.get("prior_used") is not None]
        if gated:
            used = sum(bool(r["prior_used"]) for r in gated)
            scores = [r["mask_score"] for r in rows[:-1] if r.get("mask_score") is not None]
            rule = (f"Dice >= {PRIOR_MIN_DICE} on held-out volumes with full masks; a score measured on "
                    "its own training volumes does not count" if c.get("gate_independent") is False else
                    f"Dice >= {PRIOR_MIN_DICE} on the validation masks, here the accepted masks it trained on")
            out += ["", f"The model trained {min(steps)}-{max(steps)} steps per volume. The project's rule "
                    f"for using the model as the prior (`Project.prior_use`: {rule}) let it serve as the "
                    f"prior on {used} of {len(gated)} volumes (its Dice on the accepted masks: "
                    f"{', '.join(f'{x:.2f}' for x in scores)}). Volumes 2-{len(rows)} ended at mean Dice "
                    f"{sum(later) / len(later):.3f} after the corrections vs {rows[0]['final_dice']:.3f} on the 1st."]
        else:
            out += ["", f"The model trained {min(steps)}-{max(steps)} steps per volume on this machine; from the "
                    f"2nd volume on refine used it as a prior and ended at mean Dice {sum(later) / len(later):.3f} "
                    f"after the corrections vs {rows[0]['final_dice']:.3f} on the 1st volume without a prior, so "
                    "the accepted masks (the training data of the next round) were poor as well."]
        first, last = rows[0], rows[-1]
        ri = last["interactions"] / max(first["interactions"], 1)
        rv = last["drawn_voxels"] / max(first["drawn_voxels"], 1)
        target = "the 10th" if len(rows) >= 10 else f"volume {len(rows)} (fewer than 10 volumes run)"
        ok = len(rows) >= 10 and ri <= 0.5 and rv <= 0.5
        out += ["", f"Target (issue 7): {target} needs <= 50% of the interactions and drawn voxels of the 1st: "
                f"interactions {last['interactions']} vs {first['interactions']} ({ri:.0%}), drawn voxels "
                f"{last['drawn_voxels']} vs {first['drawn_voxels']} ({rv:.0%}): {_met(ok)}."]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--curve", nargs="*", default=[], help="learning-curve results JSON(s)")
    ap.add_argument("--also", nargs="*", default=[], help="other runs, shown as compact tables")
    ap.add_argument("--doc", default="docs/benchmarks.md")
    args = ap.parse_args(argv)
    doc = json.loads(Path(args.results).read_text())
    curves = [(json.loads(Path(f).read_text()), f) for f in args.curve]
    also = [(json.loads(Path(f).read_text()), f) for f in args.also]
    text = f"{START}\n{render(doc, args.results, curves, also)}{END}"
    md = Path(args.doc)
    cur = md.read_text()
    if START in cur and END in cur:
        a, b = cur.index(START), cur.index(END) + len(END)
        cur = cur[:a] + text + cur[b:]
    else:
        cur = cur.rstrip("\n") + "\n\n" + text + "\n"
    md.write_text(cur)
    print(f"updated {md}")


if __name__ == "__main__":
    main()
