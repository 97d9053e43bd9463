"""Refining a project volume with the published model as the graph method's prior."""

from __future__ import annotations

import time

import numpy as np

#: A published model is used as refine's prior only when its Dice on held-out
#: validation volumes with full masks is at least this: on the left-atrium tuning cases
#: the graph method reaches 0.77-0.85 from the initial scribbles alone, and models below
#: that pulled refine down (0.33 vs 0.85 in the learning-curve run of session 2).
PRIOR_MIN_DICE = 0.8


def prior_gate(mask_score, independent: bool = True):
    """Whether a model validated at ``mask_score`` (Dice on full masks, or None when
    no validation volume had one) may serve as refine's prior; returns (use, note).

    A score measured on the model's own training volumes (``independent=False``) says
    little (0.87-0.92 there while the prior lowered refine on the next volumes of the
    learning-curve run): the model is then not used as the prior."""
    if mask_score is None:
        return True, ("used unchecked: no validation volume has a full mask (accept or "
                      "import masks to let the project check the model)")
    if not independent:
        return False, (f"not used: its Dice on full masks ({mask_score:.3f}) comes from "
                       "the volumes it trained on; with 5 or more labelled volumes (or one "
                       "set as validation) the project holds some out to check it")
    if mask_score < PRIOR_MIN_DICE:
        return False, (f"not used: the model's validation Dice on full masks "
                       f"{mask_score:.3f} < {PRIOR_MIN_DICE} (a weaker model pulls refine "
                       "below the scribbles alone)")
    return True, f"used: validation Dice on full masks {mask_score:.3f}"


def prior_use(published) -> tuple[bool, str]:
    """:func:`prior_gate` of a :class:`~..store.PublishedModel` (or None)."""
    if published is None:
        return False, "no published model"
    return prior_gate(published.mask_score, published.validation_independent)


#: On a volume's first call the network leads only when its draft labels at least this
#: share of the user's strokes (per class, averaged) with their class.
STROKE_AGREEMENT = 0.9

#: Steps of per-volume adaptation of the network's output layer per call (default).
ADAPT_STEPS = 30

#: ``RefineResult.method`` (and its state's) of a call with the network in the loop.
NETWORK_METHOD = "project-network"

#: Refine modes of a project (``mode=``): "auto" lets the running score decide.
MODES = ("auto", "graph", "prior", "network", "fused")


def _confident(lead: float) -> float:
    """The network probability from which :func:`engine.fuse` keeps its answer: 0.99
    when it barely leads (the graph decides almost everywhere), 0.85 when it leads fully."""
    return 0.99 - 0.14 * float(lead)


def refine_steps(project, vid: str, scribbles, boxes=None, *, method: str = "auto",
                 device: str = "auto", state=None, use_prior: bool | None = None,
                 mode: str = "auto", adapt_steps: int | None = None, **options):
    """See :meth:`Project.refine_steps` (``project``: the Project facade)."""
    from ..._errors import LabelEffError
    from ._interactive import network_lead

    if mode not in MODES:
        raise LabelEffError(f"mode={mode!r} is unknown; allowed: {', '.join(MODES)}")
    t0 = time.perf_counter()
    lead, why = network_lead(project) if mode in ("auto", "network", "fused") else (0.0, mode)
    if mode in ("network", "fused") and lead == 0:
        lead = 1.0  # asked for: the network leads fully
    if mode == "auto":
        mode = "fused" if lead > 0 else "graph"
        if use_prior:
            mode = "prior"
        elif mode == "fused" and state is not None and state.method != NETWORK_METHOD:
            mode, why = "graph", f"{why}; the volume's first call used the graph method: it goes on"
        elif mode == "fused" and state is None:
            # a first call: the draft must agree with the user's own strokes
            agree = project.network_session(vid, device).draft_agreement(scribbles)
            if agree is not None and agree < STROKE_AGREEMENT:
                mode, why = "graph", (f"{why}; but its draft labels only {agree:.0%} of this volume's "
                                      f"strokes right (< {STROKE_AGREEMENT:.0%}): the graph method alone")
    elif mode in ("network", "fused") and project.published is None:
        raise LabelEffError(f"mode={mode!r} needs a published model; train one first")
    if adapt_steps is None:
        adapt_steps = ADAPT_STEPS
    if options.get("rules") is None:  # the call's rules, else the project's
        options["rules"] = project.rules()
    if mode in ("network", "fused"):
        result = yield from _network_steps(project, vid, scribbles, boxes, state=state, device=device,
                                           fuse_it=mode == "fused", lead=lead,
                                           adapt_steps=adapt_steps, why=why, rules=options["rules"])
    else:
        if state is not None and state.method == NETWORK_METHOD:
            state = None  # switching from the network: the graph starts afresh
        result = yield from _graph_steps(project, vid, scribbles, boxes, method=method, device=device,
                                         state=state, use_prior=True if mode == "prior" else use_prior,
                                         **options)
        result.info["project_lead"] = why
    result.info["project_mode"] = mode
    project.log_refine(vid, time.perf_counter() - t0)
    return result


def _network_steps(project, vid, scribbles, boxes, *, state, device, fuse_it, lead, adapt_steps, why,
                   rules=None):
    """The interactive network (prompts: strokes, boxes, the previous result), then
    :func:`engine.fuse` with the strokes on the image graph; a correction re-fuses only
    the box where the network's answer or the strokes changed (:func:`_changed_box`).
    ``rules`` (the call's, else the project's) then act on the result as in the graph
    method (``rules.apply``: the strokes win locally, conflicts are reported)."""
    import torch

    from ...engine import Progress, RefineResult, RefineState, fuse, normalised_entropy

    t0 = time.perf_counter()
    session = project.network_session(vid, device)
    scr = np.asarray(scribbles)
    prev = None
    if state is not None and state.method == NETWORK_METHOD and state.shape == tuple(session.shape):
        prev = state.payload
    yield Progress(0, 2, "network: predicting")
    net_probs, ninfo = session.predict(scr, boxes, None if prev is None else prev["labels"],
                                       adapt_steps=adapt_steps)
    net_labels = net_probs.argmax(axis=0).astype(np.uint8)
    info = {"network": ninfo, "project_lead": why, "lead": round(lead, 3),
            "first_result_s": round(time.perf_counter() - t0, 4), "model": session.model.version}
    probs = net_probs
    if fuse_it:
        yield Progress(1, 2, "network: first result; combining with the strokes", preview=net_labels)
        box = None if prev is None else _changed_box(net_labels, prev["net_labels"], scr, state.scribbles,
                                                     session.spacing)
        if box is None:
            probs, finfo = fuse(session.volume, net_probs, scr, spacing=session.spacing, device=device,
                                confident=_confident(lead))
        else:
            probs = prev["probabilities"].copy()
            if box:
                sl = (slice(None), *box)
                probs[sl], finfo = fuse(np.asarray(session.volume)[(..., *box)], net_probs[sl], scr[box],
                                        spacing=session.spacing, device=device, confident=_confident(lead))
                finfo["box"] = [[b.start, b.stop] for b in box]
            else:
                finfo = {"box": None}
        info["fuse"] = finfo
    else:
        probs = net_probs.copy()
        stroked = scr > 0
        if stroked.any():
            idx = np.nonzero(stroked)
            probs[(slice(None), *idx)] = 0.0
            probs[(scr[idx].astype(np.int64) - 1, *idx)] = 1.0
    if rules is not None and len(rules):
        from ...rules import apply as apply_rules

        probs, info["rules"] = apply_rules(rules, probs, session.spacing, scr)
    labels = probs.argmax(axis=0).astype(np.uint8)
    unc = normalised_entropy(torch.from_numpy(probs)).clamp_(0.0, 1.0).numpy()
    new_state = RefineState(method=NETWORK_METHOD, shape=tuple(labels.shape), n_classes=probs.shape[0],
                            scribbles=scr.copy(),
                            payload={"labels": labels, "probabilities": probs, "net_labels": net_labels,
                                     "model": session.model.version})
    info["seconds"] = round(time.perf_counter() - t0, 4)
    yield Progress(2, 2, "done")
    return RefineResult(labels=labels, probabilities=probs, uncertainty=unc, method=NETWORK_METHOD,
                        device=str(session.model.device), state=new_state, info=info)


def _changed_box(net_labels, prev_net_labels, scribbles, prev_scribbles, spacing, pad_mm: float = 16.0):
    """Slices of the box (grown by ``pad_mm``) around every voxel whose network label
    or stroke changed since the previous call; () when nothing changed; None when the
    box covers most of the volume (fuse it all)."""
    changed = net_labels != prev_net_labels
    if prev_scribbles is not None and prev_scribbles.shape == scribbles.shape:
        changed |= scribbles != prev_scribbles
    else:
        return None
    idx = np.argwhere(changed)
    if len(idx) == 0:
        return ()
    pad = [int(np.ceil(pad_mm / h)) for h in spacing]
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + np.asarray(pad), changed.shape)
    if np.prod(hi - lo) > 0.6 * changed.size:
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _graph_steps(project, vid: str, scribbles, boxes=None, *, method: str = "auto",
                 device: str = "auto", state=None, use_prior: bool | None = None, **options):
    """The graph method, with the published model as its prior when the gate allows."""
    from ...engine import refine_steps as engine_refine_steps

    prior, note = None, "no published model: refined without a prior"
    published = project.published
    if published is not None:
        use, why = prior_use(published)
        if use_prior is not None:
            use, why = bool(use_prior), f"use_prior={use_prior} ({why})"
        elif not use and not np.any(scribbles) and not boxes:
            use, why = True, f"used: nothing drawn yet, the model is all there is ({why})"
        if use:
            prior = project.predict(vid, device=device, record=False).probabilities
        note = f"prior from model {published}: {why}"
    vol = project.read_image(vid, verify=False)
    image = np.asarray(vol.data)
    result = yield from engine_refine_steps(image, scribbles, spacing=vol.spacing, boxes=boxes,
                                            prior=prior, method=method, device=device,
                                            state=state, **options)
    result.info["project_prior"] = note
    return result
