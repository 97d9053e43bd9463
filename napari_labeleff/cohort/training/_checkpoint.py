"""Checkpoint and resume files: written atomically, read without running code.

A checkpoint folder (``models/<version>/``) holds ``model.pt`` (a state dict of
tensors) and ``config.json``; a run folder holds ``resume.pt`` (weights, optimiser
state and run counters: tensors, dicts, lists, strings and numbers only). Both are read
with ``torch.load(..., weights_only=True)``: a file that needs anything else to
unpickle (a class, a function: what a crafted file would use to run code on the
machine of whoever opens a shared project) is refused with a clear error, and nothing
in it runs. Nothing random is kept: every random draw derives from (seed, step).
"""

from __future__ import annotations

import json
import os

import torch

from ..._errors import LabelEffError

REQUIRED_FILES = ("model.pt", "config.json")
_CONFIG_KEYS = ("network", "features", "in_channels", "n_classes", "class_names",
                "target_spacing", "patch_size")


def safe_load(path, what: str):
    """``torch.load(path, weights_only=True)`` on the CPU, with clear errors.

    Parameters
    ----------
    path : str
    what : str
        Words for messages, e.g. ``"resume state 'runs/r1/resume.pt'"``.

    Raises
    ------
    LabelEffError
        The file holds more than tensors and plain containers (it could run code when
        unpickled: refused, nothing of it ran), or it is damaged.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure is named below
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise LabelEffError(
                f"{what} was refused: it holds more than weights and plain values (objects "
                "whose loading could run code, e.g. from a crafted file in a shared "
                "project); nothing in it was run. Delete it if you did not make it: "
                f"{path}"
            ) from err
        raise LabelEffError(f"{what} is damaged ({type(err).__name__}: {err})") from err


def read_config(checkpoint_dir) -> dict:
    path = os.path.join(checkpoint_dir, "config.json")
    try:
        with open(path) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as err:
        raise LabelEffError(f"checkpoint {str(checkpoint_dir)!r}: config.json is unreadable or damaged ({err})") from err
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if missing:
        raise LabelEffError(f"checkpoint {str(checkpoint_dir)!r}: config.json lacks {missing}")
    return config


def read_checkpoint(checkpoint_dir) -> tuple:
    """(config dict, state_dict) of a checkpoint folder.

    Raises
    ------
    LabelEffError
        Missing folder or files, damaged config or weights, weights that do not fit the
        network the config describes.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    if not os.path.isdir(checkpoint_dir):
        raise LabelEffError(f"checkpoint folder {checkpoint_dir!r} does not exist")
    missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(checkpoint_dir, f))]
    if missing:
        raise LabelEffError(f"checkpoint {checkpoint_dir!r} is incomplete: missing {missing}")
    config = read_config(checkpoint_dir)
    state = safe_load(os.path.join(checkpoint_dir, "model.pt"), f"checkpoint {checkpoint_dir!r}: model.pt")
    if not isinstance(state, dict):
        raise LabelEffError(f"checkpoint {checkpoint_dir!r}: model.pt does not hold a state dict")
    return config, state


def _write_failed(path, tmp, err):
    try:
        os.unlink(tmp)
    except OSError:
        pass
    return LabelEffError(f"could not write {path!r} ({err.strerror or err}); disk full or not writable? "
                         "nothing was published; free space and train again (the run resumes)")


def atomic_torch_save(obj, path):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise _write_failed(path, tmp, err) from err


def atomic_text(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise _write_failed(path, tmp, err) from err
