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
    relevance : ndarray, shape (N, K + 1), optional
        1 where the candidate lies in the extent of structure c (its strokes and the
        predicted components touching them), :data:`OUTSIDE` elsewhere; column 0
        (background) is unused. None: every candidate is relevant to every class.
    labelled_classes : ndarray of bool, shape (M, K + 1), optional
        Classes whose strokes each annotated place holds. None: every class.
    class_span : ndarray, shape (K + 1,), optional
        Size of each structure's extent in position units (largest side for regions),
        the scale of the class-aware distance. None: 1.
    presence : ndarray, shape (N, K + 1), optional
        How much of each structure the candidate holds (predicted voxels of c relative
        to the candidate holding most). None: no weighting.
    """

    position: np.ndarray
    score: np.ndarray
    class_score: np.ndarray
    foreground: np.ndarray
    embedding: np.ndarray
    labelled_position: np.ndarray
    labelled_embedding: np.ndarray
    relevance: np.ndarray | None = None
    labelled_classes: np.ndarray | None = None
    class_span: np.ndarray | None = None
    presence: np.ndarray | None = None

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


#: Relevance of a candidate outside every structure's extent (it is suggested only
#: once the structures' own places are covered).
OUTSIDE = 0.05


@register_strategy("default")
def hybrid(c: Candidates, n: int, rng) -> Ranking:
    """Class-aware uncertainty x coverage of the structures being segmented.

    For each structure c (1..K) and candidate i:

    * relevance: 1 inside the structure's extent (its strokes and the predicted
      components touching them), :data:`OUTSIDE` elsewhere, so suggestions go to the
      structures the user is segmenting rather than to uncertain tissue elsewhere;
      with ``presence``, times 0.25 + 0.75 sqrt(presence): the end slices of an
      extent, holding little of the structure, come after its body;
    * uncertainty: the candidate's uncertainty mass involving c, relative to the
      largest over the relevant candidates (a small structure's worst place scores as
      high as a large one's);
    * need: 1 / (1 + slices already holding strokes of c), so a class with few
      annotated places gets places;
    * coverage: distance (position, in units of half the structure's extent) to the
      nearest place holding strokes of c or already picked for c, capped at 1
      (bisection of the gaps; no strokes of c yet: 1).

    value_c = need x relevance x (0.1 + 0.9 x uncertainty) x coverage; the candidate's
    value is its best class's value times (0.2 + 0.8 x distance to the nearest
    annotated or picked place in the joint space of slice embedding and position,
    relative to the largest), so a batch is not a set of neighbours. A pick counts as
    a place of every structure whose extent holds it. Values never increase along
    the ranking.
    """
    n_c = len(c)
    k1 = c.class_score.shape[1]
    rel = np.ones((n_c, k1)) if c.relevance is None else np.asarray(c.relevance, float)
    if c.presence is not None:  # places holding more of the structure teach more
        rel = rel * (0.25 + 0.75 * np.sqrt(np.clip(c.presence, 0, 1)))
    lab_cls = (np.ones((len(c.labelled_position), k1), bool) if c.labelled_classes is None
               else np.asarray(c.labelled_classes, bool))
    span = np.ones(k1) if c.class_span is None else np.maximum(c.class_span, 1e-6)
    inside = rel[:, 1:] >= 1.0
    cs = c.class_score[:, 1:]
    top = np.where(inside, cs, 0).max(0, initial=0)
    top = np.where(top > 0, top, cs.max(0, initial=0))
    unc = np.divide(cs, top, out=np.zeros_like(cs, dtype=float), where=top > 0)
    unc = np.clip(unc, 0, 1)
    count = lab_cls[:, 1:].sum(0).astype(float)
    cover = np.ones((n_c, k1 - 1))
    for k in range(k1 - 1):
        d = _min_dist(c.position, c.labelled_position[lab_cls[:, k + 1]])
        cover[:, k] = np.minimum(1.0, 2.0 * d / span[k + 1])

    feats = np.concatenate([c.embedding, _scaled_position(c.position)], axis=1)
    labelled = np.concatenate([c.labelled_embedding,
                               _scaled_position(c.labelled_position)], axis=1)
    dist = _min_dist(feats, labelled)
    scale = None  # fixed once distances are finite, so scores never increase
    picked = np.zeros(n_c, bool)
    out: Ranking = []
    for _ in range(min(n, n_c)):
        need = 1.0 / (1.0 + count)
        per_class = need * rel[:, 1:] * (0.1 + 0.9 * unc) * cover
        best = per_class.max(1) if per_class.size else np.zeros(n_c)
        if scale is None and np.isfinite(dist).all():
            scale = max(float(dist.max()), 1e-12)
        div = np.ones(n_c) if scale is None else dist / scale
        value = np.where(picked, -np.inf, best * (0.2 + 0.8 * div))
        i = int(np.argmax(value))
        served = np.flatnonzero(inside[i])
        if per_class.size:
            cls = int(np.argmax(per_class[i]))
            note = (f"serves structure {cls + 1} ({int(count[cls])} annotated places "
                    f"so far){'' if inside[i, cls] else ', outside its extent'}")
            served = served if served.size else np.array([cls])
        else:
            note = "unlike the annotated places"
        picked[i] = True
        out.append((i, float(value[i]), note))
        count[served] += 1
        for k in served:
            d = np.abs(c.position - c.position[i:i + 1])
            cover[:, k] = np.minimum(cover[:, k],
                                     2.0 * np.sqrt((d ** 2).sum(1)) / span[k + 1])
        dist = np.minimum(dist, _min_dist(feats, feats[i:i + 1]))
    return out


#: Weight of position against one embedding block in the hybrid's distance: labels
#: propagate along the volume, so spatial neighbours are the most redundant picks.
POSITION_WEIGHT = 2.0


def _scaled_position(pos: np.ndarray) -> np.ndarray:
    """Positions scaled to total variance ``POSITION_WEIGHT ** 2`` when spread uniformly
    over [0, 1] (an embedding block has unit total variance)."""
    return POSITION_WEIGHT * pos / np.sqrt(pos.shape[1] / 12.0) if pos.size else pos
