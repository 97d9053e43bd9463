"""The prompt channels of the interactive network (layout version 1).

The network's input is the image's C channels followed by ``P = 3K + 1`` prompt
channels, all on the network's grid (target spacing):

=========================  =====  ==================================================
channels                   count  content
=========================  =====  ==================================================
strokes                    K + 1  one per class, background first: 1 on the class's
                                  stroke voxels, dilated by one voxel (a thin stroke
                                  survives resampling and is seen by the first conv)
boxes                      K      1 inside the structure's boxes
previous mask              K      one-hot of the current result's structures
=========================  =====  ==================================================

Empty prompts (all zeros) ask for the draft: the plain network's answer.
Pure NumPy / torch, shared by training (simulated prompts) and annotation (the
user's prompts), so both encode them identically.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Version of the channel layout, stored in the checkpoint's config.
PROMPT_LAYOUT = "strokes(K+1), boxes(K), previous mask(K); v1"


def n_prompt_channels(n_structures: int) -> int:
    """``3K + 1`` prompt channels for K structures."""
    return 3 * int(n_structures) + 1


def image_channels(config: dict) -> int:
    """Image channels a checkpoint's network takes (its input minus the prompt channels)."""
    return int(config.get("image_channels", int(config["in_channels"]) - int(config.get("prompt_channels", 0))))


def encode_prompts(strokes: torch.Tensor, boxes: torch.Tensor | None, previous: torch.Tensor | None,
           n_structures: int) -> torch.Tensor:
    """Prompt channels of a batch.

    Parameters
    ----------
    strokes : Tensor of int, shape (B, z, y, x)
        0 none, 1 background, c + 1 structure c.
    boxes : Tensor, shape (B, K, z, y, x), or None
        1 inside structure c's boxes.
    previous : Tensor of int, shape (B, z, y, x), or None
        The current result, 0..K (None or all 0: no result yet).
    n_structures : int
        K.

    Returns
    -------
    Tensor, shape (B, 3K + 1, z, y, x), float32
    """
    k = int(n_structures)
    s = strokes.long()
    b, shape = s.shape[0], tuple(s.shape[1:])
    st = torch.zeros((b, k + 1, *shape), dtype=torch.float32, device=s.device)
    if bool((s > 0).any()):
        st.scatter_(1, (s - 1).clamp_min(0)[:, None], (s > 0)[:, None].float())
        st = F.max_pool3d(st, kernel_size=3, stride=1, padding=1)
    bx = torch.zeros((b, k, *shape), dtype=torch.float32, device=s.device) if boxes is None \
        else boxes.float().to(s.device)
    pm = torch.zeros((b, k, *shape), dtype=torch.float32, device=s.device)
    if previous is not None:
        pr = previous.long().to(s.device)
        for c in range(1, k + 1):
            pm[:, c - 1] = (pr == c).float()
    return torch.cat([st, bx, pm], dim=1)


def box_channels(boxes, spacing, target, shape, n_structures: int) -> np.ndarray:
    """(K, z, y, x) uint8 box channels on the network grid from engine boxes
    ``(c, z0, y0, x0, z1, y1, x1)`` given on a grid of ``spacing``."""
    k = int(n_structures)
    out = np.zeros((k, *shape), np.uint8)
    if boxes is None or len(boxes) == 0:
        return out
    scale = np.asarray(spacing, float) / np.asarray(target, float)
    for row in np.asarray(boxes, np.int64).reshape(-1, 7):
        c = int(row[0])
        if not 1 <= c <= k:
            continue
        lo = np.clip(np.floor(row[1:4] * scale).astype(int), 0, shape)
        hi = np.clip(np.maximum(np.ceil(row[4:7] * scale).astype(int), lo + 1), 0, shape)
        out[(c - 1, *(slice(a, z) for a, z in zip(lo, hi)))] = 1
    return out
