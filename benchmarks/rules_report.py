"""Generate the results section of ``docs/rules.md`` from ``benchmarks/results/rules_*.json``.

Usage::

    python -m benchmarks.rules_report            # rewrites the generated part of docs/rules.md
    python -m benchmarks.rules_report --print    # prints it

Only the text between the markers ``<!-- rules-report:start -->`` and
``<!-- rules-report:end -->`` is replaced; every number comes from the result files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "rules.md"
START, END = "<!-- rules-report:start -->", "<!-- rules-report:end -->"


def _load(name):
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else None


def _commit(res) -> str:
    m = res.get("machine", {})
    return f"commit `{m.get('git_commit', '?')[:7]}`" + (" (dirty tree)" if m.get("git_dirty") else "")


def _cine(res) -> list[str]:
    runs = res["runs"]
    tune = tuple(res.get("tune_patients", ()))
    names = None
    by = {}
    for r in runs:
        names = names or [r["label_names"][k] for k in sorted(r["label_names"], key=int)]
        by.setdefault(r["case"], {})[r["arm"]] = r
    groups = {"all": list(by), "tuning (" + ", ".join(tune) + ")":
              [c for c in by if any(t in c for t in tune)],
              "held out": [c for c in by if not any(t in c for t in tune)]}
    out = [f"Cine MRI (ACDC, {len(by)} volumes, both frames of each patient; {_commit(res)}). "
           "Each arm: the protocol's initial scribbles, then up to "
           f"{max(len(r['steps']) for r in runs) - 1} corrective strokes on its own errors; "
           "the same engine (`randomwalk`, CPU) with and without "
           "`Rules.template(\"cardiac\", names)`. Dice after the last step (after the initial "
           "scribbles in brackets); violations = rule violations of the cardiac template in "
           "the final masks (both arms checked with the same rules).", ""]
    head = "| cases | arm | " + " | ".join(names) + " | mean | violations (masks with any) |"
    out += [head, "|" + "---|" * (len(names) + 4)]
    target = ""
    for g, cases in groups.items():
        if not cases:
            continue
        means = {}
        for arm in ("none", "rules"):
            fin = np.array([by[c][arm]["steps"][-1]["dice"] for c in cases])
            ini = np.array([by[c][arm]["steps"][0]["dice"] for c in cases])
            viol = [by[c][arm]["steps"][-1]["violations"] for c in cases]
            means[arm] = (fin.mean(0), ini.mean(0))
            cells = [f"{f:.3f} ({i:.3f})" for f, i in zip(fin.mean(0), ini.mean(0))]
            cells.append(f"{fin.mean():.3f} ({ini.mean():.3f})")
            out.append(f"| {g} ({len(cases)}) | {arm} | " + " | ".join(cells)
                       + f" | {sum(viol)} ({sum(v > 0 for v in viol)}) |")
        d_f = means["rules"][0] - means["none"][0]
        d_i = means["rules"][1] - means["none"][1]
        cells = [f"{f:+.3f} ({i:+.3f})" for f, i in zip(d_f, d_i)]
        cells.append(f"{d_f.mean():+.3f} ({d_i.mean():+.3f})")
        out.append(f"| {g} | rules - none | " + " | ".join(cells) + " | |")
        if g == "all":
            myo = next((i for i, n in enumerate(names) if "myocard" in n.lower()), None)
            viol = sum(by[c]["rules"]["steps"][-1]["violations"] for c in cases)
            verdict = (d_f.mean() >= 0.05 and (myo is None or d_f[myo] >= 0.05) and viol == 0)
            target = (f"Issue 21 target on all volumes (mean Dice >= +0.05, myocardium >= +0.05, "
                      f"0 violations in the final masks): **{'met' if verdict else 'not met'}** "
                      f"(mean {d_f.mean():+.3f}, "
                      + (f"myocardium {d_f[myo]:+.3f}, " if myo is not None else "")
                      + f"{viol} violations).")
    if target:
        out += ["", target]
    shares = [s["rules_share"] for r in runs if r["arm"] == "rules" for s in r["steps"]]
    rs = sum(s["rules_s"] for r in runs if r["arm"] == "rules" for s in r["steps"])
    tot = sum(s["total_s"] for r in runs if r["arm"] == "rules" for s in r["steps"])
    first = [r["steps"][0]["rules_share"] for r in runs if r["arm"] == "rules"]
    later = [s["rules_share"] for r in runs if r["arm"] == "rules" for s in r["steps"][1:]]
    conflicts = sum(len(s.get("conflicts", [])) for r in runs if r["arm"] == "rules"
                    for s in r["steps"])
    unresolved = sum(len(s.get("unresolved", [])) for r in runs if r["arm"] == "rules"
                     for s in r["steps"])
    out += ["", "Cost of the rules, measured in-process (`info[\"rules\"][\"seconds\"]` over "
            "`info[\"timings\"][\"total_s\"]` of the same call, on shared CPU cores; a ratio, "
            "not a latency benchmark): "
            f"first call of a volume median {np.median(first):.1%} (max {max(first):.1%}); "
            f"correction calls (incremental, much shorter) median {np.median(later):.1%} "
            f"(max {max(later):.1%}); all {len(shares)} calls together {rs / tot:.1%} of the "
            f"refine time; {sum(v > 0.2 for v in shares)} of the {len(shares)} calls spent more "
            "than 20% in the rules (issue 21 target: rules add <= 20% to a refine call: "
            f"**{'met' if max(shares) <= 0.2 else 'not met for every call'}**). Reported "
            f"stroke conflicts: {conflicts}; rules left unresolved: {unresolved} (over all "
            "calls)."]
    return out


def _brats(res) -> list[str]:
    runs = res["runs"]
    by = {}
    for r in runs:
        by.setdefault(r["case"], {})[r["arm"]] = r
    regions = ["whole tumour", "tumour core", "enhancing tumour"]
    out = [f"BRATS dev (2 patients, T1c + FLAIR, cropped to the tumour's box + 20 voxels; "
           f"{_commit(res)}): classes edema / core outside the enhancing tumour / enhancing "
           "tumour, `Rules.template(\"brain_tumour\", ...)` (enhancing part of core part of "
           "whole tumour, one piece each for whole tumour and core). Region Dice after the "
           "last step (after the initial scribbles in brackets).", "",
           "| case | arm | " + " | ".join(regions) + " | violations |",
           "|" + "---|" * (len(regions) + 3)]
    for case, arms in by.items():
        for arm in ("none", "rules"):
            s = arms[arm]["steps"]
            cells = [f"{s[-1]['region_dice'][k]:.3f} ({s[0]['region_dice'][k]:.3f})"
                     for k in regions]
            out.append(f"| {case} | {arm} | " + " | ".join(cells) + f" | {s[-1]['violations']} |")
        d = [arms["rules"]["steps"][-1]["region_dice"][k] - arms["none"]["steps"][-1]["region_dice"][k]
             for k in regions]
        out.append(f"| {case} | rules - none | " + " | ".join(f"{v:+.3f}" for v in d) + " | |")
    deltas = {k: np.mean([arms["rules"]["steps"][-1]["region_dice"][k]
                          - arms["none"]["steps"][-1]["region_dice"][k] for arms in by.values()])
              for k in ("tumour core", "enhancing tumour")}
    ok = all(v >= 0.05 for v in deltas.values())
    out += ["", "Issue 21 target (core and enhancing Dice >= +0.05 over no rules, mean of the "
            f"two patients): **{'met' if ok else 'not met'}** (core {deltas['tumour core']:+.3f}, "
            f"enhancing {deltas['enhancing tumour']:+.3f})."]
    return out


def _learn(res) -> list[str]:
    d = res["learn"]
    out = [f"Rule learning from the reference masks of {len(d['cases'])} accepted cine volumes "
           f"({', '.join(c.split(':')[1] for c in d['cases'])}; {_commit(res)}), proposals with "
           "support >= 50%:", "", "| proposal | support | in the cardiac template |", "|---|---|---|"]
    for p in d["proposals"]:
        k, n = p["support"]
        out.append(f"| {p['text'].rsplit(':', 1)[0]} | {k} of {n} | "
                   f"{'yes' if p['in_template'] else 'no'} |")
    out += ["", f"False rules at full support: {len(d['false_at_full_support'])}"
            + (f" ({'; '.join(d['false_at_full_support'])})" if d["false_at_full_support"] else "")
            + " (\"touches\" between a class and the ring it lies inside counts as true). "
            "Template rules not proposed at full support: "
            + ("; ".join(d["template_rules_missed_at_full_support"]) or "none") + "."]
    return out


def _qa(res) -> list[str]:
    q = res["qa"]
    ok = q["precision"] >= 0.9 and q["recall"] >= 0.9
    out = [f"Label QA ({_commit(res)}; issue 21 target precision and recall >= 0.9: "
           f"**{'met' if ok else 'not met'}**): {q['masks']} ACDC reference masks, {q['faulty']} of them "
           "with an injected fault (cavity leaking through its ring, a second RV piece, RV "
           "painted into the LV cavity), checked with the cardiac template: precision "
           f"{q['precision']:.2f}, recall {q['recall']:.2f} (flagged correctly {q['tp']}, "
           f"wrongly {q['fp']}, missed {q['fn']}).", "",
           "| mask | message |", "|---|---|"]
    for i in q["items"]:
        out.append(f"| {i['id'].split(':')[1]} | {i['message']} |")
    given = q.get("references_breaking_rules_as_given", {})
    if given:
        out += ["", f"{len(given)} of the 20 reference masks break a template rule as given "
                "(so they were left out of the clean pool):", ""]
        for k, msgs in given.items():
            out.append(f"- {k.split(':')[1]}: " + "; ".join(msgs))
    return out


def report() -> str:
    parts = []
    for name, fn in (("rules_cine.json", _cine), ("rules_brats.json", _brats),
                     ("rules_learn.json", _learn), ("rules_qa.json", _qa)):
        res = _load(name)
        if res is not None:
            parts += [f"### From `benchmarks/results/{name}`", "", *fn(res), ""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--print", action="store_true")
    args = ap.parse_args(argv)
    text = report()
    if args.print:
        print(text)
        return
    doc = DOC.read_text()
    a, b = doc.index(START) + len(START), doc.index(END)
    DOC.write_text(doc[:a] + "\n" + text + doc[b:])
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()
