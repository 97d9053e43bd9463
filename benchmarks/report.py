"""Turn refinement result JSONs into tables, plots and the refine section of
``docs/benchmarks.md`` (between ``<!-- refine:start -->`` and ``<!-- refine:end -->``).

Usage::

    python -m benchmarks.report benchmarks/results/refine_*.json \
        --ours ours:auto ours:randomwalk --notes benchmarks/refine_notes.md

Targets are those of issue 3: quality per case, NoC@0.90, CPU speed at MNI 2 mm and
1 mm, memory at 256^3; GPU targets are reported as unmeasured unless a CUDA run is
among the inputs.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- refine:start -->", "<!-- refine:end -->"
MARGIN = 0.03  # required lead over the best peer (mean Dice after initial labels)


# ---- loading ---------------------------------------------------------------------------
def load_runs(paths):
    """All runs of the given JSONs; a later file's run replaces an earlier one of the
    same (case, method). Returns (runs, metas) with each run's ``meta`` index."""
    runs, metas = {}, []
    for path in sorted(paths, key=lambda p: json.loads(Path(p).read_text())["meta"]["date"]):
        doc = json.loads(Path(path).read_text())
        full = Path(path).resolve()
        metas.append({**doc["meta"], "file": str(full.relative_to(ROOT))
                      if full.is_relative_to(ROOT) else str(path)})
        for r in doc["runs"]:
            runs[(r["case"], r["method"])] = {**r, "meta": len(metas) - 1}
    return list(runs.values()), metas


def _ok(runs):
    return [r for r in runs if "error" not in r]


def is_peer(r):
    return r["method"].startswith("peers:")


def case_order(runs):
    seen = []
    for r in runs:
        if r["case"] not in seen:
            seen.append(r["case"])
    return seen


# ---- formatting ------------------------------------------------------------------------
def _f(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def _noc(r, t):
    v = r.get(f"noc{t}")
    n = len(r["mean_dice"]) - 1
    return f">{n}" if v is None else str(v)


def _mb(x):
    return "-" if x is None else f"{x:.0f}"


def best_peer(runs, case):
    """Peer with the highest mean Dice after the initial labels (ties: faster)."""
    peers = [r for r in _ok(runs) if r["case"] == case and is_peer(r)]
    if not peers:
        return None
    return max(peers, key=lambda r: (round(r["mean_dice"][0], 4), -r["sec_median"]))


def case_table(runs, case):
    rows = [r for r in runs if r["case"] == case]
    head = ("| method | Dice init | Dice after n (n) | per structure after init | "
            "NoC@0.85 | NoC@0.90 | s/call median | s/call max | incremental median | "
            "CPU s/call median | "
            "peak RSS MB | peak GPU MB | load avg |")
    lines = [head, head_sep(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error'][:80]} |" + " |" * 11)
            continue
        m = r["mean_dice"]
        per = ", ".join(f"{d:.2f}" for d in r["dice"][0])
        lines.append(
            f"| {r['method']}{_engine_note(r)} | {m[0]:.3f} | {m[-1]:.3f} ({len(m) - 1}) | "
            f"{per} | {_noc(r, 85)} | {_noc(r, 90)} | {r['sec_median']:.2f} | "
            f"{r['sec_max']:.2f} | {_f(r['sec_incremental_median'], 2)} | "
            f"{_f(np.median(r['cpu_seconds']), 1) if 'cpu_seconds' in r else '-'} | "
            f"{_mb(r['peak_rss_mb'])} | {_mb(r['peak_gpu_mb'])} | "
            f"{np.mean(r['load_avg']):.1f} |")
    return "\n".join(lines)


def head_sep(head):
    return "|" + "---|" * (head.count("|") - 1)


def _engine_note(r):
    e = r.get("engine")
    if not e:
        return ""
    return f" ({e['method']}, {e['device']})"


# ---- targets ---------------------------------------------------------------------------
def absolute_target(case):
    """Issue 3's absolute quality target for a case, or None."""
    if re.fullmatch(r"mni[12]wm", case):
        return 0.93
    if re.fullmatch(r"mni[12]", case):
        return 0.92
    if case.startswith("la:"):
        return 0.90
    if case == "ct:boxes":
        return 0.80
    if case == "ct:boxes+scribbles":
        return 0.88
    return None


def _met(flag):
    return "met" if flag else "**not met**"


def quality_rows(runs, ours):
    head = ("| case | ours Dice init | best peer (Dice init) | lead (>= +0.03) | "
            "absolute target | NoC@0.90 ours / best of peers (<= 2) | "
            "s/call ours / best peer (ratio) |")
    lines = [head, head_sep(head)]
    for case in case_order(runs):
        mine = [r for r in _ok(runs) if r["case"] == case and r["method"] == ours]
        bp = best_peer(runs, case)
        if not mine or bp is None:
            continue
        r = mine[0]
        d0, p0 = r["mean_dice"][0], bp["mean_dice"][0]
        tgt = absolute_target(case)
        abs_txt = "-" if tgt is None else f">= {tgt:.2f}: {_met(d0 >= tgt)}"
        peers_90 = [p for p in _ok(runs) if p["case"] == case and is_peer(p)
                    and p["noc90"] is not None]
        if peers_90:
            best90 = min(p["noc90"] for p in peers_90)
            noc_txt = (f"{_noc(r, 90)} / {best90}: "
                       f"{_met(r['noc90'] is not None and r['noc90'] <= 2)}")
        else:
            noc_txt = f"{_noc(r, 90)} / no peer reaches 0.90: n/a"
        ratio = bp["sec_median"] / r["sec_median"]
        lines.append(
            f"| {case} | {d0:.3f} | {bp['method'][6:]} ({p0:.3f}) | "
            f"{d0 - p0:+.3f}: {_met(d0 - p0 >= MARGIN)} | {abs_txt} | {noc_txt} | "
            f"{r['sec_median']:.2f} / {bp['sec_median']:.2f} ({ratio:.1f}x "
            f"{'faster' if ratio >= 1 else 'slower'}) |")
    return "\n".join(lines)


def speed_rows(runs, ours, metas):
    """CPU/GPU speed and memory targets."""
    def pick(pattern):
        return [r for r in _ok(runs) if r["method"] == ours and re.fullmatch(pattern, r["case"])]

    lines = ["| target | measured | status |", "|---|---|---|"]
    for pattern, limit, label in ((r"mni2(wm)?", 2.0, "CPU <= 2 s per call at MNI 2 mm"),
                                  (r"mni1(wm)?", 15.0, "CPU <= 15 s per call at MNI 1 mm")):
        rs = [r for r in pick(pattern) if not r["engine"]["device"].startswith("cuda")]
        if not rs:
            lines.append(f"| {label} | not run | unmeasured |")
            continue
        worst_med = max(r["sec_median"] for r in rs)
        worst_max = max(r["sec_max"] for r in rs)
        lines.append(f"| {label} | median {worst_med:.2f} s, max {worst_max:.2f} s "
                     f"({', '.join(r['case'] for r in rs)}; load avg "
                     f"{np.mean([np.mean(r['load_avg']) for r in rs]):.1f}) | "
                     f"{_met(worst_med <= limit)} (median); {_met(worst_max <= limit)} (max) |")
    faster = []
    for case in case_order(runs):
        mine = [r for r in _ok(runs) if r["case"] == case and r["method"] == ours]
        bp = best_peer(runs, case)
        if mine and bp and mine[0]["mean_dice"][0] >= bp["mean_dice"][0]:
            faster.append(mine[0]["sec_median"] < bp["sec_median"])
    if faster:
        lines.append(f"| CPU faster than the best peer at equal or better Dice | "
                     f"{sum(faster)} of {len(faster)} cases where ours has >= Dice | "
                     f"{_met(all(faster))} |")
    syn = [r for r in pick("syn256")]
    if syn:
        r = syn[0]
        lines.append(f"| RAM <= 3 GB at 256^3 (syn256, {r['engine']['device']}) | "
                     f"peak RSS {r['peak_rss_mb'] / 1024:.2f} GB, s/call median "
                     f"{r['sec_median']:.2f} | {_met(r['peak_rss_mb'] <= 3072)} |")
    else:
        lines.append("| RAM <= 3 GB at 256^3 | not run | unmeasured |")
    cuda = [r for r in _ok(runs) if r.get("engine", {}).get("device", "").startswith("cuda")]
    if cuda:
        for r in cuda:
            lines.append(f"| GPU ({r['case']}) | first {r['sec_first']:.3f} s, incremental "
                         f"median {_f(r['sec_incremental_median'])} s, peak GPU "
                         f"{_mb(r['peak_gpu_mb'])} MB | see targets: first <= 0.5 s, "
                         f"incremental <= 0.15 s, <= 4 GB at 256^3 |")
    else:
        lines.append("| GPU: first refine of 256^3 <= 0.5 s, incremental <= 0.15 s, "
                     "<= 4 GB GPU memory | no CUDA GPU in these runs | **unmeasured** |")
    return "\n".join(lines)


# ---- plots -----------------------------------------------------------------------------
def plot_curves(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = case_order(runs)
    ncol = min(4, len(cases))
    nrow = -(-len(cases) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.2 * nrow), squeeze=False)
    methods = sorted({r["method"] for r in _ok(runs)})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, case in zip(axes.ravel(), cases):
        for r in _ok(runs):
            if r["case"] == case:
                ax.plot(r["mean_dice"], marker=".", color=colors[r["method"]],
                        ls="-" if not is_peer(r) else "--", label=r["method"])
        ax.set_title(case[:28], fontsize=9)
        ax.set_ylim(0, 1)
        ax.axhline(0.9, color="grey", lw=0.5)
        ax.set_xlabel("corrective interactions")
        ax.set_ylabel("mean Dice")
    for ax in axes.ravel()[len(cases):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colors[m], ls="--" if m.startswith("peers") else "-")
               for m in methods]
    fig.legend(handles, methods, loc="lower center", ncol=min(len(methods), 8), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_speed(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    methods = sorted({r["method"] for r in _ok(runs)})
    for i, m in enumerate(methods):
        rs = [r for r in _ok(runs) if r["method"] == m]
        ax.scatter([r["sec_median"] for r in rs], [r["mean_dice"][0] for r in rs],
                   label=m, marker="o" if m.startswith("ours") else "x",
                   color=plt.cm.tab10(i % 10))
    ax.set_xscale("log")
    ax.set_xlabel("seconds per refine call (median, CPU, shared machine)")
    ax.set_ylabel("mean Dice after initial labels")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- document ---------------------------------------------------------------------------
def section(runs, metas, ours, notes=""):
    m0 = metas[-1]
    files = ", ".join(f"`{m['file']}`" for m in metas)
    out = [
        "## Refinement (scribbles and boxes to masks)",
        "",
        f"Machine: {m0['cpu']}, {m0['cores']} cores, {m0['ram_gb']:.0f} GB RAM, torch "
        f"{m0['torch']} ({m0['torch_threads']} threads), CUDA: "
        f"{'yes, ' + m0['gpu'] if m0.get('cuda') else 'no'}. The machine was shared with "
        "other jobs: the load average of every call is recorded and shown, and timings "
        "are upper bounds of what an idle machine gives.",
        "",
        "Runs (date, load average at start, command):",
        "",
    ]
    for m in metas:
        out.append(f"- {m['date']}, load {m['load_avg_start'][0]:.1f}, commit "
                   f"{m.get('git_commit', '?')[:8]}{' (+local changes)' if m.get('git_dirty') else ''}: "
                   f"`{m['command']}`")
    out += ["", f"Result files: {files}. Regenerate this section with "
            "`python -m benchmarks.report benchmarks/results/refine_*.json --ours "
            f"{' '.join(ours)} --notes benchmarks/refine_notes.md`.", ""]
    if notes:
        out += [notes.strip(), ""]
    out += ["### Targets (issue 3)", ""]
    for method in ours:
        out += [f"Judged method: `{method}`.", "", quality_rows(runs, method), "",
                speed_rows(runs, method, metas), ""]
    out += ["### Per case", "",
            "Dice = mean Dice over the structures (background excluded); `Dice after n` "
            "is after the last interaction run (n < k when a time budget or a perfect "
            "mask stopped it); NoC `>n` = not reached within the n interactions run. "
            "Peak RSS is that of a fresh subprocess per (case, method), including the "
            "loaded case and imported libraries (`rss_before_mb` in the JSON). CPU s/call "
            "is process CPU time (all threads) where recorded; on the 2-core machine an "
            "idle wall time is roughly CPU time / 2 for multi-threaded methods.", ""]
    for case in case_order(runs):
        r0 = next(r for r in runs if r["case"] == case)
        desc = ""
        if "error" not in r0:
            names = ", ".join(f"{k} {v}" for k, v in r0["label_names"].items())
            desc = (f" shape {tuple(r0['shape'])}, spacing {tuple(r0['spacing'])} mm, "
                    f"prompt: {r0['prompt']}; structures: {names}")
        out += [f"**{case}**{desc}", "", case_table(runs, case), ""]
    out += ["![Mean Dice vs interactions](images/refine_curves.png)", "",
            "![Speed vs quality](images/refine_speed.png)", ""]
    return "\n".join(out)


def publish(text, *, notes=None, no_doc=False, start=START, end=END) -> None:
    """Append the notes file (markdown) to ``text``, then print it (``no_doc``) or write
    it between the ``start`` / ``end`` markers of docs/benchmarks.md."""
    if notes:
        text += "\n" + Path(notes).read_text()
    if no_doc:
        print(text)
    else:
        write_section(text, start=start, end=end)


def write_section(text, doc=DOC, start=START, end=END):
    src = doc.read_text()
    if start not in src:  # a new section goes at the end of the page
        src = src.rstrip() + "\n\n" + start + "\n" + end + "\n"
    i, j = src.index(start), src.index(end)
    doc.write_text(src[: i + len(start)] + "\n" + text.rstrip() + "\n" + src[j:])


# ---- issue 10: real-scan robustness -------------------------------------------------------
START10, END10 = "<!-- refine10:start -->", "<!-- refine10:end -->"
#: Held-out cases of the issue-10 split (benchmarks/PROTOCOL.md): never used for tuning.
HELD_OUT_PREFIXES = ("brats:2:", "ct512:")
HELD_OUT_LA_FROM = 10  # manifest positions 11-20 (0-based index >= 10)
HELD_OUT_ACDC = ("patient019", "patient022", "patient024", "patient028")


def held_out(case: str) -> bool:
    """Whether a case is in the issue-10 held-out set."""
    base = case.split("@")[0]
    if base.startswith(HELD_OUT_PREFIXES):
        return True
    if base.startswith("acdc:"):
        return base.split(":")[1].startswith(HELD_OUT_ACDC)
    if base.startswith("la:"):
        from .cases import _entries

        ids = [e["case"] for e in _entries("la_mri")]
        cid = base.split(":")[1]
        return cid in ids and ids.index(cid) >= HELD_OUT_LA_FROM
    return False


def _first(r):
    return r["mean_dice"][0] if "error" not in r else None


def _per_class(r, step=0):
    return " / ".join(f"{v:.3f}" for v in r["dice"][step])


def _run(runs, case, method):
    return next((r for r in runs if r["case"] == case and r["method"] == method), None)


def _peer_best(runs, case):
    peers = [r for r in _ok(runs) if r["case"] == case and is_peer(r)]
    return max(peers, key=_first) if peers else None


def _cell(r):
    if r is None:
        return "-"
    if "error" in r:
        return "error"
    return _f(_first(r))


def table10_prompts(runs, ours):
    """Scribbles vs boxes vs both, per base case, ours and best peer."""
    rows = ["| case | split | prompt | ours Dice (per structure) | ours mean | best peer "
            "(mean) | box+scribbles >= scribbles |",
            "|---|---|---|---|---|---|---|"]
    bases = []
    for r in _ok(runs):
        base = r["case"].split("@")[0].split(":")
        key = r["case"].split("@")[0] if "@" in r["case"] else (
            base[0] + ":" + ":".join(base[1:]) if base[0] not in ("ct", "ctsmall", "ct512")
            else base[0])
        if key not in bases:
            bases.append(key)
    for key in bases:
        group = [c for c in case_order(runs)
                 if (c.split("@")[0] == key and c.endswith(("@exact",)))
                 or c == key or (c.startswith(key + ":") and key in ("ct", "ctsmall", "ct512")
                                 and "@" not in c)]
        by_prompt = {}
        for case in group:
            r = _run(runs, case, ours)
            if r is None or "error" in r:
                continue
            prompt = r["prompt"]
            by_prompt[prompt] = r
        if len(by_prompt) < 2:
            continue
        s_only = by_prompt.get("scribbles")
        both = by_prompt.get("boxes+scribbles")
        ok = "-" if not (s_only and both) else _met(_first(both) >= _first(s_only) - 1e-9)
        for prompt, r in by_prompt.items():
            peer = _peer_best(runs, r["case"])
            rows.append(f"| {r['case']} | {'held-out' if held_out(r['case']) else 'tuning'} | "
                        f"{prompt} | {_per_class(r)} | {_f(_first(r))} | "
                        f"{_cell(peer)}{'' if peer is None else ' ' + peer['method'][6:]} | "
                        f"{ok if prompt == 'boxes+scribbles' else ''} |")
    return "\n".join(rows)


def table10_variants(runs, ours):
    """Inexact boxes: Dice after the initial prompts, drop vs exact."""
    limits = {"plus20": 0.02, "minus20": 0.04, "shifted": 0.04}
    bases = []
    for c in case_order(runs):
        if "@" in c and c.split("@")[0] not in bases:
            bases.append(c.split("@")[0])
    methods = [ours] + sorted({r["method"] for r in _ok(runs) if is_peer(r)
                               and "@" in r["case"]})
    rows = ["| case | split | method | exact | +20% (drop) | -20% (drop) | shifted (drop) "
            "| drops within target |", "|---|---|---|---|---|---|---|---|"]
    for base in bases:
        for m in methods:
            ex = _run(runs, f"{base}@exact", m)
            if ex is None and base.endswith(":boxes+scribbles"):
                ex = _run(runs, base, m)  # the protocol's boxes are the exact variant
            if ex is None or "error" in ex:
                continue
            cells, ok = [], True
            for v in ("plus20", "minus20", "shifted"):
                r = _run(runs, f"{base}@{v}", m)
                if r is None or "error" in r:
                    cells.append("-")
                    continue
                drop = _first(ex) - _first(r)
                ok &= drop <= limits[v]
                cells.append(f"{_f(_first(r))} ({drop:+.3f})")
            if all(c == "-" for c in cells):
                continue  # no inexact variant was run for this case
            rows.append(f"| {base} | {'held-out' if held_out(base) else 'tuning'} | {m} | "
                        f"{_f(_first(ex))} | {' | '.join(cells)} | "
                        f"{_met(ok) if m == ours else ''} |")
    return "\n".join(rows)


def table10_cases(runs, ours, prefix):
    """Per case: ours vs best peer after the initial prompts, NoC@0.90, seconds, RSS."""
    rows = ["| case | split | ours Dice (initial) | after k | NoC@0.90 | best peer (initial) "
            "| ours - best peer | s first call | s incremental (median) | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for case in case_order(runs):
        if not case.startswith(prefix) or "@" in case:
            continue
        r = _run(runs, case, ours)
        if r is None:
            continue
        if "error" in r:
            rows.append(f"| {case} | | error: {r['error'][:80]} | | | | | | | |")
            continue
        peer = _peer_best(runs, case)
        lead = "-" if peer is None else f"{_first(r) - _first(peer):+.3f}"
        inc = r.get("sec_incremental_median")
        rows.append(
            f"| {case} | {'held-out' if held_out(case) else 'tuning'} | {_per_class(r)} | "
            f"{_f(r['mean_dice'][-1])} ({len(r['mean_dice']) - 1}) | {_noc(r, 90)} | "
            f"{_cell(peer)}{'' if peer is None else ' ' + peer['method'][6:]} | {lead} | "
            f"{r['sec_first']:.1f} | {'-' if inc is None else f'{inc:.1f}'} | "
            f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(rows)


def table10_corrections(before_path, after_path, ours):
    """Dice after each corrective interaction, two engine commits on the same cases."""
    docs = [json.loads(Path(p).read_text()) for p in (before_path, after_path)]
    runs = [{r["case"]: r for r in d["runs"] if r["method"] == ours and "error" not in r}
            for d in docs]
    commits = [d["meta"].get("git_commit", "?")[:10] for d in docs]
    k = max(len(r["mean_dice"]) - 1 for d in runs for r in d.values())
    rows = [f"Same cases, prompts and simulated annotator; engine commit {commits[0]} "
            f"(before) vs {commits[1]} (after); `{ours}`, k = {k}; files "
            f"`{Path(before_path).name}`, `{Path(after_path).name}`.", "",
            "| case | split | before: Dice initial -> after each correction | after: Dice "
            "initial -> after each correction | gain of the corrections, before / after |",
            "|---|---|---|---|---|"]
    gains = [[], []]
    for case in [c for c in runs[0] if c in runs[1]]:
        cells = []
        for i, d in enumerate(runs):
            curve = d[case]["mean_dice"]
            gains[i].append(curve[-1] - curve[0])
            cells.append(" -> ".join(f"{v:.3f}" for v in curve))
        rows.append(f"| {case} | {'held-out' if held_out(case) else 'tuning'} | {cells[0]} | "
                    f"{cells[1]} | {gains[0][-1]:+.3f} / {gains[1][-1]:+.3f} |")
    rows.append(f"| mean | | | | {np.mean(gains[0]):+.3f} / {np.mean(gains[1]):+.3f} |")
    return "\n".join(rows)


def section10(runs, metas, ours, notes="", corrections=None):
    """The issue-10 section of docs/benchmarks.md."""
    commits = sorted({m.get("git_commit", "?")[:10] for m in metas})
    dirty = any(m.get("git_dirty") for m in metas)
    out = ["## Refinement on real scans (issue 10)", "",
           "Generated by `python -m benchmarks.report --issue10 ...` from "
           + ", ".join(f"`{m['file']}`" for m in metas)
           + f"; engine commit(s) {', '.join(commits)}"
           + (" (dirty tree!)" if dirty else "") + f"; judged method `{ours}`. "
           "Split: `benchmarks/PROTOCOL.md` (tuning / held-out declared before tuning). "
           "Dice = after the initial prompts unless said; peers get the same prompts in "
           "the same run. CPU only (no GPU in this session: GPU figures unmeasured).", ""]
    if notes:
        out += [notes.strip(), ""]
    out += ["### Prompts: scribbles, boxes, both", "", table10_prompts(runs, ours), "",
            "### Inexact boxes (boxes + scribbles)", "",
            "Targets: drop <= 0.02 at +20%, <= 0.04 at -20% or shifted, vs the exact box.", "",
            table10_variants(runs, ours), ""]
    if corrections:
        out += ["### Corrections: before and after this round's engine change", ""]
        for pair in corrections:
            out += [table10_corrections(*pair, ours), ""]
    for title, prefix in (("BRATS tumour regions (1 mm and 6 mm slices)", "brats:"),
                          ("Small organs of the shipped CT", "ctsmall:"),
                          ("Full-size CT (300 x 512 x 512, resampled from the shipped CT)",
                           "ct512:"),
                          ("Shipped CT organs at 3 mm (reference for the full-size CT)", "ct:"),
                          ("Left atrium", "la:"), ("ACDC", "acdc:")):
        table = table10_cases(runs, ours, prefix)
        if table.count("\n") > 1:
            out += [f"### {title}", "", table, ""]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.report")
    p.add_argument("results", nargs="+", help="result JSONs of bench_refine")
    p.add_argument("--ours", nargs="+", default=["ours:auto"],
                   help="our method(s) judged against the targets")
    p.add_argument("--notes", default=None, help="markdown file with notes to include")
    p.add_argument("--no-doc", action="store_true", help="print instead of writing docs")
    p.add_argument("--issue10", action="store_true",
                   help="write the issue-10 section (real scans) instead of the refine one")
    p.add_argument("--corrections", nargs=2, action="append", metavar=("BEFORE", "AFTER"),
                   help="issue 10: result JSONs of two engine commits on the same cases "
                        "(repeatable)")
    a = p.parse_args(argv)
    runs, metas = load_runs(a.results)
    notes = Path(a.notes).read_text() if a.notes else ""
    if a.issue10:
        text = section10(runs, metas, a.ours[0], notes, a.corrections)
        if a.no_doc:
            print(text)
        else:
            write_section(text, start=START10, end=END10)
            print(f"wrote the issue-10 section of {DOC.relative_to(ROOT)}")
        return 0
    text = section(runs, metas, a.ours, notes)
    if a.no_doc:
        print(text)
        return 0
    IMAGES.mkdir(parents=True, exist_ok=True)
    plot_curves(runs, IMAGES / "refine_curves.png")
    plot_speed(runs, IMAGES / "refine_speed.png")
    write_section(text)
    print(f"wrote {DOC.relative_to(ROOT)} and docs/images/refine_*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
