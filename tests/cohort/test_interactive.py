"""The interactive network in a project (issue 19): prompt channels, simulated
interactions, windowed updates, adaptation, the running score and who leads.

The cohort here is built so that only the prompts can tell where the structure is:
every image is pure noise and the ball sits at a random place. A network that ignores
its prompt channels cannot find the ball; one that reads them must.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_labeleff._errors import LabelEffError
from napari_labeleff.cohort import Project
from napari_labeleff.cohort.prediction import InteractiveSession, mean_dice
from napari_labeleff.cohort.training import encode_prompts, n_prompt_channels, simulate
from napari_labeleff.io import Geometry, write_volume

SHAPE = (16, 32, 32)
TINY = {"device": "cpu", "num_threads": 2, "patch_size": (16, 32, 32), "features": (8, 8, 16, 16, 16, 8),
        "batch_size": 2, "semi": False, "learning_rate": 1e-2, "val_every": 1000}


def noise_ball(seed):
    """(noise image, ball mask at a random place)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    c = rng.uniform([5, 9, 9], [11, 23, 23])
    r = rng.uniform(4, 6)
    gt = (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= r * r).astype(np.uint8)
    return rng.normal(0, 1, SHAPE).astype(np.float32), gt


def stroke_through(gt, value):
    """A stroke of ``value`` along the structure's middle row on its middle slice."""
    s = np.zeros(SHAPE, np.uint8)
    zc = int(np.argwhere(gt).mean(axis=0)[0])
    rows = np.argwhere(gt[zc])
    s[zc, rows[:, 0].min() + 1: rows[:, 0].max(), int(np.median(rows[:, 1]))] = value
    return s, zc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project of 4 noise volumes, 3 accepted, and its interactive model (real learner)."""
    folder = tmp_path_factory.mktemp("interactive")
    gts = {}
    for i in range(4):
        image, gt = noise_ball(i)
        write_volume(folder / f"n{i}.nii.gz", image, Geometry.from_spacing((1.0, 1.0, 1.0)))
        gts[f"n{i}"] = gt
    p = Project.create(folder / "proj", ["ball"])
    p.add_folder(folder)
    for vid in ("n0", "n1", "n2"):
        p.set_role(vid, "train")
        p.accept(vid, gts[vid])
    report = p.train(max_minutes=5, max_steps=120, **TINY)
    assert report.published
    p.close()
    return folder, gts


@pytest.fixture
def project(trained):
    folder, gts = trained
    p = Project.open(folder / "proj")
    yield p, gts
    p.close()


# ---- simulated interactions ---------------------------------------------------------------
def test_simulated_prompts_are_what_a_user_would_draw():
    _, gt = noise_ball(3)
    lab = gt + 1  # a full mask in the scribble convention
    kinds = {}
    for seed in range(40):
        strokes, boxes, prev, kind = simulate(lab, 1, np.random.default_rng(seed))
        kinds[kind] = kinds.get(kind, 0) + 1
        drawn = strokes > 0
        # every stroke voxel carries its voxel's true class
        assert np.array_equal(strokes[drawn], lab[drawn])
        if kind == "empty":
            assert not drawn.any() and not boxes.any() and not prev.any()
        if kind in ("initial", "correction"):
            assert set(np.unique(strokes[drawn])) == {1, 2}  # both classes drawn
        if kind == "correction":
            assert prev.any() and not np.array_equal(prev, gt)  # a wrong previous result
            assert (drawn & (prev != gt)).any()  # a corrective stroke where it was wrong
        if boxes.any():  # a box encloses its structure
            assert boxes[0][gt > 0].all()
    assert set(kinds) == {"empty", "initial", "correction"} and min(kinds.values()) >= 5
    a = simulate(lab, 1, np.random.default_rng(7))
    b = simulate(lab, 1, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3]))  # resumable: same seed, same prompts


def test_weak_patches_use_their_own_scribbles():
    lab = np.zeros(SHAPE, np.uint8)
    lab[8, 3, :] = 1
    lab[8, 16, 10:14] = 2
    seen = {simulate(lab, 1, np.random.default_rng(s))[3] for s in range(20)}
    assert seen == {"weak", "empty"}
    strokes = next(simulate(lab, 1, np.random.default_rng(s))[0] for s in range(20)
                   if simulate(lab, 1, np.random.default_rng(s))[3] == "weak")
    assert np.array_equal(strokes, lab)


def test_prompt_channel_layout():
    import torch

    strokes = torch.zeros((1, *SHAPE), dtype=torch.long)
    strokes[0, 8, 4, 4] = 1
    strokes[0, 8, 20, 20] = 3  # structure 2 of K = 2
    prev = torch.zeros((1, *SHAPE), dtype=torch.long)
    prev[0, :4] = 2
    boxes = torch.zeros((1, 2, *SHAPE))
    boxes[0, 0, 2:5] = 1
    ch = encode_prompts(strokes, boxes, prev, 2)
    assert ch.shape == (1, n_prompt_channels(2), *SHAPE) == (1, 7, *SHAPE)
    assert ch[0, 0, 8, 4, 4] == 1 and ch[0, 0, 8, 5, 5] == 1  # background stroke, dilated
    assert ch[0, 2, 8, 20, 20] == 1 and ch[0, 1].sum() == 0  # structure 2's channel only
    assert ch[0, 3, 3].all() and ch[0, 4].sum() == 0  # box channels
    assert ch[0, 6, :4].all() and ch[0, 5].sum() == 0  # previous mask: structure 2


# ---- the trained network ------------------------------------------------------------------
def test_strokes_change_the_networks_output_where_they_are(project):
    """The images are noise: only the prompt channels say where the ball is."""
    p, gts = project
    model = p.load_model("cpu")
    assert model.config["prompt_channels"] == n_prompt_channels(1)
    image, gt = noise_ball(99)
    session = InteractiveSession(model, image, (1.0, 1.0, 1.0))
    draft, _ = session.predict(np.zeros(SHAPE, np.uint8))
    scr, zc = stroke_through(gt, 2)
    scr[zc, 1, :] = 1
    fresh = InteractiveSession(model, image, (1.0, 1.0, 1.0))
    prompted, _ = fresh.predict(scr)
    ball = np.zeros(SHAPE, bool)
    ball[zc] = gt[zc] > 0
    assert prompted[1][ball].mean() > draft[1][ball].mean() + 0.3
    assert mean_dice(prompted.argmax(0), gt, 2) > mean_dice(draft.argmax(0), gt, 2) + 0.2


def test_a_correction_repredicts_only_a_window(project):
    p, gts = project
    model = p.load_model("cpu")
    image, gt = noise_ball(98)
    session = InteractiveSession(model, image, (1.0, 1.0, 1.0), spread_mm=3.0)
    scr, zc = stroke_through(gt, 2)
    first, info = session.predict(scr)
    assert info["window"] == "volume"
    scr2 = scr.copy()
    scr2[zc, 1:3, 1:3] = 1  # a background stroke in a corner
    second, info = session.predict(scr2, previous=first.argmax(0))
    (z0, z1), (y0, y1), (x0, x1) = info["window"]
    assert (y1 - y0) < SHAPE[1] and (x1 - x0) < SHAPE[2]
    outside = np.ones(SHAPE, bool)
    outside[z0:z1, max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = False  # trilinear: 1 voxel
    assert np.array_equal(first[:, outside], second[:, outside])
    assert not np.array_equal(first, second)


def test_adaptation_fits_this_volumes_output_layer_only(project):
    """Adapting to the strokes changes the volume's copy of the output layer (toward
    the strokes' classes), never the project's model."""
    import torch

    p, _ = project
    model = p.load_model("cpu")
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    image, gt = noise_ball(97)
    scr, zc = stroke_through(gt, 2)
    scr[zc, 1, :] = 1
    plain, _ = InteractiveSession(model, image, (1.0, 1.0, 1.0)).predict(scr)
    session = InteractiveSession(model, image, (1.0, 1.0, 1.0))
    adapted, info = session.predict(scr, adapt_steps=30)
    assert info["adapt_seconds"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())
    stroke_voxels = scr > 0
    right = lambda probs: np.mean(probs.argmax(0)[stroke_voxels] == scr[stroke_voxels] - 1)  # noqa: E731
    assert right(adapted) >= right(plain) and right(adapted) > 0.95


def test_prompts_of_a_class_the_model_never_saw(project):
    p, _ = project
    session = InteractiveSession(p.load_model("cpu"), noise_ball(1)[0], (1.0, 1.0, 1.0))
    scr = np.zeros(SHAPE, np.uint8)
    scr[8, 8, 8] = 3  # structure 2 of a model trained for one structure
    with pytest.raises(LabelEffError, match="knows 1 structure"):
        session.predict(scr)
    with pytest.raises(LabelEffError, match="channel"):
        InteractiveSession(p.load_model("cpu"), np.zeros((2, *SHAPE), np.float32), (1.0, 1.0, 1.0))


def test_strokes_on_a_volume_of_another_spacing(project):
    p, _ = project
    image, gt = noise_ball(96)
    session = InteractiveSession(p.load_model("cpu"), image, (2.0, 0.7, 0.7))
    scr, _ = stroke_through(gt, 2)
    probs, _ = session.predict(scr)
    assert probs.shape == (2, *SHAPE) and np.allclose(probs.sum(0), 1, atol=1e-4)


# ---- the project: running score, lead, refine modes -----------------------------------------
def test_running_score_is_the_draft_dice_before_training(project):
    p, gts = project
    items = p.curve()
    assert [it.volume_id for it in items] == ["n0", "n1", "n2"]
    assert all(it.model_dice_before is None for it in items)  # no model when they were accepted
    draft = p.predict("n3", record=False).labels
    p.accept("n3", gts["n3"])
    item = p.curve()[-1]
    assert item.volume_id == "n3" and item.model == str(p.published)
    assert item.model_dice_before == pytest.approx(mean_dice(draft, gts["n3"], 2), abs=1e-4)
    # a volume the model trained on gives no running score
    p.accept("n0", gts["n0"], replace=True)
    assert {it.volume_id: it.model_dice_before for it in p.curve()}["n0"] is None
    # undo for the other tests (the fixture is shared)
    p.store.volumes.update("n3", status="new", curve={})


def test_the_running_score_decides_who_leads(project):
    p, gts = project
    p.store.volumes.update("n2", curve={**p.volume("n2").curve, "model_dice_before": 0.5})
    lead, why = p.network_lead()
    assert lead == 0 and "running score 0.500" in why
    s, _ = stroke_through(gts["n3"], 2)
    s[8, 1, :] = 1
    res = p.refine("n3", s)
    assert res.info["project_mode"] == "graph"
    p.store.volumes.update("n2", curve={**p.volume("n2").curve, "model_dice_before": 0.95})
    lead, why = p.network_lead()
    assert lead == 1 and "running score 0.950" in why
    p.store.volumes.update("n2", curve={**p.volume("n2").curve, "model_dice_before": None})
    lead, why = p.network_lead()
    assert lead == pytest.approx(0.5) and "no running score yet" in why


def test_network_modes_and_a_correction(project):
    p, gts = project
    gt = gts["n3"]
    s, zc = stroke_through(gt, 2)
    s[zc, 1, :] = 1
    net = p.refine("n3", s, mode="network")
    assert net.info["project_mode"] == "network" and net.labels[s == 2].all() and not net.labels[s == 1].any()
    fused = p.refine("n3", s, mode="fused")
    assert fused.info["project_mode"] == "fused" and "fuse" in fused.info
    assert mean_dice(fused.labels, gt, 2) > 0.5
    s2 = s.copy()
    wrong = (fused.labels == 1) & (gt == 0)
    if wrong.any():
        z, y, x = np.argwhere(wrong)[0]
        s2[z, y, x] = 1
    corr = p.refine("n3", s2, mode="fused", state=fused.state)
    assert corr.info["project_mode"] == "fused" and "fuse" in corr.info
    assert corr.labels[s2 == 1].max() == 0 and corr.labels[s2 == 2].min() == 1  # strokes win


def test_a_class_added_after_training_falls_back_to_the_graph(project, trained):
    folder, gts = trained
    p, _ = project
    p.add_class("cyst")
    try:
        lead, why = p.network_lead()
        assert lead == 0 and "until it is trained again" in why
        s, zc = stroke_through(gts["n3"], 2)
        s[zc, 1, :] = 1
        s[zc, 2, 2] = 3  # a stroke of the new class
        res = p.refine("n3", s)
        assert res.info["project_mode"] == "graph" and res.labels[zc, 2, 2] == 2
    finally:
        data = p.store.file.edit()
        data["class_names"] = ["ball"]
        p.store.file.commit(data)


def test_a_damaged_checkpoint_keeps_the_graph_working(project):
    p, gts = project
    weights = p.model_dir(p.published) / "model.pt"
    saved = weights.read_bytes()
    weights.write_bytes(b"damaged")
    p._predictor.forget()
    try:
        lead, why = p.network_lead()
        assert lead == 0 and "cannot be used" in why
        s, zc = stroke_through(gts["n3"], 2)
        s[zc, 1, :] = 1
        res = p.refine("n3", s)
        assert res.info["project_mode"] == "graph"
        assert p.published == "v0001"  # still published
    finally:
        weights.write_bytes(saved)
        p._predictor.forget()


def test_warm_start_from_a_plain_checkpoint(tmp_path):
    """A plain network's weights start the interactive one (all but the first conv)."""
    import torch

    from napari_labeleff.cohort.training import build_network, transfer_state

    plain = build_network({"features": (4, 4, 8, 8, 8, 4), "in_channels": 1, "n_classes": 2})
    inter = build_network({"features": (4, 4, 8, 8, 8, 4), "in_channels": 1 + n_prompt_channels(1),
                           "prompt_channels": n_prompt_channels(1), "n_classes": 2})
    n = transfer_state(plain.state_dict(), inter)
    assert n == len(plain.state_dict()) - 1  # the first convolution's weight differs
    x = torch.zeros((1, 1, 16, 32, 32))
    assert inter.eval()(x).shape == (1, 2, 16, 32, 32)  # image alone: empty prompts appended


def test_project_rules_act_on_the_networks_result(project):
    from scipy import ndimage as ndi

    from napari_labeleff.rules import Rules

    p, gts = project
    s, zc = stroke_through(gts["n3"], 2)
    s[zc, 1, :] = 1
    s[2, 28:31, 28:31] = 2  # a second, far-away "ball" stroke: a second piece
    bare = p.refine("n3", s, mode="network")
    assert ndi.label(bare.labels == 1)[1] >= 2 and "rules" not in bare.info
    p.set_rules(Rules([("one_piece", "ball")], class_names=["ball"]))
    try:
        ruled = p.refine("n3", s, mode="network")
        report = ruled.info["rules"]
        assert report["rules"] and ndi.label(ruled.labels == 1)[1] < ndi.label(bare.labels == 1)[1] \
            or report.get("conflicts")
    finally:
        p.set_rules(None)


def test_the_curve_keeps_the_order_of_accepting(tmp_path):
    """Two accepts in the same second come back in the order accepted, not added."""
    from .project_fakes import SHAPE as FAKE_SHAPE
    from .project_fakes import ball, make_volume

    with Project.create(tmp_path / "p", ["ball"]) as p:
        first = p.add(make_volume(tmp_path, "a", seed=1))
        second = p.add(make_volume(tmp_path, "b", seed=2))
        mask = ball(FAKE_SHAPE).astype(np.uint8)
        p.accept(second, mask)
        p.accept(first, mask)
        assert [it.volume_id for it in p.curve()] == [second, first]
