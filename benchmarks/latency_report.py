"""Latency section of docs/benchmarks.md (issue 20), generated from result files of
``benchmarks/bench_latency.py``; never typed by hand.

    python -m benchmarks.latency_report benchmarks/results/latency_samples.json \
        benchmarks/results/latency_la_brats.json:la,brats

A ``PATH:prefix,prefix`` argument keeps only that file's cases starting with one of the
prefixes (a case measured again after a change is reported from the newer file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .report import publish

START, END = "<!-- latency:start -->", "<!-- latency:end -->"

#: Issue-20 targets on 2 CPU cores: (first, final, correction) seconds, by case.
TARGETS = {
    "sample:brain": (1.0, 3.0, 0.5),
    "sample:ct": (1.5, 4.0, None),
}
#: 2-3 M voxel volumes (LA) and BRATS dev, as the issue groups them: first, final,
#: correction.
MID_TARGET = (2.0, 6.0, 1.0)
#: 300 x 512 x 512 CT.
FULL_CT_TARGET = (15.0, 60.0, 10.0)


def target(case: str, voxels: int):
    if case in TARGETS:
        return TARGETS[case]
    if case.startswith("ct512"):
        return FULL_CT_TARGET
    if case.startswith(("la:", "brats:")) or 1_500_000 <= voxels <= 4_000_000:
        return MID_TARGET
    return None


def _median(xs):
    return float(np.median(xs)) if xs else None


def _s(x):
    return "-" if x is None else f"{x:.2f}"


def _met(value, limit):
    if limit is None or value is None:
        return ""
    return " ✓" if value <= limit else " ✗"


def rows(runs):
    """One row per (case, arm)."""
    out = []
    for r in runs:
        if "error" in r:
            out.append(f"| {r['case']} | {r['arm']} | error: {r['error']} | | | | | | |")
            continue
        c = r["calls"]
        corr = [x["final_s"] for x in c[1:]]
        tgt = target(r["case"], r["voxels"]) if r["arm"] == "ours" else None
        first, final, cmed = c[0]["first_s"], c[0]["final_s"], _median(corr)
        solves = c[0].get("full_resolution_solves")
        csolves = [x.get("full_resolution_solves") for x in c[1:]]
        out.append(
            f"| {r['case']} | {r['arm']} | {_s(first)}{_met(first, tgt and tgt[0])} | "
            f"{_s(final)}{_met(final, tgt and tgt[1])} | "
            f"{_s(cmed)}{_met(cmed, tgt and tgt[2])} | "
            f"{'-' if solves is None else solves} / "
            f"{'-' if not csolves or csolves[0] is None else max(csolves)} | "
            f"{r['mean_dice'][0]:.3f} | {r['mean_dice'][-1]:.3f} | "
            f"{r['peak_rss_mb'] / 1024:.2f} |")
    return out


def ratios(runs):
    """ours vs each other arm on the same case: the first call's final result, the
    median correction, and the final Dice."""
    by = {(r["case"], r["arm"]): r for r in runs if "error" not in r}
    out = []
    for (case, arm), r in by.items():
        mine = by.get((case, "ours"))
        if arm == "ours" or mine is None:
            continue
        first = r["calls"][0]["final_s"] / mine["calls"][0]["final_s"]
        theirs = _median([x["final_s"] for x in r["calls"][1:]])
        ours = _median([x["final_s"] for x in mine["calls"][1:]])
        corr = "-" if not theirs or not ours else f"{theirs / ours:.1f}x"
        out.append(f"| {case} | {arm} | {first:.1f}x | {corr} | "
                   f"{mine['mean_dice'][-1] - r['mean_dice'][-1]:+.3f} |")
    return out


def section(docs) -> str:
    lines = ["## Latency budget (issue 20)", ""]
    for path, doc in docs:
        m = doc["meta"]
        lines += [
            f"From `{Path(path).name}`: {m.get('cpu')}, {m.get('cores')} cores, torch "
            f"{m.get('torch')} ({m.get('torch_threads')} threads), CUDA "
            f"{'yes' if m.get('cuda') else 'no'}, {m.get('date')}, commit "
            f"`{str(m.get('git_commit'))[:10]}`{' (dirty tree)' if m.get('git_dirty') else ''}"
            f", load average at start {m.get('load_avg_start', [None])[0]}, "
            f"{m.get('k')} corrections per case. Command: `{m.get('command')}`."
            + (f" Cases shown: {', '.join(m['selected'])}*." if m.get("selected") else ""),
            ""]
        lines += [
            "Seconds per call measured in-process (loading excluded). *first*: time to "
            "the first usable result (`Progress.preview`, drawn at once in the viewer); "
            "*final*: the returned result; *corr.*: median over the corrections. "
            "*Full-res solves*: solves on the whole full-resolution grid in the first "
            "call / the most in one correction (sub-box and coarse solves not counted). "
            "`ours:flat` is the same engine with `staged=False` (every choice solved on "
            "the full grid, as before this round). ✓/✗: the issue's target for that "
            "case.", "",
            "| case | arm | first (s) | final (s) | corr. (s) | full-res solves | Dice "
            "initial | Dice final | peak RSS (GB) |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows(doc["runs"]), ""]
        rat = ratios(doc["runs"])
        if rat:
            lines += ["Against the other arms on the same prompts: how many times longer "
                      "their first call (to its final result) and their median correction "
                      "took, and our final Dice minus theirs.", "",
                      "| case | arm | first call: theirs / ours | correction: theirs / ours "
                      "| Dice ours - theirs |",
                      "|---|---|---|---|---|", *rat, ""]
    lines += ["GPU figures (256^3 first result <= 0.3 s, correction <= 0.15 s): "
              "unmeasured; no GPU was lent to this session.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency_report")
    p.add_argument("results", nargs="+")
    p.add_argument("--notes", help="markdown file of notes appended to the section")
    p.add_argument("--no-doc", action="store_true", help="print instead of writing docs")
    a = p.parse_args(argv)
    docs = []
    for arg in a.results:
        path, _, only = arg.partition(".json:")
        path = path if path.endswith(".json") else path + ".json"
        doc = json.loads(Path(path).read_text())
        if only:
            keep = tuple(only.split(","))
            doc["runs"] = [r for r in doc["runs"] if r["case"].startswith(keep)]
            doc["meta"]["selected"] = list(keep)
        docs.append((path, doc))
    text = section(docs)
    publish(text, notes=a.notes, no_doc=a.no_doc, start=START, end=END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
