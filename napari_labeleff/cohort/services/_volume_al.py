"""Volume-level active learning: which volume of a project to annotate next.

Candidates are the project's volumes with status ``"new"`` (nothing drawn yet). The
published model predicts each one (``Project.predict``: its scores are recorded in the
project, so a batch ``score`` job run beforehand makes this cheap) and embeds it
(``LoadedModel.embed``: pooled encoder-bottleneck features).

Strategies (:data:`VOLUME_STRATEGIES`)
-------------------------------------
``default``            uncertainty x representativeness x diversity (below).
``random``             uniformly random (seeded); needs no model.
``foreground_random``  random among volumes where the model predicts a structure
                       (nnActive's foreground-aware random baseline, at volume level);
                       volumes without predicted foreground follow in random order.

``default`` scores every candidate with

* uncertainty ``u``: mean normalised entropy over the voxels the model predicts as a
  structure or is unsure about (``scores["foreground_uncertainty"]``), scaled by the
  largest among the candidates;
* representativeness ``r``: mean cosine similarity of the volume's embedding to every
  other volume of the project (density weighting: typical volumes teach the model
  more than outliers), min-max scaled over the candidates;
* diversity ``d``: embedding distance to the nearest annotated volume or earlier pick
  (k-center greedy), relative to the largest such distance before the first pick;

and picks greedily the largest ``(0.2 + 0.8 x (u + r) / 2) x d``; a batch is thus
spread over the cohort rather than n copies of one kind of scan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..._errors import LabelEffError

VOLUME_STRATEGIES = ("default", "random", "foreground_random")
#: Volumes with these statuses are annotated (the diversity term keeps away from them).
ANNOTATED = ("weak", "accepted", "imported")


@dataclass
class VolumeSuggestion:
    """One ranked volume to annotate next.

    Attributes
    ----------
    volume_id : str
    score : float
        Higher = more useful to annotate; comparable within one ranking only.
    reason : str
    rank : int
        1-based.
    uncertainty : float or None
        The model's foreground uncertainty on the volume.
    representativeness : float or None
        Mean cosine similarity to the other volumes.
    diversity : float or None
        Distance to the nearest annotated volume (or earlier pick), relative.
    """

    volume_id: str
    score: float
    reason: str
    rank: int = 0
    uncertainty: float | None = None
    representativeness: float | None = None
    diversity: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _check(n, strategy, project):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise LabelEffError(f"n must be a positive integer, got {n!r}")
    if strategy not in VOLUME_STRATEGIES:
        raise LabelEffError(f"strategy must be one of {VOLUME_STRATEGIES}, got {strategy!r}")
    if not project.volume_ids:
        raise LabelEffError(f"project {project.folder.name} has no volumes: add some first")


def model_view(project, vids, *, device: str = "auto", embed: bool = True,
               cache: dict | None = None) -> dict:
    """Scores and embeddings of the published model for ``vids``.

    Returns
    -------
    dict
        volume id -> {"scores": dict, "embedding": ndarray (F,) or None}. ``cache``
        (a dict the caller keeps) avoids recomputing for the same model version.
    """
    version = project.require_published().version
    model = project.load_model(device) if embed else None
    out = {}
    for v in vids:
        key = (version, v)
        if cache is not None and key in cache:
            out[v] = cache[key]
            continue
        rec = project.volume(v)
        scores = rec.scores if rec.scores.get("model") == version else None
        if scores is None or "foreground_uncertainty" not in scores:
            scores = project.predict(v, device=device).scores
        emb = None
        if embed:
            vol = project.read_image(v, verify=False)
            emb = np.asarray(model.embed(np.asarray(vol.data), vol.spacing), dtype=np.float64)
        out[v] = {"scores": dict(scores), "embedding": emb}
        if cache is not None:
            cache[key] = out[v]
    return out


def _has_foreground(scores: dict) -> bool:
    return scores.get("foreground_uncertainty") is not None


def suggest_volumes(project, n: int = 3, *, strategy: str = "default", seed: int = 0,
                    device: str = "auto", cache: dict | None = None
                    ) -> list[VolumeSuggestion]:
    """Rank the project's unannotated volumes to annotate next.

    Parameters
    ----------
    project : Project
    n : int
        Number of suggestions (fewer when fewer volumes are unannotated).
    strategy : {"default", "random", "foreground_random"}
        See the module docstring.
    seed : int
        Seed of the random strategies.
    device : str
        Torch device for the model.
    cache : dict, optional
        Reused between calls (per model version and volume); default: a cache kept
        on the open ``project`` object.

    Returns
    -------
    list of VolumeSuggestion
        Ranked, best first.

    Raises
    ------
    LabelEffError
        Bad n or strategy, an empty project, no unannotated volume left, no
        published model (strategies other than ``random``).
    """
    _check(n, strategy, project)
    if cache is None:  # per open project: the panel asks again after every change
        cache = project.__dict__.setdefault("_volume_al_cache", {})
    records = project.volumes
    pool = [r.id for r in records if r.status == "new"]
    if not pool:
        raise LabelEffError(
            f"every volume of project {project.folder.name} is annotated already "
            "(status weak, accepted or imported): nothing to suggest")
    rng = np.random.default_rng(seed)
    if strategy == "random":
        order = rng.permutation(len(pool))[:n]
        return [VolumeSuggestion(pool[i], float(len(order) - k), "random pick", k + 1)
                for k, i in enumerate(order)]
    if project.published is None:
        raise LabelEffError(
            f"strategy {strategy!r} ranks volumes with the published model, and project "
            f"{project.folder.name} has none yet: train first, or use strategy='random'")
    if strategy == "foreground_random":
        view = model_view(project, pool, device=device, embed=False, cache=cache)
        fg = [v for v in pool if _has_foreground(view[v]["scores"])]
        rest = [v for v in pool if v not in fg]
        order = [fg[i] for i in rng.permutation(len(fg))] + \
            [rest[i] for i in rng.permutation(len(rest))]
        return [VolumeSuggestion(
            v, float(len(pool) - k),
            "random pick among volumes where the model predicts a structure"
            if v in fg else "random pick (the model predicts no structure here)", k + 1)
            for k, v in enumerate(order[:n])]
    annotated = [r.id for r in records if r.status in ANNOTATED]
    view = model_view(project, pool + annotated, device=device, cache=cache)
    return _rank_default(pool, annotated, view, n)


def _rank_default(pool, annotated, view, n) -> list[VolumeSuggestion]:
    emb = np.stack([view[v]["embedding"] for v in pool + annotated])
    emb = emb - emb.mean(0, keepdims=True)
    scale = np.sqrt((emb ** 2).sum(1).mean())
    emb = emb / max(scale, 1e-12)
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    m = len(pool) + len(annotated)
    density = (sim.sum(1) - 1.0) / max(1, m - 1)
    cand = np.arange(len(pool))
    lab = np.arange(len(pool), m)

    raw_u = np.array([view[v]["scores"].get("foreground_uncertainty") or 0.0 for v in pool])
    u = raw_u / raw_u.max() if raw_u.max() > 0 else np.zeros(len(pool))
    dens = density[cand]
    span = dens.max() - dens.min()
    r = (dens - dens.min()) / span if span > 0 else np.ones(len(pool))

    def nearest(idx, centres):
        if len(centres) == 0:
            return np.full(len(idx), np.inf)
        d = np.linalg.norm(emb[idx][:, None, :] - emb[centres][None, :, :], axis=-1)
        return d.min(1)

    dist = nearest(cand, lab)
    ref = None
    picked: list[int] = []
    out: list[VolumeSuggestion] = []
    for _ in range(min(n, len(pool))):
        if ref is None and np.isfinite(dist).all():
            ref = max(float(dist.max()), 1e-12)
        div = np.ones(len(pool)) if ref is None else dist / ref
        value = (0.2 + 0.8 * (u + r) / 2.0) * div
        value[picked] = -np.inf
        i = int(np.argmax(value))
        picked.append(i)
        rank_u = int((raw_u > raw_u[i]).sum()) + 1
        near = ("no volume annotated yet" if not len(lab) and len(picked) == 1 else
                f"distance {div[i]:.2f} (relative) to the nearest annotated or "
                "already suggested volume")
        out.append(VolumeSuggestion(
            pool[i], float(value[i]),
            f"model uncertainty {raw_u[i]:.3f} on its predicted structure (rank {rank_u} "
            f"of {len(pool)} unannotated volumes); typical of the cohort (mean similarity "
            f"{dens[i]:.2f}); {near}", len(out) + 1,
            float(raw_u[i]), float(dens[i]), float(div[i])))
        dist = np.minimum(dist, np.linalg.norm(emb[cand] - emb[cand[i]], axis=1))
    return out
