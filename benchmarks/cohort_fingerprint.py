"""A deterministic fingerprint of the cohort code path (behaviour-unchanged check).

A tiny synthetic project (3 volumes: an accepted mask, scribbles that go through the
graph method's pseudo-labels, one unlabeled volume for the mean teacher) is trained
twice on the CPU with a fixed seed and step count (first run: pretraining + mean
teacher; second run: warm start from the published model + self-training), then every
volume is predicted (``Project.predict``) and run through the serial batch jobs. The
script prints one JSON object of SHA-256 hashes: the weights of each model version,
the training logs (losses, without times), the configs (without times, pids, commit),
the publish decisions, each prediction (labels, probabilities, scores) and the job
outputs. Two code versions behave the same on this path when the hashes are equal.

Uses only the public API (``napari_labeleff.cohort``), so it runs unchanged before and
after a reshaping of the package::

    OMP_NUM_THREADS=1 python -m benchmarks.cohort_fingerprint [--json OUT]

Run with one thread: floating-point sums in other thread counts differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

VOLATILE = {"seconds", "pid", "cpu_seconds", "peak_rss_mb", "code_commit", "t", "started",
            "created", "threads", "num_threads", "max_minutes", "time", "op"}


def _h(data) -> str:
    if isinstance(data, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(data).tobytes() + str(data.dtype).encode()
                              + str(data.shape).encode()).hexdigest()[:16]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _volume(seed, shape=(16, 32, 32)):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    ball = ((z - 8) ** 2 + (y - 12 - seed % 5) ** 2 + (x - 10) ** 2) <= 16
    plate = (np.abs(x - 24) <= 1) & (y >= 4) & (y < 28) & (z >= 3) & (z < 13)
    image = (100.0 * (ball | plate) + rng.normal(0.0, 12.0, shape)).astype(np.float32)
    return image, ball.astype(np.uint8)


def _model_hash(folder: Path) -> str:
    import torch

    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(work: Path) -> dict:
    import torch

    from napari_labeleff.cohort import Project
    from napari_labeleff.io import Geometry, write_volume

    torch.set_num_threads(1)
    data = work / "data"
    data.mkdir()
    paths, truth = [], {}
    for i in range(3):
        image, gt = _volume(100 + i)
        path = data / f"vol{i}.nii.gz"
        write_volume(path, image, Geometry.from_spacing((1.0, 1.0, 1.0)))
        paths.append(path)
        truth[f"vol{i}"] = gt
    out = {}
    common = {"device": "cpu", "seed": 3, "num_threads": 1, "patch_size": (16, 32, 32),
              "features": (4, 8, 16, 32, 32, 4), "batch_size": 1, "val_every": 4}
    with Project.create(work / "project", ["ball"]) as p:
        for path in paths:
            p.add(path)
        p.accept("vol0", truth["vol0"])
        scr = np.zeros(truth["vol1"].shape, np.uint8)
        zz = 8
        cy, cx = np.argwhere(truth["vol1"][zz]).mean(axis=0).astype(int)
        scr[zz, cy - 1: cy + 2, cx - 1: cx + 2] = 2
        scr[zz, 1, :] = 1
        scr[zz, :, 30] = 1
        p.set_weak_labels("vol1", scr)
        r1 = p.train(max_minutes=30, max_steps=8, pretrain=True, semi=True, **common)
        r2 = p.train(max_minutes=30, max_steps=8, semi=False, self_training=0.25, **common)
        for r in (r1, r2):
            folder = p.model_dir(r.version)
            out[f"train {r.version}"] = {
                "published": r.published, "score": r.score, "previous_score": r.previous_score,
                "steps": r.train.steps,
                "weights": _model_hash(folder),
                "log": _h(_strip([json.loads(line) for line in
                                  (folder / "train_log.jsonl").read_text().splitlines()])),
                "config": _h(_strip(json.loads((folder / "config.json").read_text()))),
            }
        out["published"] = str(p.published)
        for vid in p.volume_ids:
            pred = p.predict(vid, device="cpu")
            out[f"predict {vid}"] = {"labels": _h(pred.labels), "probabilities": _h(pred.probabilities),
                                     "uncertainty": _h(pred.uncertainty),
                                     "scores": _h(pred.scores)}
        out["table"] = _h(_strip([{k: v for k, v in row.items() if k != "path"} for row in p.table()]))
    from napari_labeleff.cohort import Project as P2

    # batch jobs read the project (serial scheduler: this process)
    try:
        from napari_labeleff.cohort.jobs import run_job
    except ImportError:  # before the reshaping
        from napari_labeleff.cohort._jobs import run_job
    import nibabel as nib

    with P2.open(work / "project", read_only=True) as p:
        rep = run_job(p, "predict", out=work / "pred", scheduler="serial", device="cpu")
        out["job predict"] = {v: _h(np.asarray(nib.load(path).dataobj)) for v, path in
                              sorted(rep.outputs.items())}
        rep = run_job(p, "export", out=work / "export", scheduler="serial")
        out["job export"] = {v: _h(np.asarray(nib.load(path).dataobj)) for v, path in
                             sorted(rep.outputs.items())}
    return out


def _code_version() -> dict:
    """Commit of the napari_labeleff that ran, and whether its tree was clean."""
    import subprocess

    import napari_labeleff

    here = str(Path(napari_labeleff.__file__).parent)

    def git(*args):
        out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": git("rev-parse", "HEAD"), "clean": status == ""}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the fingerprint here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fp = fingerprint(Path(tmp))
    fp["code"] = _code_version()
    text = json.dumps(fp, indent=1, sort_keys=True)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
