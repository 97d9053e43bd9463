"""Registry of suggestion strategies (MONAI Label's ``Strategy`` pattern: small
callables in a dict).

A strategy ranks :class:`Candidates` (slices or uncertain regions, described the same
way) and returns ``[(candidate index, score, note), ...]``, best first, at most ``n``
long. ``note`` is a short phrase the reason sentence ends with. Selection logic is
the product's own (uncertainty x diversity with class balance), hence hand-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._registry import registering


@dataclass
class Candidates:
    """What a strategy knows about the places it may suggest.

    Attributes
    ----------
    position : ndarray, shape (N, d)
        Location of each candidate, each coordinate scaled to [0, 1] (slices: d = 1,
        index / (S - 1); regions: d = 3, centroid / shape).
    score : ndarray, shape (N,)
        Uncertainty mass of each candidate (>= 0).
    class_score : ndarray, shape (N, K + 1)
        Uncertainty mass involving each class (column 0 = background).
    foreground : ndarray of bool, shape (N,)
        The prediction (or a box) holds foreground there.
    embedding : ndarray, shape (N, D)
        Representation for diversity (pooled intensities and probabilities).
    labelled_position : ndarray, shape (M, d)
        Positions of what is already annotated (slices holding scribbles).
    labelled_embedding : ndarray, shape (M, D)
        Their embeddings.
    """

    position: np.ndarray
    score: np.ndarray
    class_score: np.ndarray
    foreground: np.ndarray
    embedding: np.ndarray
    labelled_position: np.ndarray
    labelled_embedding: np.ndarray

    def __len__(self) -> int:
        return len(self.score)


Ranking = list[tuple[int, float, str]]
StrategyFn = Callable[[Candidates, int, np.random.Generator], Ranking]

#: name -> strategy callable ``fn(candidates, n, rng) -> ranking``.
STRATEGIES: dict[str, StrategyFn] = {}


#: Decorator ``@register_strategy(name)`` adding a strategy to :data:`STRATEGIES`.
register_strategy = registering(STRATEGIES, "suggestion strategy")


def _min_dist(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Distance of every point (N, D) to its nearest centre (M, D); inf when M = 0."""
    if len(centres) == 0:
        return np.full(len(points), np.inf)
    d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return np.sqrt(d2.min(1))


def _random_ranking(pool: np.ndarray, n: int, rng, note: str) -> Ranking:
    order = rng.permutation(pool)[:n]
    return [(int(i), float(len(order) - r), note) for r, i in enumerate(order)]


@register_strategy("random")
def random_strategy(c: Candidates, n: int, rng) -> Ranking:
    """Uniformly random candidates."""
    return _random_ranking(np.arange(len(c)), n, rng, "random pick")


@register_strategy("foreground_random")
def foreground_random(c: Candidates, n: int, rng) -> Ranking:
    """Random among candidates whose prediction (or a box) holds foreground; the
    remaining places, if any are needed, follow in random order."""
    fg = np.flatnonzero(c.foreground)
    first = _random_ranking(fg, n, rng, "random pick among foreground")
    rest = _random_ranking(np.flatnonzero(~c.foreground), n - len(first), rng,
                           "random pick (no foreground left)")
    return first + [(i, s - n, note) for i, s, note in rest]


@register_strategy("equidistant")
def equidistant(c: Candidates, n: int, rng) -> Ranking:
    """Farthest-point sampling in position: each pick is the place farthest from
    everything annotated or already picked (bisection of the gaps). Restricted to the
    extent of the foreground (prediction, boxes or scribbles) when there is one, so
    picks are spread over the structures rather than over empty slices."""
    pool = np.arange(len(c))
    known = np.concatenate([c.position[c.foreground], c.labelled_position])
    if c.foreground.any():
        lo, hi = known.min(0), known.max(0)
        inside = np.all((c.position >= lo) & (c.position <= hi), axis=1)
        pool = pool[inside] if inside.any() else pool
    centres = c.labelled_position
    if len(centres) == 0:  # nothing annotated yet: start from the middle
        centres = np.median(c.position[pool], axis=0, keepdims=True)
    dist = _min_dist(c.position[pool], centres)
    out: Ranking = []
    while pool.size and len(out) < n:
        j = int(np.argmax(dist))
        i = int(pool[j])
        out.append((i, float(dist[j]), "farthest from the annotated places"))
        pool = np.delete(pool, j)
        dist = np.minimum(np.delete(dist, j), _min_dist(c.position[pool],
                                                         c.position[i:i + 1]))
    return out


@register_strategy("entropy")
def entropy(c: Candidates, n: int, rng) -> Ranking:
    """The candidates holding the most uncertainty (sum of voxel entropy)."""
    order = np.argsort(-c.score, kind="stable")[:n]
    return [(int(i), float(c.score[i]), "most uncertain") for i in order]


def _normalise(x: np.ndarray) -> np.ndarray:
    top = x.max(0, keepdims=True) if len(x) else 1.0
    return np.divide(x, top, out=np.zeros_like(x, dtype=float), where=top > 0)


@register_strategy("default")
def hybrid(c: Candidates, n: int, rng) -> Ranking:
    """Uncertainty x diversity, class-balanced.

    * Uncertainty: half the candidate's uncertainty mass (relative to the largest),
      half a class-balanced term: every structure's uncertainty mass is scaled by its
      own maximum over the candidates, so a small structure's worst place scores as
      high as a large one's; a structure's weight halves each time a pick serves it,
      so a batch rotates through the structures.
    * Diversity: distance, in the joint space of slice embedding and position, to the
      nearest annotated or already picked candidate (k-center greedy), relative to the
      largest such distance before the first pick. A batch is thus not five
      neighbouring slices, and scores decrease along the ranking.
    * Value = (0.1 + 0.9 * uncertainty) * diversity; with no uncertainty anywhere the
      choice degrades to plain k-center coverage.
    """
    feats = np.concatenate([c.embedding, _scaled_position(c.position)], axis=1)
    labelled = np.concatenate([c.labelled_embedding,
                               _scaled_position(c.labelled_position)], axis=1)
    mass = _normalise(c.score)
    per_class = _normalise(c.class_score[:, 1:])
    weight = np.ones(per_class.shape[1])
    dist = _min_dist(feats, labelled)
    scale = None  # fixed once distances are finite, so scores never increase
    picked = np.zeros(len(c), bool)
    out: Ranking = []
    for _ in range(min(n, len(c))):
        balanced = (per_class * weight).max(1) if per_class.size else np.zeros(len(c))
        unc = 0.5 * mass + 0.5 * balanced
        if scale is None and np.isfinite(dist).all():
            scale = max(float(dist.max()), 1e-12)
        div = np.ones(len(c)) if scale is None else dist / scale
        value = np.where(picked, -np.inf, (0.1 + 0.9 * unc) * div)
        i = int(np.argmax(value))
        note = "uncertain and unlike the annotated places"
        if per_class.size and per_class[i].max() > 0:
            cls = int(np.argmax(per_class[i] * weight))
            weight[cls] *= 0.5
        picked[i] = True
        out.append((i, float(value[i]), note))
        dist = np.minimum(dist, _min_dist(feats, feats[i:i + 1]))
    return out


#: Weight of position against one embedding block in the hybrid's distance: labels
#: propagate along the volume, so spatial neighbours are the most redundant picks.
POSITION_WEIGHT = 2.0


def _scaled_position(pos: np.ndarray) -> np.ndarray:
    """Positions scaled to total variance ``POSITION_WEIGHT ** 2`` when spread uniformly
    over [0, 1] (an embedding block has unit total variance)."""
    return POSITION_WEIGHT * pos / np.sqrt(pos.shape[1] / 12.0) if pos.size else pos
