"""Losses and supervision maps of the cohort learner (pure torch/numpy, no files)."""

import numpy as np
import pytest
import torch

from napari_labeleff.cohort.training import _losses
from napari_labeleff.cohort.training import PreparedCase, build_supervision, resample_labels


def _logits(seed=0, shape=(2, 3, 4, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


def _target(shape=(2, 4, 6, 6), seed=1, annotated=0.3):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 3, shape)
    t[rng.random(shape) > annotated] = -1
    return torch.as_tensor(t)


@pytest.mark.parametrize("dice_weight", [0.0, 1.0])
def test_partial_loss_ignores_unannotated_voxels(dice_weight):
    logits = _logits()
    target = _target()
    unann = target < 0
    assert unann.any() and (~unann).any()
    base = _losses.partial_ce_dice(logits, target, dice_weight=dice_weight)
    # changing the logits at unannotated voxels (wildly) must not change the loss
    changed = logits.clone()
    changed.permute(0, 2, 3, 4, 1)[unann] = torch.randn(int(unann.sum()), 3) * 50
    again = _losses.partial_ce_dice(changed, target, dice_weight=dice_weight)
    assert torch.allclose(base, again, atol=1e-6)
    # and no gradient reaches them
    x = logits.clone().requires_grad_(True)
    _losses.partial_ce_dice(x, target, dice_weight=dice_weight).backward()
    g = x.grad.permute(0, 2, 3, 4, 1)
    assert torch.all(g[unann] == 0)
    assert g[~unann].abs().sum() > 0


def test_partial_loss_weights_and_full_masks():
    logits = _logits()
    target = _target(annotated=1.0)
    full = _losses.full_dice_ce(logits, target)
    assert torch.allclose(full, _losses.partial_ce_dice(logits, target))
    # weight 0 ignores exactly like -1
    w = torch.ones(target.shape)
    w[:, :2] = 0
    masked_t = target.clone()
    masked_t[:, :2] = -1
    assert torch.allclose(_losses.partial_ce_dice(logits, target, w), _losses.partial_ce_dice(logits, masked_t))
    # nothing annotated: zero, and backward still works
    x = logits.clone().requires_grad_(True)
    z = _losses.partial_ce_dice(x, torch.full(target.shape, -1))
    z.backward()
    assert float(z.detach()) == 0.0 and torch.all(x.grad == 0)


def test_partial_loss_prefers_the_right_class():
    target = _target(annotated=0.5)
    good = torch.nn.functional.one_hot(target.clamp(min=0), 3).movedim(-1, 1).float() * 8
    bad = torch.roll(good, 1, dims=1)
    assert _losses.partial_ce_dice(good, target) < 0.1 < _losses.partial_ce_dice(bad, target)


def test_partial_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="target shape"):
        _losses.partial_ce_dice(_logits(), torch.zeros((2, 4, 6, 5), dtype=torch.long))


def _probs_with(fg):
    """(1, 2, Z, Y, X) probabilities with structure probability ``fg``."""
    fg = torch.as_tensor(fg, dtype=torch.float32)[None]
    return torch.stack([1 - fg, fg], dim=1)


def test_box_loss_wants_every_slice_of_the_box_crossed():
    box = torch.zeros((1, 1, 8, 8, 8), dtype=torch.bool)
    box[0, 0, 2:6, 2:6, 2:6] = True
    tight = np.full((8, 8, 8), 0.01)
    tight[2:6, 3:5, 3:5] = 0.99  # crosses every slice of the box, along every axis? x/y: 3:5 only
    full = np.full((8, 8, 8), 0.01)
    full[2:6, 2:6, 2:6] = 0.99  # fills the box
    half = np.full((8, 8, 8), 0.01)
    half[2:4, 2:6, 2:6] = 0.99  # misses the z slices 4 and 5
    lf = _losses.box_loss(_probs_with(full), box)
    lh = _losses.box_loss(_probs_with(half), box)
    lt = _losses.box_loss(_probs_with(tight), box)
    assert lf < 0.05 and lh > lf + 0.5
    assert lt > lf  # slices 2 and 5 along y/x are not crossed
    # the gradient raises the structure in an uncrossed slice
    p = torch.as_tensor(half, dtype=torch.float32).requires_grad_(True)
    _losses.box_loss(torch.stack([1 - p, p])[None], box).backward()
    assert p.grad[5, 2:6, 2:6].min() < 0
    assert float(_losses.box_loss(_probs_with(half), torch.zeros_like(box))) == 0.0


def test_exclusion_loss_penalises_structure_outside_its_boxes():
    forbid = torch.zeros((1, 1, 4, 4, 4), dtype=torch.bool)
    forbid[..., :2] = True
    inside = np.zeros((4, 4, 4))
    inside[..., 2:] = 0.9
    outside = np.zeros((4, 4, 4))
    outside[..., :2] = 0.9
    assert _losses.exclusion_loss(_probs_with(inside), forbid) < 1e-4
    assert _losses.exclusion_loss(_probs_with(outside), forbid) > 1.0


def test_consistency_uses_only_masked_voxels():
    s = torch.softmax(_logits(0), 1)
    t = torch.softmax(_logits(1), 1)
    mask = torch.zeros((2, 4, 6, 6), dtype=torch.bool)
    mask[:, 0] = True
    t2 = t.clone()
    t2[:, :, 1:] = torch.softmax(_logits(5), 1)[:, :, 1:]
    assert torch.allclose(_losses.consistency_loss(s, t, mask), _losses.consistency_loss(s, t2, mask))
    assert not torch.allclose(_losses.consistency_loss(s, t), _losses.consistency_loss(s, t2))


def _pc(shape=(6, 8, 8), k=1):
    return PreparedCase("v", "labelled", np.zeros((1, *shape), np.float32),
                        scribbles=np.zeros(shape, np.uint8))


def test_supervision_boxes_scribbles_pseudo_priorities():
    pc = _pc()
    pc.boxes = np.zeros((1, 6, 8, 8), np.uint8)
    pc.boxes[0, 1:4, 2:6, 2:6] = 1
    pc.forbid = 1 - pc.boxes
    pc.scribbles[2, 3, 3] = 2
    pc.scribbles[0, 0, 0] = 1
    pseudo = np.zeros((6, 8, 8), np.uint8)
    pseudo[2, 3:5, 3:5] = 1  # pseudo says background where the scribble says structure
    pseudo[3, 4, 4] = 2
    build_supervision(pc, pseudo=pseudo, pseudo_weight=0.5)
    assert pc.lab[0, 0, 0] == 1 and pc.lab[5, 7, 7] == 1  # outside every box: background
    assert pc.weight[5, 7, 7] == 1.0
    assert pc.lab[2, 3, 3] == 2 and pc.weight[2, 3, 3] == 1.0  # scribble wins
    assert pc.lab[2, 4, 4] == 1 and pc.weight[2, 4, 4] == 0.5  # pseudo-label, lower weight
    assert pc.lab[3, 4, 4] == 2
    assert pc.lab[1, 2, 2] == 0 and pc.weight[1, 2, 2] == 0  # inside the box, no info


def test_supervision_full_mask_then_scribbles():
    pc = _pc()
    pc.mask = np.zeros((6, 8, 8), np.uint8)
    pc.mask[2:4, 2:4, 2:4] = 1
    pc.scribbles[0, 0, 0] = 2  # a correction drawn after the mask wins
    build_supervision(pc)
    assert pc.lab.min() >= 1 and pc.weight.min() == 1.0
    assert pc.lab[3, 3, 3] == 2 and pc.lab[5, 5, 5] == 1 and pc.lab[0, 0, 0] == 2


def test_thin_strokes_survive_resampling():
    s = np.zeros((20, 40, 40), np.uint8)
    s[10, 20, 5:35] = 2  # one-voxel-thin structure stroke
    s[10, 5, 5:35] = 1
    out = resample_labels(s, (0.5, 0.5, 0.5), (1.25, 1.25, 1.25))
    assert out.shape == (8, 16, 16)
    assert (out == 2).sum() >= 5 and (out == 1).sum() >= 5
    assert not ((out == 2) & (out == 1)).any()
