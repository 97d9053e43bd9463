"""Plots and the docs section of the active-learning benchmark (``bench_active``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "images" / "active_dice.png"
_ORDER = ("default", "entropy", "random", "foreground_random", "equidistant")
BASELINES = ("random", "foreground_random", "equidistant")
TARGET = 0.90
#: A round "lowers Dice" when mean Dice falls by more than this after annotating.
DROP = 0.005


def slices_to_target(dice: list) -> int | None:
    """Annotated slices (the start slice counts) when mean Dice first reaches 0.90."""
    for i, d in enumerate(dice):
        if d >= TARGET:
            return i + 1
    return None


def _strategies(case: dict) -> list:
    return [s for s in _ORDER if s in case["runs"]] + \
        [s for s in case["runs"] if s not in _ORDER]


def summarise(res: dict) -> dict:
    """Per case and strategy: mean Dice curve over seeds and slices to reach 0.90
    (mean over seeds; a run that never reaches it counts as rounds + 2)."""
    cap = res["rounds"] + 2
    out = {}
    for name, case in res["cases"].items():
        out[name] = {}
        for s, runs in case["runs"].items():
            need = [slices_to_target(r["dice"]) for r in runs]
            steps = [np.diff(r["dice"]) for r in runs]
            out[name][s] = {
                "drops": float(np.mean([(d < -DROP).sum() for d in steps])),
                "worst_drop": float(max(0.0, -min(d.min(initial=0) for d in steps))),
                "curve": np.mean([r["dice"] for r in runs], axis=0),
                "slices": float(np.mean([cap if n is None else n for n in need])),
                "reached": sum(n is not None for n in need), "runs": len(runs),
                "refine_s": float(np.median([t for r in runs for t in r["refine_s"]])),
                "suggest_s": float(np.median([t for r in runs for t in r["suggest_s"]])),
            }
    return out


def plot(res: dict, summary: dict, path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    ncol = min(3, len(names) + 1)
    nrow = -(-(len(names) + 1) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), squeeze=False)
    strategies = _strategies(next(iter(res["cases"].values())))
    x = np.arange(1, res["rounds"] + 2)
    panels = [(n, summary[n]) for n in names]
    panels.append(("mean over cases", {s: {"curve": np.mean(
        [summary[n][s]["curve"] for n in names], axis=0)} for s in strategies}))
    for ax, (title, per) in zip(axes.ravel(), panels):
        for s in strategies:
            ax.plot(x, per[s]["curve"], marker=".", lw=2.2 if s == "default" else 1.2,
                    label=s)
        ax.axhline(TARGET, color="grey", ls="--", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("annotated axial slices")
        ax.set_ylabel("mean Dice")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt_slices(e: dict, cap: int) -> str:
    if e["reached"] == 0:
        return f">{cap - 1}"
    txt = f"{e['slices']:.1f}" if e["runs"] > 1 else f"{e['slices']:.0f}"
    return txt + ("" if e["reached"] == e["runs"] else f" ({e['reached']}/{e['runs']})")


def _calibration(res: dict) -> dict:
    out = {}
    for name, case in res["cases"].items():
        cal = [c for r in case["runs"]["default"] for c in r["calibration"]]
        out[name] = {f"{where}_{key}": float(np.mean([c[where][key] for c in cal
                                                      if c[where][key] is not None]))
                     for where in ("volume", "roi") for key in ("top10_error_share",
                                                                "auroc")}
    return out


def section(res: dict, summary: dict) -> str:
    """Markdown of the active-learning section (between the docs markers)."""
    cap = res["rounds"] + 2
    names = list(summary)
    strategies = _strategies(next(iter(res["cases"].values())))
    lines = [
        "## Active learning (slice suggestions)", "",
        f"Measured {res['date']} on {res['machine']} (load average "
        f"{res['loadavg_start'][0]:.1f} at start, {res['loadavg_end'][0]:.1f} at end), "
        f"code commit `{res.get('commit', 'unknown')[:10]}`"
        + ("" if res.get("clean", True) else " (tree NOT clean)") + ", "
        f"command `{res['command']}` (scoring speed measured separately with "
        "`bench_active.scoring_speed()`); raw "
        "results in `benchmarks/results/active.json`.", "",
        "Protocol: the slice-level active-learning variant of `PROTOCOL.md`. All "
        "strategies start from the same single annotated axial slice (the middle of "
        "the structures' extent); each round the strategy names one axial slice, the "
        "simulated annotator draws one stroke per class present in it, and the same "
        f"refinement method (`{res['method']}`, incremental state) refines. "
        f"Randomised strategies run {res['seeds']} seed(s) (averaged). The equidistant "
        "baseline bisects the largest gap within the foreground extent. Method "
        "actually used: " + ", ".join(sorted({r["method"] for c in res["cases"].values()
                                              for runs in c["runs"].values()
                                              for r in runs})) + ".", ""]
    for name, case in res["cases"].items():
        lines.append(f"- `{name}`: shape {tuple(case['shape'])}, spacing "
                     f"{tuple(case['spacing'])} mm" + "".join(f"; {n}" for n in case["notes"]))
    lines += ["",
        "### Annotated slices needed to reach mean Dice 0.90", "",
        "| case | " + " | ".join(strategies) + " |",
        "|---" * (len(strategies) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_fmt_slices(summary[n][s], cap)
                                             for s in strategies) + " |")
    means = {s: float(np.mean([summary[n][s]["slices"] for n in names]))
             for s in strategies}
    lines.append("| **mean** | " + " | ".join(f"**{means[s]:.2f}**" for s in strategies)
                 + " |")
    lines += ["", f"`>{cap - 1}`: not reached within {cap - 1} slices; such runs count "
              f"as {cap} in the means. `(a/b)`: a of b seeds reached it.", "",
              "### Mean Dice over all rounds (area under the Dice curve)", "",
              "| case | " + " | ".join(strategies) + " |",
              "|---" * (len(strategies) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(
            f"{summary[n][s]['curve'].mean():.3f}" for s in strategies) + " |")
    lines += ["",
              "### Mean Dice after k annotated slices (mean over cases)", "",
              "| k | " + " | ".join(strategies) + " |",
              "|---" * (len(strategies) + 1) + "|"]
    for k in sorted({1, 2, 3, 5, 8, res["rounds"] + 1}):
        if k <= res["rounds"] + 1:
            lines.append(f"| {k} | " + " | ".join(
                f"{np.mean([summary[n][s]['curve'][k - 1] for n in names]):.3f}"
                for s in strategies) + " |")
    lines += ["", "### Rounds where annotating the suggested slice lowered Dice", "",
              f"Rounds (of {res['rounds']}) whose mean Dice fell by more than {DROP} "
              "after the suggested slice was annotated (mean over seeds) / largest single "
              "drop.", "",
              "| case | " + " | ".join(strategies) + " |",
              "|---" * (len(strategies) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(
            f"{summary[n][s]['drops']:.1f} / {summary[n][s]['worst_drop']:.3f}"
            for s in strategies) + " |")
    lines += ["", "![Dice vs annotated slices](images/active_dice.png)", "",
              "### Calibration of the uncertainty (every refinement of the default runs)",
              "", "| case | top-10% voxels: share of errors | AUROC | inside ROI: share "
              "| inside ROI: AUROC | s/refine | s/suggest |", "|---|---|---|---|---|---|---|"]
    cal = _calibration(res)
    for n in names:
        c, d = cal[n], summary[n]["default"]
        lines.append(f"| {n} | {c['volume_top10_error_share']:.2f} | "
                     f"{c['volume_auroc']:.3f} | {c['roi_top10_error_share']:.2f} | "
                     f"{c['roi_auroc']:.3f} | {d['refine_s']:.2f} | {d['suggest_s']:.2f} |")
    lines += ["", "Uncertainty = normalised predictive entropy of the refinement. ROI = "
              "bounding box of ground truth and prediction padded by 5 voxels (where "
              "errors can occur; the whole volume is dominated by trivially correct "
              "background)."]
    sp = res.get("scoring_speed")
    if sp:
        lines += ["", "### Scoring speed", "",
                  f"256^3 phantom ({sp['shape']}, 3 classes, device {sp['device']}, "
                  f"load average {sp['loadavg'][0]:.1f}), median of 3: "
                  f"`uncertainty_map` {sp['uncertainty_map_s']:.2f} s, "
                  f"`suggest` slices {sp['suggest_slice_s']:.2f} s, "
                  f"regions {sp['suggest_region_s']:.2f} s."]
    lines += ["", "### Targets", ""] + _targets(res, summary, means, cal)
    return "\n".join(lines)


def _targets(res, summary, means, cal) -> list:
    names = list(summary)
    best = min(BASELINES, key=lambda s: means[s])
    saving = 1 - means["default"] / means[best]
    worse = [n for n in names
             if summary[n]["default"]["slices"] > summary[n]["random"]["slices"]]
    lower_auc = [n for n in names if summary[n]["default"]["curve"].mean()
                 < summary[n]["random"]["curve"].mean()]
    share = float(np.mean([cal[n]["volume_top10_error_share"] for n in names]))
    share_roi = float(np.mean([cal[n]["roi_top10_error_share"] for n in names]))
    censored = [n for n in names if not any(e["reached"] for e in summary[n].values())]
    yes = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    lowered = [n for n in names if summary[n]["default"]["drops"] > 0]
    out = [f"- Default needs >= 25% fewer annotated slices than the best baseline "
           f"(`{best}`, {means[best]:.2f}) to reach 0.90, over {len(names)} cases: "
           f"{means['default']:.2f}, {100 * saving:.0f}% fewer: {yes(saving >= 0.25)}."
           + (f" No strategy reached 0.90 on {len(censored)} of {len(names)} cases "
              "(the refinement's plateau is below 0.90 there), so this comparison is "
              "censored and says little." if censored else ""),
           f"- Default never worse than random on any case (slices to 0.90): "
           f"{yes(not worse)}" + (f" (worse on {', '.join(worse)})." if worse else ".")
           + (f" By mean Dice over the rounds it is below random on "
              f"{', '.join(lower_auc)}." if lower_auc else
              " By mean Dice over the rounds it is never below random either."),
           f"- Annotating a default suggestion never lowers mean Dice (by > {DROP}): "
           f"{yes(not lowered)}" + (f" (it does on {', '.join(lowered)}; see the drops "
                                    "table: the refinement, not the choice of slice, "
                                    "loses Dice there when the baselines do too)."
                                    if lowered else "."),
           f"- Top-10% most uncertain voxels hold >= 50% of the errors: mean "
           f"{share:.2f} over the volume ({share_roi:.2f} inside the ROI): "
           f"{yes(share >= 0.5)}."]
    sp = res.get("scoring_speed")
    if sp:
        worst = max(sp["suggest_slice_s"], sp["suggest_region_s"])
        gpu = sp["device"].startswith("cuda")
        out.append(f"- Scoring 256^3 <= {1 if gpu else 10} s on "
                   f"{'GPU' if gpu else 'CPU'}: {worst:.2f} s: "
                   f"{yes(worst <= (1 if gpu else 10))}.")
    return out


def write_report(res: dict) -> None:
    """Draw the plot and replace the active section of docs/benchmarks.md."""
    summary = summarise(res)
    plot(res, summary)
    text = DOCS.read_text()
    new = f"<!-- active:start -->\n{section(res, summary)}\n<!-- active:end -->"
    DOCS.write_text(re.sub(r"<!-- active:start -->.*<!-- active:end -->",
                           lambda _: new, text, flags=re.S))
