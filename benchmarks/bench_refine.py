"""Refinement benchmark: our engine vs classic peers under the simulated annotator.

Implements ``benchmarks/PROTOCOL.md``: initial weak labels (scribbles, boxes or both,
per case), refine, then up to ``k`` corrective interactions with a refinement after
each (our methods pass ``state`` for incremental calls). Every (case, method) pair runs
in a fresh subprocess by default, so its peak RSS is its own; the weak labels are
deterministic, so every method of a run gets exactly the same ones.

Example::

    python -m benchmarks.bench_refine --cases mni2 mni2wm la:5 \\
        --methods ours:auto ours:randomwalk ours:hybrid peers:all --k 10 \\
        --out benchmarks/results/refine_cpu.json

Recorded per run: Dice per structure and mean after the initial labels and after each
interaction, NoC@0.85/0.90, seconds per refine call (in-process, loading excluded;
median and max; for our engine also the time to its first usable result and the number
of full-resolution solves of each call) and the CPU seconds of each call (all threads; less sensitive to a
busy machine than wall time), peak RSS (``ru_maxrss`` of the subprocess) and RSS before the first
call, peak GPU memory (``torch.cuda.max_memory_allocated``) on CUDA, the load average
at each call, and the machine (CPU, cores, torch, device), date and git commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import psutil

from .annotator import (box_variant_prompts, corrective_interaction,
                        dice_per_class, initial_scribbles, noc)
from .cases import case_names, load_case

THRESHOLDS = (0.85, 0.90)


# ---- methods -------------------------------------------------------------------------
def expand_methods(specs) -> list[str]:
    """``ours:<engine method>`` stays; ``peers:all`` expands to every peer;
    ``peers:a,b`` to the named ones."""
    from .peers import PEERS

    out = []
    for spec in specs:
        kind, _, name = spec.partition(":")
        if kind == "ours" and name:
            out.append(spec)
        elif kind == "peers" and name:
            names = list(PEERS) if name == "all" else name.split(",")
            unknown = sorted(set(names) - set(PEERS))
            if unknown:
                raise SystemExit(f"unknown peer(s) {unknown}; known: {sorted(PEERS)}")
            out += [f"peers:{n}" for n in names]
        else:
            raise SystemExit(f"method spec {spec!r}: use ours:<method> or peers:all|<names>")
    return out


class _Ours:
    """Our engine, carrying ``state`` from one call to the next; records per call the
    time to the first usable result (``Progress.preview``), to the final one, and the
    solves (``info["solves"]``)."""

    def __init__(self, method, device):
        from napari_labeleff.engine import refine_steps

        self.refine_steps, self.method, self.device = refine_steps, method, device
        self.result = None
        self.calls = []

    def __call__(self, image, scribbles, spacing, boxes=None):
        t0 = time.perf_counter()
        gen = self.refine_steps(
            image, scribbles, spacing=spacing, boxes=boxes, method=self.method,
            device=self.device,
            state=None if self.result is None else self.result.state)
        first = None
        while True:
            try:
                report = next(gen)
            except StopIteration as stop:
                self.result = stop.value
                break
            if report.preview is not None and first is None:
                first = time.perf_counter() - t0
        total = time.perf_counter() - t0
        solves = self.result.info.get("solves", {})
        self.calls.append({"first_s": total if first is None else first, "final_s": total,
                           "full_resolution_solves": solves.get("full_resolution"),
                           "solves": solves.get("total"),
                           "by_stage": solves.get("by_stage")})
        return self.result.labels

    def info(self):
        r = self.result
        keep = {k: v for k, v in r.info.items()
                if isinstance(v, (str, int, float, bool, list, type(None)))
                or k in ("multiscale", "timings", "prior_select_scores")}
        return {"method": r.method, "device": r.device, **keep}


def make_method(spec, device):
    kind, _, name = spec.partition(":")
    if kind == "ours":
        return _Ours(name, device)
    from .peers import PEERS

    return PEERS[name]


# ---- one (case, method) run ------------------------------------------------------------
def _gpu_peak_mb(device):
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def run_one(case_name, spec, k=10, device="auto", seed=0, budget=None):
    """Run the protocol for one case and one method; returns a JSON-able dict."""
    case = load_case(case_name)
    gt, K = case.gt, case.n_structures
    scribbles = (initial_scribbles(gt, seed=seed) if "scribbles" in case.prompt
                 else np.zeros(gt.shape, dtype=np.int16))
    boxes = (box_variant_prompts(gt, case.box_variant, seed=seed)
             if "boxes" in case.prompt else None)
    fn = make_method(spec, device)
    image = case.image
    if not isinstance(fn, _Ours) and image.ndim == 4:
        image = image[case.peer_channel]
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    rss0 = psutil.Process().memory_info().rss / 2**20
    dice, secs, cpu, loads, steps = [], [], [], [], []
    stopped = "k reached"
    t_start = time.perf_counter()
    for i in range(k + 1):
        if i:
            nxt = corrective_interaction(gt, pred, scribbles)
            if nxt is None:
                stopped = "no error left to correct"
                break
            scribbles, info = nxt
            steps.append(info)
        loads.append(os.getloadavg()[0])
        t0, c0 = time.perf_counter(), time.process_time()
        pred = fn(image, scribbles, case.spacing, boxes)
        secs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        dice.append(dice_per_class(gt, pred, K).tolist())
        if budget is not None and time.perf_counter() - t_start > budget and i < k:
            stopped = f"time budget {budget:.0f} s spent after {i} interaction(s)"
            break
    mean = [float(np.mean(d)) for d in dice]
    out = {
        "case": case.name, "method": spec, "prompt": case.prompt, "K": K,
        "label_names": case.label_names, "shape": list(gt.shape),
        "spacing": list(case.spacing), "voxels": int(gt.size), "notes": case.notes,
        "n_boxes": len(boxes or []), "box_variant": case.box_variant,
        "dice": dice, "mean_dice": mean,
        "interactions": steps, "stopped": stopped,
        "seconds": secs, "sec_median": float(np.median(secs)), "sec_max": max(secs),
        "sec_first": secs[0], "cpu_seconds": cpu,
        "sec_incremental_median": float(np.median(secs[1:])) if len(secs) > 1 else None,
        "load_avg": loads, "rss_before_mb": rss0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": _gpu_peak_mb(device),
    }
    for t in THRESHOLDS:
        out[f"noc{round(t * 100)}"] = noc(mean, t)
    if isinstance(fn, _Ours):
        out["engine"] = fn.info()
        out["calls"] = fn.calls
        out["sec_first_result"] = [c["first_s"] for c in fn.calls]
    return out


def _child(queue, args, fn=None):
    try:
        queue.put((fn or run_one)(*args))
    except Exception as exc:  # reported in the results, the run goes on
        queue.put({"case": args[0], "method": args[1],
                   "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=4)})


def run_isolated(args, timeout, fn=None):
    """:func:`run_one` (or ``fn``, a module-level function) in a fresh spawned process
    (clean peak RSS, hard timeout)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, args, fn))
    proc.start()
    try:
        return queue.get(timeout=timeout)
    except Exception:
        return {"case": args[0], "method": args[1],
                "error": f"timeout: no result after {timeout} s"}
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


# ---- machine -------------------------------------------------------------------------
def machine_info(device):
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "platform": platform.platform(), "ram_gb": psutil.virtual_memory().total / 2**30,
        "device_requested": device, "cuda": torch.cuda.is_available(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_avg_start": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        root = Path(__file__).resolve().parents[1]
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
            check=True).stdout.strip()
        info["git_dirty"] = bool(subprocess.run(
            ["git", "status", "--porcelain", "napari_labeleff", "benchmarks"], cwd=root,
            capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


# ---- CLI -------------------------------------------------------------------------------
def _short(r):
    if "error" in r:
        return f"{r['case']:<28} {r['method']:<20} ERROR {r['error']}"
    m = r["mean_dice"]
    first = (f"first {r['sec_first_result'][0]:.2f} s "
             if r.get("sec_first_result") else "")
    return (f"{r['case']:<28} {r['method']:<20} dice {m[0]:.3f} -> {m[-1]:.3f} {first}"
            f"({len(m) - 1} int.) NoC90 {r['noc90']} s/call med {r['sec_median']:.2f} "
            f"max {r['sec_max']:.2f} RSS {r['peak_rss_mb']:.0f} MB "
            f"load {np.mean(r['load_avg']):.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_refine",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", required=True,
                   help="case specs (see benchmarks/cases.py), e.g. mni2 mni2wm la:5")
    p.add_argument("--methods", nargs="+", required=True,
                   help="ours:<method> (auto, randomwalk, hybrid, ...) and peers:all or "
                        "peers:<name>[,<name>...]")
    p.add_argument("--k", type=int, default=10, help="corrective interactions (10)")
    p.add_argument("--peer-k", type=int, default=None,
                   help="corrective interactions for the peers (default: --k); they run in the "
                        "same invocation, on the same weak labels")
    p.add_argument("--device", default="auto", help="device for our engine (auto/cpu/cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=None,
                   help="stop a run's interactions once it has spent this many seconds")
    p.add_argument("--timeout", type=float, default=3600,
                   help="hard limit per (case, method) subprocess, seconds")
    p.add_argument("--in-process", action="store_true",
                   help="run everything in this process (peak RSS is then shared)")
    p.add_argument("--out", required=True, help="result JSON (rewritten after each run)")
    a = p.parse_args(argv)

    methods = expand_methods(a.methods)
    cases = [n for spec in a.cases for n in case_names(spec)]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    peer_k = a.k if a.peer_k is None else a.peer_k
    doc = {"meta": {**machine_info(a.device), "k": a.k, "peer_k": peer_k, "seed": a.seed,
                    "budget_s": a.budget, "isolated": not a.in_process,
                    "command": " ".join(["python -m benchmarks.bench_refine", *sys.argv[1:]]
                                        if argv is None else argv)},
           "runs": []}
    for case in cases:
        for spec in methods:
            k = a.k if spec.startswith("ours:") else peer_k
            args = (case, spec, k, a.device, a.seed, a.budget)
            r = run_one(*args) if a.in_process else run_isolated(args, a.timeout)
            doc["runs"].append(r)
            doc["meta"]["load_avg_end"] = os.getloadavg()
            out.write_text(json.dumps(doc, indent=1))
            print(_short(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
