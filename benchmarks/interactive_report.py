"""Interactive-network section of docs/benchmarks.md (issue 19), generated from the
result files of ``benchmarks/bench_interactive.py``; never typed by hand.

    python -m benchmarks.interactive_report \
        --model benchmarks/results/interactive_model.json \
        --curve benchmarks/results/interactive_curve.json \
        --notes benchmarks/interactive_notes.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .report import publish

START, END = "<!-- interactive:start -->", "<!-- interactive:end -->"
ARM_WORDS = {
    "graph": "graph method alone (`mode=\"graph\"`)",
    "prior": "graph + the network's draft as prior (`mode=\"prior\"`)",
    "network": "network with the strokes as prompt channels, no graph step",
    "fused": "prompt channels + graph step (`engine.fuse`), no adaptation",
    "adapt": "prompt channels + per-volume adaptation + graph step",
    "auto": "what the project chooses (`mode=\"auto\"`)",
}


def _meta_line(path, doc) -> str:
    m = doc["meta"]
    return (f"From `{Path(path).name}`: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}, "
            f"CUDA {'yes' if m.get('cuda') else 'no'}, {m.get('date')}, commit "
            f"`{str(m.get('git_commit'))[:10]}`{' (dirty tree)' if m.get('git_dirty') else ''}, load "
            f"average at start {m.get('load_avg_start', [None])[0]}. Command: `{doc.get('command')}`.")


def _f(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def model_section(path, doc) -> list[str]:
    lines = ["### The model, corrections and the ablation", "", _meta_line(path, doc), ""]
    p = doc["protocol"]
    lines += [f"Cases {', '.join(p['train'])} accepted with their reference masks (no model "
              f"yet), then `Project.train(max_minutes={p['budget_min']})`; test cases "
              f"{', '.join(p['test'])}: the model alone (no stroke), then each arm on the "
              f"protocol's initial scribbles and {p['k']} corrective strokes "
              "(`annotator.corrective_interaction` on that arm's own result). Mean Dice over "
              "the test cases; seconds per call (*first*: to the first result drawn; "
              "*corr.*: mean over the corrections, to the final result).", ""]
    for name, var in doc["variants"].items():
        tests = var["tests"]
        tr = var["train"]
        lines += [f"**{name}** network (options {json.dumps(var['options'])}): {tr['steps']} steps "
                  f"in {tr['seconds']:.0f} s; {tr['message']}. Lead after training: "
                  f"{var['lead'][1]}.", ""]
        if not tests:
            continue
        alone = _mean([t["model_alone"] for t in tests.values()])
        lines += [f"Model alone (no stroke): mean Dice {_f(alone)} "
                  f"({', '.join(_f(t['model_alone']) for t in tests.values())}).", ""]
        lines += ["| arm | Dice initial | Dice after corrections | first (s) | corr. (s) | "
                  "NoC@0.85 | NoC@0.90 |", "|---|---|---|---|---|---|---|"]
        arms = list(next(iter(tests.values()))["arms"])
        for arm in arms:
            seqs = [t["arms"][arm] for t in tests.values() if arm in t["arms"]]
            ini = _mean([s["dice"][0] for s in seqs])
            fin = _mean([s["dice"][-1] for s in seqs])
            first = _mean([s["first_s"][0] for s in seqs])
            corr = _mean([np.mean(s["total_s"][1:]) for s in seqs if len(s["total_s"]) > 1])
            n85 = [s["noc85"] for s in seqs]
            n90 = [s["noc90"] for s in seqs]
            fmt = lambda ns: f"{sum(n is not None for n in ns)}/{len(ns)} reached"  # noqa: E731
            lines.append(f"| {ARM_WORDS.get(arm, arm)} | {_f(ini)} | {_f(fin)} | {_f(first, 2)} | "
                         f"{_f(corr, 2)} | {fmt(n85)} | {fmt(n90)} |")
        lines.append("")
    return lines


def curve_section(path, doc) -> list[str]:
    lines = ["### The learning curve", "", _meta_line(path, doc), ""]
    p = doc["protocol"]
    rows = doc.get("rows", [])
    lines += [f"{len(rows)} LA volumes of cases 1-14 in a seeded order (seed {p['seed']}); on each "
              "the initial scribbles, then corrections until Dice 0.90 or "
              f"{p['k']} interactions with `Project.refine(mode=\"auto\")`; the final result is "
              "accepted (`Project.accept`, which scores the model's draft first: the running "
              f"score) and the project fine-tunes for {p['budget_min']} min before the next.", "",
              "*draft*: the published model's Dice against the reference mask before any "
              "stroke; *running score*: the same draft against the mask the benchmark "
              "accepted (the refined result, not the reference), as the project measures "
              "it; *mode*: what `mode=\"auto\"` ran.", "",
              "| # | case | draft | running score | mode | Dice initial | Dice final | "
              "interactions | NoC@0.85 | NoC@0.90 | voxels drawn | s per call | fine-tune steps |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['case'][:8]} | {_f(r.get('draft_dice'))} | {_f(r.get('model_dice_before'))} | "
            f"{r['info'].get('project_mode')} | {_f(r['dice'][0])} | {_f(r['dice'][-1])} | "
            f"{r['interactions']} | {'-' if r['noc85'] is None else r['noc85']} | "
            f"{'-' if r['noc90'] is None else r['noc90']} | {r['drawn_voxels']} | "
            f"{_f(np.mean(r['total_s']), 2)} | {r.get('train', {}).get('steps', '-')} |")
    lines.append("")
    if len(rows) >= 8:
        def agg(sub, key):
            return _mean([r[key] if r[key] is not None else p["k"] + 1 for r in sub])
        early, late = rows[:4], rows[-4:]
        lines += [
            f"Volumes 1-4 against {len(rows) - 3}-{len(rows)}: NoC@0.85 {_f(agg(early, 'noc85'), 2)} -> "
            f"{_f(agg(late, 'noc85'), 2)} (not reached counts as {p['k'] + 1}); voxels drawn "
            f"{_f(_mean([r['drawn_voxels'] for r in early]), 0)} -> "
            f"{_f(_mean([r['drawn_voxels'] for r in late]), 0)}; Dice after at most 5 "
            f"interactions {_f(_mean([r['dice'][min(5, len(r['dice']) - 1)] for r in late]))} on the last four.", ""]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.interactive_report")
    ap.add_argument("--model")
    ap.add_argument("--curve")
    ap.add_argument("--notes")
    ap.add_argument("--no-doc", action="store_true")
    a = ap.parse_args(argv)
    lines = ["## The network in the loop (issue 19)", ""]
    if a.model:
        lines += model_section(a.model, json.loads(Path(a.model).read_text()))
    if a.curve:
        lines += curve_section(a.curve, json.loads(Path(a.curve).read_text()))
    lines += ["GPU figures (fine-tune after accept <= 30 s, update per stroke <= 0.2 s): "
              "unmeasured; no GPU was lent to this session.", ""]
    text = "\n".join(lines)
    publish(text, notes=a.notes, no_doc=a.no_doc, start=START, end=END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
