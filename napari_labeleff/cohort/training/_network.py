"""The cohort's 3D network (MONAI ``BasicUNet``) and the choices that size it.

A network config is a plain JSON-able dict stored in each checkpoint's ``config.json``:

``network``          ``"BasicUNet"``
``features``         6 feature widths (MONAI ``BasicUNet`` convention: 5 encoder levels +
                     the last decoder level); CPU default ``(8, 16, 32, 64, 128, 16)``,
                     CUDA default ``(16, 32, 64, 128, 256, 32)``
``in_channels``      input channels: image channels C plus ``prompt_channels``
``image_channels``   C (absent in checkpoints without prompts: then ``in_channels``)
``prompt_channels``  P prompt channels of the interactive network (``_prompts``; 0 or
                     absent: a plain network)
``prompts``          the prompt channel layout (``_prompts.PROMPT_LAYOUT``)
``n_classes``        K + 1 (background first)
``target_spacing``   (Z, Y, X) mm the network works at
``patch_size``       (Z, Y, X) training/inference window, multiples of 16
``dropout``          dropout of the network (used by the mean teacher's MC passes)

The sizing is the product's own: the target spacing is the cohort's median spacing,
coarsened by the smallest factor that brings the median volume under a voxel budget
(CPU: 0.2 M voxels, i.e. the left-atrium MRI at 0.625 mm goes to 1.5625 mm; CUDA: 2 M);
the patch covers ~60% of the median resampled volume per axis on CPU (80% on CUDA;
multiples of 16, at least 32) up to a cap (CPU 64 x 96 x 96 voxels, CUDA 128^3). On the
LA cohort with 2 CPU cores this gives 1.5625 mm and a 32 x 32 x 48 patch: ~0.35 CPU s
per training step of 2 patches (a 48 x 80 x 96 patch costs ~10x more), so a budget of
minutes buys hundreds of steps rather than dozens.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._errors import LabelEffError

CPU_FEATURES = (8, 16, 32, 64, 128, 16)
GPU_FEATURES = (16, 32, 64, 128, 256, 32)
CPU_MAX_VOXELS = 200_000
GPU_MAX_VOXELS = 2_000_000
CPU_PATCH_CAP = (64, 96, 96)
GPU_PATCH_CAP = (128, 128, 128)
_FACTORS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)


def choose_target_spacing(spacings, shapes, *, max_voxels=CPU_MAX_VOXELS) -> tuple:
    """Pick the network's working spacing from the cohort.

    Parameters
    ----------
    spacings : sequence of (3,) float
        (Z, Y, X) spacing in mm of each volume.
    shapes : sequence of (3,) int
        (Z, Y, X) shape of each volume.
    max_voxels : int
        Voxel budget for the median volume at the chosen spacing.

    Returns
    -------
    tuple of 3 float
        (Z, Y, X) mm: the per-axis median spacing times the smallest factor in
        1, 1.25, 1.5, 2, ... that brings the median volume within ``max_voxels``.
        An axis already coarser than the in-plane spacing times the factor (thick
        slices) keeps its own spacing.
    """
    sp = np.asarray(spacings, dtype=float).reshape(-1, 3)
    sh = np.asarray(shapes, dtype=float).reshape(-1, 3)
    if len(sp) == 0 or len(sp) != len(sh):
        raise LabelEffError(f"need one spacing per volume, got {len(sp)} spacings and {len(sh)} shapes")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise LabelEffError(f"spacings must be positive and finite, got {sp.tolist()}")
    med_sp = np.median(sp, axis=0)
    extent = np.median(sp * sh, axis=0)  # mm
    finest = float(med_sp.min())
    for f in _FACTORS:
        target = np.maximum(med_sp, finest * f)
        n = np.prod(np.maximum(1, np.round(extent / target)))
        if n <= max_voxels:
            break
    return tuple(round(float(t), 4) for t in target)


def choose_patch_size(target_spacing, spacings, shapes, *, cap=CPU_PATCH_CAP, fraction=0.6) -> tuple:
    """Training/inference window (Z, Y, X) in voxels: ``fraction`` of the median
    resampled volume per axis rounded to multiples of 16, at least 32 (or the volume
    rounded up, when smaller) and at most ``cap``."""
    sp = np.asarray(spacings, dtype=float).reshape(-1, 3)
    sh = np.asarray(shapes, dtype=float).reshape(-1, 3)
    extent = np.median(sp * sh, axis=0)
    vox = extent / np.asarray(target_spacing, dtype=float)
    out = []
    for v, c in zip(vox, cap):
        m = int(np.round(fraction * v / 16.0) * 16)
        floor = min(32, int(np.ceil(v / 16.0) * 16))
        out.append(int(min(max(floor, m, 16), c)))
    return tuple(out)


def default_features(device: torch.device) -> tuple:
    """Feature widths for the device (small on CPU)."""
    return GPU_FEATURES if device.type == "cuda" else CPU_FEATURES


class PromptableUNet(torch.nn.Module):
    """A MONAI ``BasicUNet`` whose input is the image plus prompt channels.

    Called with the image channels alone it appends empty prompts (zeros): every
    image-only caller (validation, prediction, self-training labels, embeddings) gets
    the draft. The state dict is the ``BasicUNet``'s with a ``unet.`` prefix.
    """

    def __init__(self, unet: torch.nn.Module, image_channels: int, prompt_channels: int):
        super().__init__()
        self.unet = unet
        self.image_channels = int(image_channels)
        self.prompt_channels = int(prompt_channels)

    def with_prompts(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.image_channels and self.prompt_channels:
            x = torch.cat([x, x.new_zeros((x.shape[0], self.prompt_channels, *x.shape[2:]))], dim=1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(self.with_prompts(x))


def build_network(config: dict, *, out_channels: int | None = None) -> torch.nn.Module:
    """Build the MONAI ``BasicUNet`` a config describes.

    Parameters
    ----------
    config : dict
        Network config (see the module docstring): ``in_channels``, ``n_classes``,
        ``features``, ``dropout``.
    out_channels : int, optional
        Override the output channels (self-supervised reconstruction head: C).

    Returns
    -------
    torch.nn.Module
        Input (B, C, Z, Y, X) (C: ``in_channels``, or the image channels alone for a
        :class:`PromptableUNet`) with Z, Y, X multiples of 16, output logits
        (B, out_channels, Z, Y, X).
    """
    from monai.networks.nets import BasicUNet

    name = config.get("network", "BasicUNet")
    if name != "BasicUNet":
        raise LabelEffError(f"network={name!r} is unknown; allowed: 'BasicUNet'")
    features = tuple(int(f) for f in config["features"])
    if len(features) != 6 or min(features) < 1:
        raise LabelEffError(f"features={features} must be 6 positive widths")
    unet = BasicUNet(
        spatial_dims=3,
        in_channels=int(config["in_channels"]),
        out_channels=int(out_channels if out_channels is not None else config["n_classes"]),
        features=features,
        dropout=float(config.get("dropout", 0.0)),
    )
    prompts = int(config.get("prompt_channels", 0))
    if prompts:
        return PromptableUNet(unet, int(config["in_channels"]) - prompts, prompts)
    return unet


def encode(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Encoder bottleneck features of a ``BasicUNet``, global-average pooled.

    Parameters
    ----------
    net : monai.networks.nets.BasicUNet
    x : Tensor, shape (B, C, Z, Y, X)

    Returns
    -------
    Tensor, shape (B, features[4])
    """
    if isinstance(net, PromptableUNet):
        net, x = net.unet, net.with_prompts(x)
    h = net.conv_0(x)
    h = net.down_1(h)
    h = net.down_2(h)
    h = net.down_3(h)
    h = net.down_4(h)
    return h.mean(dim=(2, 3, 4))


def transfer_encoder_decoder(src: torch.nn.Module, dst: torch.nn.Module) -> int:
    """Copy every parameter of ``src`` into ``dst`` whose name and shape match (the
    whole network but the output layer, when ``src`` is the reconstruction model of
    the self-supervised stage). Returns the number of tensors copied."""
    return transfer_state(src.state_dict(), dst)


def transfer_state(state: dict, dst: torch.nn.Module) -> int:
    """Copy the tensors of ``state`` into ``dst`` whose name and shape match, reading
    a plain ``BasicUNet`` state into a :class:`PromptableUNet` and back (the first
    convolution, whose input channels differ, is not copied). Returns how many."""
    dst_state = dst.state_dict()
    def norm(k):
        return k[5:] if k.startswith("unet.") else k
    by_name = {norm(k): k for k in dst_state}
    n = 0
    for k, v in state.items():
        target = by_name.get(norm(k))
        if target is not None and dst_state[target].shape == v.shape:
            dst_state[target] = v.detach().clone()
            n += 1
    dst.load_state_dict(dst_state)
    return n
