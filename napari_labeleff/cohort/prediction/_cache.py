"""One loaded model per process (batch-job workers, label QA)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

_MODEL_CACHE: dict = {}
_MODEL_LOADS = {"n": 0}
_CACHE_LOCK = threading.Lock()


def cached_model(checkpoint_dir: str, device: str = "auto"):
    """The model of ``checkpoint_dir``, loaded once per process (per device and weights
    file version): every task on a worker after the first reuses it."""
    from ._model import load_model

    weights = Path(checkpoint_dir) / "model.pt"
    key = (os.path.abspath(checkpoint_dir), device,
           weights.stat().st_mtime_ns if weights.exists() else None)
    with _CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE.clear()
            _MODEL_CACHE[key] = load_model(checkpoint_dir, device=device)
            _MODEL_LOADS["n"] += 1
        return _MODEL_CACHE[key]


def model_loads() -> int:
    """Models this process has loaded so far (a check that the cache works)."""
    return _MODEL_LOADS["n"]
