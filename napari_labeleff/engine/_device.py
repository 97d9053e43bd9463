"""Device selection for the engine (torch devices, no Qt)."""

from __future__ import annotations

import re

import torch

from .._errors import LabelEffError

_ALLOWED = '"auto", "cpu", "cuda", "cuda:N" or "mps"'


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device="auto") -> torch.device:
    """Turn a device request into a :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks CUDA, then Apple MPS, then the CPU. ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` and ``"mps"`` ask for that device and raise when it is absent.

    Returns
    -------
    torch.device

    Raises
    ------
    LabelEffError
        Unknown device string, or a GPU that this machine does not have.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise LabelEffError(f"device={device!r} is not a string; allowed: {_ALLOWED}")
    name = device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        if not torch.cuda.is_available():
            raise LabelEffError(
                f"device={device!r} but no CUDA GPU is available to this PyTorch "
                f"(torch {torch.__version__}); use device='cpu' or 'auto'"
            )
        index = int(m.group(1)) if m.group(1) is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise LabelEffError(
                f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) "
                f"exist (cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    if name == "mps":
        if not _mps_available():
            raise LabelEffError(f"device={device!r} but Apple MPS is not available here")
        return torch.device("mps")
    raise LabelEffError(f"device={device!r} is unknown; allowed: {_ALLOWED}")
