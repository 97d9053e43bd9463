"""The interactive network on one open volume: prompts in, probabilities out, cached.

:class:`InteractiveSession` keeps the volume at the network's spacing, the prompt
channels of the last call and the network's probabilities. A call with new strokes
re-predicts only a window around what changed (the strokes' and boxes' bounding box
grown by ``spread_mm``, with ``context`` voxels of context on each side) and keeps the
rest from the cache; the first call, or a window over most of the volume, predicts
the whole volume. What is cached is the network's last features (the input of its
1x1x1 output layer), so that per-volume adaptation is cheap: with ``adapt_steps`` > 0
a copy of the output layer is fitted to the strokes (weight 1) and the current result
elsewhere (weight ``ADAPT_REST``) and applied to the whole volume, so a correction
moves the decision everywhere the features look like what the stroke marked ("You
Point, I Learn", RootPainter: learning from each correction, here in milliseconds).
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

#: Weight of the previous result (outside the strokes) in the adaptation loss, the
#: voxels of it sampled per step, and the step size.
ADAPT_REST = 0.1
ADAPT_SAMPLE = 20000
ADAPT_LR = 0.01


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
        self.feats: torch.Tensor | None = None  # (F, z, y, x) the network's last features
        self.net = model.net
        self.head = copy.deepcopy(_output_layer(self.net))  # this volume's output layer
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
        """The network's last features (input of its output layer) on ``region``."""
        from monai.inferers import SlidingWindowInfererAdapt

        sl = tuple(slice(a, b) for a, b in region)
        x = torch.as_tensor(np.ascontiguousarray(self._input(sl)), dtype=torch.float32)[None]
        inferer = SlidingWindowInfererAdapt(roi_size=self.patch, sw_batch_size=4, overlap=0.25,
                                            mode="gaussian")
        with torch.no_grad():
            return inferer(x.to(self.model.device), _Features(self.net))[0].cpu()

    def _probs(self) -> torch.Tensor:
        """(K + 1, z, y, x) probabilities of the cached features through the head."""
        with torch.no_grad():
            return torch.softmax(self.head(self.feats[None].to(self.head.weight.device))[0].cpu(), dim=0)

    def predict(self, scribbles, boxes=None, previous=None, *, adapt_steps: int = 0):
        """The network's probabilities for the current prompts.

        Parameters
        ----------
        scribbles : ndarray, shape (Z, Y, X)
        boxes : sequence of 7-tuples, optional
        previous : ndarray, shape (Z, Y, X), optional
            The current result (0..K), the "previous mask" channels.
        adapt_steps : int
            Gradient steps of per-volume adaptation of the output layer (0: none).

        Returns
        -------
        probabilities : ndarray, shape (K + 1, Z, Y, X), float32
            On the volume's grid.
        info : dict
            ``window`` (network-grid region recomputed, "volume", or None), ``seconds``,
            ``adapt_seconds``.
        """
        t0 = time.perf_counter()
        new = self.prompt_channels(scribbles, boxes, previous)
        info: dict = {"adapt_seconds": 0.0}
        window = full = [(0, n) for n in self.net_shape]
        if self.feats is not None:
            window = None
            if self.prompted:  # strokes and boxes decide the window; the previous mask follows
                n = 2 * self.k + 1
                box = _bbox((new[:n] != self.prompts[:n]).any(dim=0))
                if box is not None:
                    window = [(max(0, a - s), min(n, b + s))
                              for (a, b), s, n in zip(box, self.spread, self.net_shape)]
                    if np.prod([b - a for a, b in window]) > 0.6 * np.prod(self.net_shape):
                        window = full
        self.prompts = new
        self.strokes = new[: self.k + 1]
        if window == full:
            self.feats = self._run(full)
            info["window"] = "volume"
        elif window is not None:
            ctx = [(max(0, a - self.context), min(n, b + self.context)) for (a, b), n in zip(window, self.net_shape)]
            out = self._run(ctx)
            inner = tuple(slice(a - c, b - c) for (a, b), (c, _) in zip(window, ctx))
            self.feats[(slice(None), *(slice(a, b) for a, b in window))] = out[(slice(None), *inner)]
            info["window"] = [list(w) for w in window]
        else:
            info["window"] = None
        self.head = copy.deepcopy(_output_layer(self.net))
        if adapt_steps and np.any(scribbles):
            info["adapt_seconds"] = self._adapt(int(adapt_steps), previous)
        up = F.interpolate(self._probs()[None], size=tuple(self.shape), mode="trilinear", align_corners=False)[0]
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
        """Fit this volume's copy of the output layer to its strokes.

        The network's last features stay as computed; only its 1x1x1 output layer is
        trained (Adam, ``steps`` steps) on every stroke voxel (weight 1) and a sample of
        the rest labelled with the current result (weight :data:`ADAPT_REST`). The new
        layer then applies to the whole volume, so a correction moves the decision
        everywhere the features look like what the strokes marked.
        """
        t0 = time.perf_counter()
        f = self.feats.reshape(self.feats.shape[0], -1)
        stroked = self.strokes.sum(0).reshape(-1) > 0
        if previous is not None:
            rest_lab = torch.from_numpy(resample_image(
                np.asarray(previous, np.float32)[None], self.spacing, self.target, mode="nearest",
                out_shape=self.net_shape)[0].round().astype(np.int64)).reshape(-1)
        else:
            rest_lab = self._probs().argmax(0).reshape(-1)
        idx_s = torch.nonzero(stroked).flatten()
        rest = torch.nonzero(~stroked).flatten()
        gen = torch.Generator().manual_seed(0)
        idx_r = rest[torch.randperm(len(rest), generator=gen)[:ADAPT_SAMPLE]]
        xs, ys = f[:, idx_s].T, self.strokes.reshape(self.k + 1, -1)[:, idx_s].argmax(0)
        xr, yr = f[:, idx_r].T, rest_lab[idx_r]
        w = self.head.weight.detach().reshape(self.k + 1, -1).clone().requires_grad_(True)
        b = self.head.bias.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([w, b], lr=ADAPT_LR)
        for _ in range(steps):
            loss = F.cross_entropy(xs @ w.T + b, ys) + ADAPT_REST * F.cross_entropy(xr @ w.T + b, yr)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            self.head.weight.copy_(w.reshape(self.head.weight.shape))
            self.head.bias.copy_(b)
        return round(time.perf_counter() - t0, 4)


class _Features(torch.nn.Module):
    """A network returning the input of its output layer (its last features)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        got = {}
        hook = _output_layer(self.net).register_forward_hook(lambda m, i, o: got.__setitem__("f", i[0]))
        try:
            self.net(x)
        finally:
            hook.remove()
        return got["f"]


def _output_layer(net) -> torch.nn.Module:
    """The 1x1x1 output convolution of a (promptable) MONAI ``BasicUNet``."""
    unet = getattr(net, "unet", net)
    return unet.final_conv.conv if hasattr(unet.final_conv, "conv") else unet.final_conv
