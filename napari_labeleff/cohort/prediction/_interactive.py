"""The interactive network on one open volume: prompts in, probabilities out, cached.

:class:`InteractiveSession` keeps the volume at the network's spacing, the prompt
channels of the last call and the network's probabilities. A call with new strokes
re-predicts only a window around what changed (the strokes' and boxes' bounding box
grown by ``spread_mm``, with ``context`` voxels of context on each side) and keeps the
rest from the cache; the first call, or a window over most of the volume, predicts
the whole volume. Optionally (``adapt_steps`` > 0) the network is first adapted to
this volume: a few gradient steps on a private copy with the strokes as partial labels
(weight 1) and the previous result elsewhere in the window (weight ``ADAPT_REST``),
so a correction can reshape the whole structure ("You Point, I Learn",
RootPainter); then the whole volume is predicted again.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..._errors import LabelEffError
from ..training import (box_channels, encode_prompts, resample_image, resample_labels,
                        sliding_window_probs)

#: Weight of the previous result (outside the strokes) in the adaptation loss.
ADAPT_REST = 0.1


def _bbox(mask: torch.Tensor):
    idx = [torch.nonzero(mask.any(dim=tuple(a for a in range(3) if a != d))).flatten() for d in range(3)]
    if any(len(i) == 0 for i in idx):
        return None
    return [(int(i[0]), int(i[-1]) + 1) for i in idx]


class InteractiveSession:
    """Prompted prediction on one volume (see the module docstring).

    Parameters
    ----------
    model : LoadedModel
        A checkpoint whose config has ``prompt_channels`` > 0.
    image : array_like, shape (Z, Y, X) or (C, Z, Y, X)
    spacing : sequence of 3 float
        (Z, Y, X) mm.
    spread_mm : float
        How far beyond a changed prompt the network's output is recomputed.
    """

    def __init__(self, model, image, spacing, *, spread_mm: float = 40.0, volume_id: str | None = None):
        self.model = model
        #: False for a plain network (``interactive=False``): the prompts then reach it
        #: only through adaptation (``adapt_steps``) and the graph step
        self.prompted = bool(int(model.config.get("prompt_channels", 0)))
        self.volume = image  # the volume's own grid (the graph step works there)
        self.img, self.spacing, self.shape = model._prepare(image, spacing)
        self.target = tuple(float(t) for t in model.config["target_spacing"])
        self.net_shape = tuple(self.img.shape[1:])
        self.k = model.n_classes - 1
        self.patch = tuple(int(p) for p in model.config["patch_size"])
        self.spread = [int(np.ceil(spread_mm / t)) for t in self.target]
        self.context = 16
        self.prompts: torch.Tensor | None = None
        self.probs: torch.Tensor | None = None
        self.net = model.net
        self.adapted = False
        self.volume_id = volume_id
        self.strokes: torch.Tensor | None = None  # (K + 1, z, y, x) dilated one-hot strokes
        self._draft: np.ndarray | None = None  # (Z, Y, X) the draft's labels, for the check

    # ---- prompts --------------------------------------------------------------------------------
    def prompt_channels(self, scribbles, boxes=None, previous=None) -> torch.Tensor:
        """(3K + 1, z, y, x) prompt channels on the network grid of the user's prompts
        given on the volume's grid (engine conventions)."""
        scr = np.asarray(scribbles)
        if scr.shape != tuple(self.shape):
            raise LabelEffError(f"scribbles have shape {scr.shape}; the volume is {tuple(self.shape)}")
        if scr.size and int(scr.max()) > self.k + 1:
            raise LabelEffError(
                f"scribbles hold class {int(scr.max()) - 1} but model {self.model.version!r} knows "
                f"{self.k} structure(s) ({', '.join(self.model.class_names)}); train it again "
                "after adding a class")
        strokes = resample_labels(scr, self.spacing, self.target, out_shape=self.net_shape)
        bx = box_channels(boxes, self.spacing, self.target, self.net_shape, self.k)
        prev = None
        if previous is not None:
            prev = resample_image(np.asarray(previous, np.float32)[None], self.spacing, self.target,
                                  mode="nearest", out_shape=self.net_shape)[0].round().astype(np.int64)
            prev = torch.from_numpy(prev)[None]
        return encode_prompts(torch.from_numpy(strokes)[None], torch.from_numpy(bx)[None], prev, self.k)[0]

    def _input(self, sl) -> np.ndarray:
        """Network input (image + prompt channels) on the network-grid region ``sl``."""
        img = self.img[(slice(None), *sl)]
        if not self.prompted:
            return img
        return np.concatenate([img, self.prompts[(slice(None), *sl)].numpy()])

    # ---- prediction -----------------------------------------------------------------------------
    def _run(self, region) -> torch.Tensor:
        """Network probabilities on ``region`` (list of (lo, hi) per axis)."""
        sl = tuple(slice(a, b) for a, b in region)
        return sliding_window_probs(self.net, self._input(sl), self.patch, self.model.device)

    def predict(self, scribbles, boxes=None, previous=None, *, adapt_steps: int = 0):
        """The network's probabilities for the current prompts.

        Parameters
        ----------
        scribbles : ndarray, shape (Z, Y, X)
        boxes : sequence of 7-tuples, optional
        previous : ndarray, shape (Z, Y, X), optional
            The current result (0..K), the "previous mask" channels.
        adapt_steps : int
            Gradient steps of per-volume adaptation before predicting (0: none).

        Returns
        -------
        probabilities : ndarray, shape (K + 1, Z, Y, X), float32
            On the volume's grid.
        info : dict
            ``window`` (network-grid region recomputed, or "volume"), ``seconds``,
            ``adapt_seconds``.
        """
        t0 = time.perf_counter()
        new = self.prompt_channels(scribbles, boxes, previous)
        info: dict = {"adapt_seconds": 0.0}
        changed = None
        if self.prompts is not None and self.prompted:
            n = 2 * self.k + 1  # strokes and boxes decide the window; the previous mask follows
            changed = (new[:n] != self.prompts[:n]).any(dim=0)
        elif self.prompts is not None:
            changed = torch.zeros(self.net_shape, dtype=torch.bool)  # the draft does not change
        self.prompts = new
        self.strokes = new[: self.k + 1]
        if adapt_steps and scribbles is not None and np.any(scribbles):
            info["adapt_seconds"] = self._adapt(adapt_steps, previous)
            changed = None  # the network changed: everything is new
        full = [(0, n) for n in self.net_shape]
        if self.probs is None or changed is None:
            window = full
        else:
            box = _bbox(changed)
            if box is None:
                window = None
            else:
                window = [(max(0, a - s), min(n, b + s)) for (a, b), s, n in zip(box, self.spread, self.net_shape)]
                size = np.prod([b - a for a, b in window])
                if size > 0.6 * np.prod(self.net_shape):
                    window = full
        if window == full:
            self.probs = self._run(full)
            info["window"] = "volume"
        elif window is not None:
            ctx = [(max(0, a - self.context), min(n, b + self.context)) for (a, b), n in zip(window, self.net_shape)]
            out = self._run(ctx)
            inner = tuple(slice(a - c, b - c) for (a, b), (c, _) in zip(window, ctx))
            self.probs[(slice(None), *(slice(a, b) for a, b in window))] = out[(slice(None), *inner)]
            info["window"] = [list(w) for w in window]
        else:
            info["window"] = None
        up = F.interpolate(self.probs[None], size=tuple(self.shape), mode="trilinear", align_corners=False)[0]
        up = up.clamp_min(0.0)
        up = up / up.sum(dim=0, keepdim=True).clamp_min(1e-8)
        info["seconds"] = round(time.perf_counter() - t0, 4)
        return np.ascontiguousarray(up.numpy(), dtype=np.float32), info

    def draft_agreement(self, scribbles) -> float | None:
        """Share of the strokes' voxels that the draft (no prompt) already labels with
        the stroke's class, averaged over the classes drawn; None with fewer than two
        classes drawn. A label-free check of the model on this volume: the user's own
        strokes are the labels (cached draft: one forward pass per volume)."""
        scr = np.asarray(scribbles)
        classes = [int(v) for v in np.unique(scr) if v]
        if len(classes) < 2:
            return None
        if self._draft is None:
            probs = sliding_window_probs(self.model.net, self.img, self.patch, self.model.device)
            self._draft = F.interpolate(probs[None], size=tuple(self.shape), mode="trilinear",
                                        align_corners=False)[0].argmax(0).numpy()
        return float(np.mean([np.mean(self._draft[scr == v] == v - 1) for v in classes]))

    # ---- per-volume adaptation ------------------------------------------------------------------
    def _adapt(self, steps: int, previous) -> float:
        """A few gradient steps of a private copy of the network on this volume."""
        t0 = time.perf_counter()
        if not self.adapted:
            self.net = copy.deepcopy(self.model.net)
            self.adapted = True
        strokes = self.strokes
        target = torch.full(self.net_shape, -1, dtype=torch.long)
        weight = torch.zeros(self.net_shape)
        if self.probs is not None:
            target = self.probs.argmax(0)
            weight[:] = ADAPT_REST
        has = strokes.sum(0) > 0
        target = torch.where(has, strokes.argmax(0), target)
        weight = torch.where(has, torch.ones_like(weight), weight)
        box = _bbox(has)
        # one training window of the network's patch size, centred on the strokes
        win = []
        for (a, b), p, n in zip(box, self.patch, self.net_shape):
            lo = int(min(max(0, (a + b) // 2 - p // 2), max(0, n - p)))
            win.append((lo, min(n, lo + p)))
        sl = tuple(slice(a, b) for a, b in win)
        x = torch.from_numpy(self._input(sl))[None]
        pad = []
        for (a, b) in reversed(win):
            extra = (-(b - a)) % 16
            pad += [0, extra]
        x = F.pad(x, pad)
        t = F.pad(target[sl][None].float(), pad, value=-1).long()[0]
        w = F.pad(weight[sl][None], pad)[0]
        dev = self.model.device
        x, t, w = x.to(dev), t.to(dev), w.to(dev)
        opt = torch.optim.SGD(self.net.parameters(), lr=1e-3, momentum=0.9)
        self.net.train()
        for _ in range(int(steps)):
            logits = self.net(x)
            ce = F.cross_entropy(logits, t.clamp_min(0)[None], reduction="none")[0]
            loss = (ce * w).sum() / w.sum().clamp_min(1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.net.eval()
        return round(time.perf_counter() - t0, 4)
