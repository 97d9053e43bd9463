"""Losses of the hybrid training: partial (scribble) CE + Dice, box terms, consistency.

Partial labels follow nnU-Net's ignore-label ``DC_and_CE_loss``: the softmax is taken
over all classes FIRST, then the loss is restricted to annotated voxels, so an
unannotated voxel contributes nothing (zero loss, zero gradient). ``monai.losses.
MaskedLoss`` is not used for this: it multiplies the *input logits* and the target by
the mask before the loss's own softmax, so masked voxels become logits 0 with an
all-zero (or class 0) target and still contribute. The Dice part here is MONAI's
``DiceLoss`` applied to already-softmaxed probabilities and one-hot targets that are
both multiplied by the annotation mask after the softmax (a masked voxel then adds 0 to
the intersection and to both sums).

Tensors: logits / probabilities (B, K+1, Z, Y, X); ``target`` (B, Z, Y, X) int64 with
``-1`` = unannotated; ``weight`` (B, Z, Y, X) float >= 0 (0 = ignore).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -1


def _check(logits, target, weight):
    if logits.ndim != 5:
        raise ValueError(f"logits must be (B, K+1, Z, Y, X), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    if weight is not None and weight.shape != target.shape:
        raise ValueError(f"weight shape {tuple(weight.shape)} != target shape {tuple(target.shape)}")


def partial_ce_dice(logits, target, weight=None, *, dice_weight=1.0, smooth=1e-5):
    """Cross-entropy + soft Dice over annotated voxels only.

    Parameters
    ----------
    logits : Tensor, shape (B, K+1, Z, Y, X)
    target : Tensor of int, shape (B, Z, Y, X)
        Class 0..K, or -1 = unannotated (ignored).
    weight : Tensor, shape (B, Z, Y, X), optional
        Per-voxel weight (e.g. lower for pseudo-labels); 0 also ignores a voxel.
    dice_weight : float
        Weight of the Dice term (0 = CE only).

    Returns
    -------
    Tensor (scalar)
        0 (with a graph, so ``backward`` works) when no voxel is annotated.
    """
    from monai.losses import DiceLoss

    _check(logits, target, weight)
    known = target >= 0
    w = known.float() if weight is None else weight.float() * known
    total = w.sum()
    if total <= 0:
        return logits.sum() * 0.0
    tgt = target.clamp(min=0).long()
    ce = F.cross_entropy(logits.float(), tgt, reduction="none")  # log_softmax over all classes
    loss = (ce * w).sum() / total
    if dice_weight:
        probs = torch.softmax(logits.float(), dim=1)  # softmax FIRST
        onehot = F.one_hot(tgt, logits.shape[1]).movedim(-1, 1).float()
        m = w.unsqueeze(1)  # then mask
        dice = DiceLoss(include_background=True, softmax=False, batch=True,
                        smooth_nr=smooth, smooth_dr=smooth)
        # classes absent from the annotated voxels of the batch and nearly absent from the
        # prediction there give Dice ~1 with the smoothing, i.e. ~no loss.
        loss = loss + dice_weight * dice(probs * m, onehot * m)
    return loss


def full_dice_ce(logits, mask, *, dice_weight=1.0):
    """Dice + CE against a full mask (every voxel annotated): ``partial_ce_dice`` with
    no ignored voxel. ``mask`` (B, Z, Y, X) int 0..K."""
    return partial_ce_dice(logits, mask.long(), None, dice_weight=dice_weight)


def box_loss(probs, box_masks, *, eps=1e-6):
    """Tightness / multiple-instance term for boxes.

    A box of structure c says: every slice through the box (along each axis) crosses
    the object. Per class with a box in the patch and per axis, the maximum
    probability of c over each slice of its box region should be 1: the loss is the
    mean of ``-log(max p_c)`` over those slices (the MIL bag of a slice is positive).
    "Outside all boxes is background" and "class c only inside its boxes" are hard
    labels/exclusions and live in the target (see ``_data.py``) and in
    :func:`exclusion_loss`.

    Parameters
    ----------
    probs : Tensor, shape (B, K+1, Z, Y, X)
        Softmax probabilities.
    box_masks : Tensor of bool/float, shape (B, K, Z, Y, X)
        Union of the boxes of structure c = 1..K (channel c - 1).

    Returns
    -------
    Tensor (scalar); 0 when no box is in the patch.
    """
    if box_masks is None:
        return probs.sum() * 0.0
    terms = []
    bm = box_masks.bool()
    for b in range(probs.shape[0]):
        for c in range(bm.shape[1]):
            inside = bm[b, c]
            if not inside.any():
                continue
            p = probs[b, c + 1]
            masked = torch.where(inside, p, torch.zeros_like(p))
            for axis in range(3):
                other = tuple(a for a in range(3) if a != axis)
                has = inside.any(dim=other[1]).any(dim=other[0])
                mx = masked.amax(dim=other[1]).amax(dim=other[0])
                terms.append(-torch.log(mx[has] + eps))
    if not terms:
        return probs.sum() * 0.0
    return torch.cat(terms).mean()


def exclusion_loss(probs, forbidden, *, eps=1e-6):
    """Penalise probability of structure c where c is forbidden (outside its boxes when
    it has boxes): mean of ``-log(1 - p_c)`` over forbidden voxels.

    Parameters
    ----------
    probs : Tensor, shape (B, K+1, Z, Y, X)
    forbidden : Tensor of bool, shape (B, K, Z, Y, X)
    """
    if forbidden is None or not forbidden.any():
        return probs.sum() * 0.0
    p = probs[:, 1:]
    return -(torch.log1p(-p.clamp(max=1 - eps)) * forbidden).sum() / forbidden.sum()


def consistency_loss(student_probs, teacher_probs, mask=None):
    """Mean-teacher consistency: squared difference of the softmax outputs over the
    voxels where ``mask`` (B, Z, Y, X) is true (UA-MT keeps the teacher's confident
    voxels); the teacher is a target (no gradient)."""
    d = ((student_probs - teacher_probs.detach()) ** 2).sum(dim=1)
    if mask is None:
        return d.mean()
    m = mask.float()
    n = m.sum()
    if n <= 0:
        return student_probs.sum() * 0.0
    return (d * m).sum() / n


def reconstruction_loss(pred, original, region=None):
    """Self-supervised L1 reconstruction (MONAI's self-supervised tutorial uses L1),
    over the corrupted ``region`` (B, 1 or C, Z, Y, X) when given, else everywhere."""
    err = (pred - original).abs()
    if region is None:
        return err.mean()
    r = region.float().expand_as(err)
    return (err * r).sum() / r.sum().clamp(min=1.0)
