"""Disk use of the annotation history on the shipped brain sample, for 20 edits.

Three scripted sessions of 20 saves each on the brain sample (80 x 95 x 77 voxels,
uint8 scribbles, 16 x 64 x 64 chunks):

* ``strokes``: 20 brush strokes (a disk of radius 4 on one slice, a structure or the
  background), each saved like napari's autosave (the touched chunks only);
* ``final mask``: the reference segmentation accepted as the final mask, then 19 saves
  of it after a small correction each (napari saves the whole mask after each pause);
* ``mixed``: 10 strokes, 5 final-mask saves, a class added and renamed, boxes, a
  reviewed suggestion and a class removal.

Each runs twice: with the default history (20 generations) and with ``history_limit=1``
(only the current state; the same store without a history to go back to). Reported:
the bytes of the store (every file counted once, hard links included; apparent size
and allocated blocks), how much of it is history (records, and blobs that no current
array shares), and what keeping 20 full copies of the arrays would cost instead.
Deterministic (fixed seeds); no timing.

Usage::

    python -m benchmarks.bench_history_disk [--json benchmarks/results/history_disk.json] \\
        [--update-docs]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GUIDE = ROOT / "docs" / "formats.md"
MARK_START, MARK_END = "<!-- history-disk:start -->", "<!-- history-disk:end -->"
N_EDITS = 20


def _disk(store: Path) -> dict:
    """Bytes of ``store`` with every inode counted once, split by role."""
    seen: dict[tuple, dict] = {}
    for path in store.rglob("*"):
        if not path.is_file():
            continue
        st = path.stat()
        key = (st.st_dev, st.st_ino)
        rel = path.relative_to(store).as_posix()
        entry = seen.setdefault(key, {"size": st.st_size, "blocks": st.st_blocks * 512, "names": []})
        entry["names"].append(rel)
    out = {"files": len(seen), "apparent_bytes": 0, "allocated_bytes": 0,
           "history_records_bytes": 0, "history_only_blob_bytes": 0, "current_arrays_bytes": 0}
    for entry in seen.values():
        out["apparent_bytes"] += entry["size"]
        out["allocated_bytes"] += entry["blocks"]
        names = entry["names"]
        if all(n.startswith("history/blobs/") for n in names):
            out["history_only_blob_bytes"] += entry["size"]
        elif all(n.startswith("history/") for n in names):
            out["history_records_bytes"] += entry["size"]
        if any(n.startswith(("scribbles", "masks/")) for n in names):
            out["current_arrays_bytes"] += entry["size"]
    return out


def _disk_brush(shape, rng):
    z = int(rng.integers(0, shape[0]))
    cy, cx = (int(rng.integers(8, n - 8)) for n in shape[1:])
    yy, xx = np.ogrid[: shape[1], : shape[2]]
    return z, (yy - cy) ** 2 + (xx - cx) ** 2 <= 16


def run(scenario: str, limit: int | None, folder: Path) -> dict:
    from napari_labeleff.io import load_sample
    from napari_labeleff.session import AnnotationSession

    sample = load_sample("brain")
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = AnnotationSession.open(sample.volume.data, sample.volume.geometry, store_dir=folder)
    if limit is not None:
        s.set_history_limit(limit)
    for name, color in zip(sample.class_names[1:], sample.colors[1:]):
        s.add_class(name, color)
    s.scribbles[...] = sample.scribbles
    s.save_scribbles()
    start = s.history()[0].id
    k = len(s.classes) - 1
    final = sample.labels.copy()

    def stroke():
        z, brush = _disk_brush(s.shape, rng)
        s.scribbles[z][brush] = int(rng.integers(1, k + 2))
        s.save_scribbles((slice(z, z + 1),))

    def mask_save(first=False):
        if not first:
            z, brush = _disk_brush(s.shape, rng)
            final[z][brush] = int(rng.integers(0, k + 1))
        s.save_mask("final", final)

    if scenario == "strokes":
        for _ in range(N_EDITS):
            stroke()
    elif scenario == "final mask":
        mask_save(first=True)
        for _ in range(N_EDITS - 1):
            mask_save()
    else:
        for i in range(10):
            stroke()
        mask_save(first=True)
        for _ in range(4):
            mask_save()
        c = s.add_class("extra")
        s.rename_class(c, "extra 2")
        s.set_boxes([(1, 10, 10, 10, 40, 60, 50)])
        s.add_reviewed({"kind": "slice", "index": 3}, "confirmed")
        s.remove_class(c, force=True)
    edits = s.history()[0].id - start  # generations the 20 edits made
    kept = len(s.history())
    disk = _disk(s.store_path)
    array_bytes = disk["current_arrays_bytes"]
    s.close()
    return {"scenario": scenario, "history_limit": limit or s.history_limit, "edits_recorded": edits,
            "generations_kept": kept,
            **disk, "full_copies_20_bytes": 20 * array_bytes}


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, cwd=ROOT).stdout.strip())
    return {"commit": commit or None, "dirty_tree": dirty,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "platform": sys.platform}


def markdown(report: dict) -> str:
    m = report["machine"]
    rows = []
    by = {(r["scenario"], r["history_limit"]): r for r in report["runs"]}
    for scenario in ("strokes", "final mask", "mixed"):
        full = by[(scenario, 20)]
        one = by[(scenario, 1)]
        rows.append(
            f"| {scenario} | {full['edits_recorded']} | {full['generations_kept']} | "
            f"{full['apparent_bytes'] / 1024:.0f} | "
            f"{full['allocated_bytes'] / 1024:.0f} | {one['apparent_bytes'] / 1024:.0f} | "
            f"{one['allocated_bytes'] / 1024:.0f} | "
            f"{(full['history_only_blob_bytes'] + full['history_records_bytes']) / 1024:.0f} | "
            f"{full['full_copies_20_bytes'] / 1024:.0f} |"
        )
    return "\n".join([
        f"Measured by `benchmarks/bench_history_disk.py` on the shipped brain sample "
        f"(80 x 95 x 77 voxels), commit `{(m['commit'] or 'unknown')[:10]}`, {m['date'][:10]}. "
        "KiB; every file counted once (an array's chunk and its history blob are one file). "
        "*Apparent*: the files' sizes; *allocated*: the blocks the file system gave them "
        "(at least 4 KiB per small file on ext4).",
        "",
        "| 20 edits of | generations made | generations kept (limit 20) | store, 20 kept: apparent | allocated | "
        "store, 1 kept: apparent | allocated | history's own bytes (20 kept) | "
        "20 full copies of the arrays instead |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the report here")
    p.add_argument("--from-json", help="only regenerate the docs from this report")
    p.add_argument("--update-docs", action="store_true")
    args = p.parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        report = {"machine": machine(), "edits": N_EDITS, "runs": []}
        with tempfile.TemporaryDirectory() as tmp:
            for scenario in ("strokes", "final mask", "mixed"):
                for limit in (None, 1):
                    folder = Path(tmp) / f"{scenario}-{limit}".replace(" ", "_")
                    os.environ["XDG_DATA_HOME"] = str(folder / "xdg")  # a private user index
                    report["runs"].append(run(scenario, limit, folder))
                    print(json.dumps(report["runs"][-1]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.update_docs:
        from benchmarks.report import write_section

        write_section(markdown(report), doc=GUIDE, start=MARK_START, end=MARK_END)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
