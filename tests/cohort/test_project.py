"""Project store: create/open round trip, adding volumes, weak labels, masks, status,
annotation log, roles, read-only access and bad inputs (issue 7)."""

import json
import shutil

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.cohort import Project, VolumeRecord
from napari_labeleff.io import Geometry, read_volume, write_labels

from .project_fakes import SHAPE, ball, make_volume, scribbles_for, write_dicom_series


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    return [make_volume(folder, f"case{i}", seed=i) for i in range(3)]


@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "proj", class_names=["left atrium"])
    yield p
    p.close()


def test_round_trip(tmp_path, images, project):
    vids = [project.add(path) for path in images]
    assert vids == ["case0", "case1", "case2"]
    s = scribbles_for()
    project.set_weak_labels("case0", scribbles=s, boxes=[(1, 2, 3, 3, 6, 9, 11)], seconds=12.5)
    mask = ball().astype(np.uint8)
    project.accept("case1", mask, seconds=3.0)
    project.close()

    with Project.open(tmp_path / "proj") as p:
        assert [v.id for v in p.volumes] == vids
        assert [v.status for v in p.volumes] == ["weak", "accepted", "new"]
        rec = p.volume("case0")
        vol = read_volume(images[0])
        assert rec.shape == SHAPE and rec.channels == 1
        assert np.allclose(rec.spacing, (2.0, 1.0, 1.0))
        assert np.allclose(rec.affine, vol.geometry.affine_ras)
        stored = p.labels("case0")
        assert np.array_equal(stored["scribbles"], s)
        assert stored["boxes"] == [(1, 2, 3, 3, 6, 9, 11)]
        assert np.array_equal(p.labels("case1")["mask"], mask)
        assert p.labels("case2")["mask"] is None
        totals = p.annotation_totals()
        assert totals["case0"]["seconds"] == pytest.approx(12.5)
        assert totals["case0"]["interactions"] == 1
        assert totals["case0"]["voxels"] == int(np.count_nonzero(s)) + 4 * 6 * 8
        assert totals["case1"]["interactions"] == 1 and totals["case2"]["interactions"] == 0
        log = p.annotation_log("case0")
        assert {e["kind"] for e in log} == {"scribble", "box"}
        assert {e["class"] for e in log} == {"background", "left atrium"}
        assert all(e["model"] is None for e in log)
        # the per-volume store is the session store inside the project folder
        assert p.store_path("case0").parent == tmp_path / "proj" / "volumes" / "case0"


def test_session_store_is_the_annotation_session(images, project):
    """The GUI edits the AnnotationSession directly; the project sees it and logs it."""
    from napari_labeleff.session import AnnotationSession

    vid = project.add(images[0])
    vol = read_volume(images[0])
    session = AnnotationSession.open(vol.data, vol.geometry, store_dir=project.store_dir(vid))
    assert session.store_path == project.store_path(vid)
    assert [c.name for c in session.classes] == ["background", "left atrium"]
    session.scribbles[4, 5, 5] = 2
    session.save_scribbles()
    assert project.volume(vid).status == "new"
    project.refresh_status(vid)
    assert project.volume(vid).status == "weak"
    # while the GUI holds the session, the project writes through it
    project.accept(vid, ball().astype(np.uint8), session=session)
    assert project.volume(vid).status == "accepted"
    with pytest.raises(LabelEffError, match="open in"):
        project.accept(vid, ball().astype(np.uint8))
    # a class added in the session (GUI) is adopted by the project
    session.add_class("appendage")
    session.close()
    project.session(vid).close()
    assert project.class_names == ["left atrium", "appendage"]


def test_erasing_everything_makes_a_volume_new_again(images, project):
    vid = project.add(images[0])
    project.set_weak_labels(vid, scribbles=scribbles_for())
    assert project.volume(vid).status == "weak"
    project.set_weak_labels(vid, scribbles=np.zeros(SHAPE, np.uint8))
    assert project.volume(vid).status == "new"
    kinds = [e["kind"] for e in project.annotation_log(vid)]
    assert kinds[-1] == "erase"


def test_ids_are_stable_safe_and_unique(tmp_path, project):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    p1 = make_volume(a, "patient 01 (T1)", seed=1)
    p2 = make_volume(b, "patient 01 (T1)", seed=2)
    assert project.add(p1) == "patient_01_T1"
    assert project.add(p2) == "patient_01_T1-2"
    with pytest.raises(LabelEffError, match="already in the project as volume 'patient_01_T1'"):
        project.add(shutil.copy(p1, tmp_path / "copy.nii.gz"))
    with pytest.raises(LabelEffError, match="volume_id"):
        project.add(make_volume(tmp_path, "c", seed=3), volume_id="../evil")


def test_add_folder_and_dicom_series(tmp_path, project):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for i in range(2):
        make_volume(folder, f"scan{i}", seed=10 + i)
    (folder / "notes.txt").write_text("not a volume")
    (folder / "broken.nii.gz").write_bytes(b"garbage")
    dicom = folder / "series1"
    rng = np.random.default_rng(0)
    write_dicom_series(dicom, rng.integers(0, 100, SHAPE), spacing_xyz=(1.0, 1.0, 2.0))
    added, skipped = project.add_folder(folder)
    assert added == ["scan0", "scan1", "series1"]
    assert len(skipped) == 1 and "broken.nii.gz" in skipped[0]
    assert project.volume("series1").shape == SHAPE
    with pytest.raises(LabelEffError, match="add its files with Project.add_folder"):
        project.add(tmp_path)


def test_channel_mismatch_and_spacing_warning(tmp_path, project):
    project.add(make_volume(tmp_path, "one", seed=1))
    with pytest.raises(LabelEffError, match=r"has 2 channel\(s\) but the volumes of this project have 1"):
        project.add(make_volume(tmp_path, "two", seed=2, channels=2))
    with pytest.warns(UserWarning, match="off the project's median"):
        project.add(make_volume(tmp_path, "coarse", seed=3, spacing=(10.0, 1.0, 1.0)))
    assert project.volume_ids == ["one", "coarse"]


def test_bad_weak_labels_and_masks(images, project):
    vid = project.add(images[0])
    with pytest.raises(LabelEffError, match=r"scribbles have shape \(2, 2, 2\)"):
        project.set_weak_labels(vid, scribbles=np.zeros((2, 2, 2), np.uint8))
    bad = scribbles_for()
    bad[0, 0, 0] = 3  # structure 2 does not exist
    with pytest.raises(LabelEffError, match=r"values 0..3; allowed: 0 \(unannotated\), 1 \(background\) or c \+ 1 for structures c = 1..1"):
        project.set_weak_labels(vid, scribbles=bad)
    with pytest.raises(LabelEffError, match="must hold integers"):
        project.accept(vid, np.zeros(SHAPE, np.float32))
    with pytest.raises(LabelEffError, match=r"values 2..2; allowed: 0 \(background\) or structures 1..1"):
        project.accept(vid, np.full(SHAPE, 2, np.uint8))
    with pytest.raises(LabelEffError, match="class 2 is not a structure"):
        project.set_weak_labels(vid, boxes=[(2, 0, 0, 0, 2, 2, 2)])
    with pytest.raises(LabelEffError, match="seconds"):
        project.set_weak_labels(vid, scribbles=scribbles_for(), seconds=-1)
    with pytest.raises(LabelEffError, match="volume='nope' is not in project"):
        project.accept("nope", np.zeros(SHAPE, np.uint8))
    assert project.volume(vid).status == "new"  # nothing was stored
    assert project.annotation_log() == []


def test_import_mask_checks_shape_and_geometry(tmp_path, images, project):
    vid = project.add(images[0])
    geom = read_volume(images[0]).geometry
    good = tmp_path / "good.nii.gz"
    write_labels(good, ball().astype(np.uint8), geom)
    project.import_mask(vid, good)
    assert project.volume(vid).status == "imported"
    assert project.volume(vid).mask_source == str(good)
    assert np.array_equal(project.labels(vid)["mask"], ball())

    other = project.add(images[1])
    small = tmp_path / "small.nii.gz"
    write_labels(small, np.zeros((4, 12, 14), np.uint8), geom)
    with pytest.raises(LabelEffError, match=r"has shape \(4, 12, 14\) \(Z, Y, X\) but volume 'case1' has \(8, 12, 14\)"):
        project.import_mask(other, small)
    moved = tmp_path / "moved.nii.gz"
    write_labels(moved, ball().astype(np.uint8), Geometry.from_spacing((2.0, 1.0, 1.0), (0.0, 5.0, 0.0)))
    with pytest.raises(LabelEffError, match=r"not on the voxel grid of volume 'case1': origin .* \(RAS mm; 5 mm apart\)"):
        project.import_mask(other, moved)
    coarse = tmp_path / "coarse.nii.gz"
    write_labels(coarse, np.zeros(SHAPE, np.uint8), Geometry.from_spacing((3.0, 1.0, 1.0)))
    with pytest.raises(LabelEffError, match=r"spacing \(3.0, 1.0, 1.0\) mm vs the image's \(2.0, 1.0, 1.0\)"):
        project.import_mask(other, coarse)
    assert project.volume(other).status == "new"


def test_missing_image_and_relocate(tmp_path, images, project):
    vid = project.add(images[0])
    moved = tmp_path / "elsewhere.nii.gz"
    shutil.move(images[0], moved)
    with pytest.raises(LabelEffError, match=rf"image {images[0]} is missing .*relocate\('case0'"):
        project.read_image(vid)
    with pytest.raises(LabelEffError, match="is not volume 'case0': its content differs"):
        project.relocate(vid, images[1])
    project.relocate(vid, moved)
    assert project.volume(vid).path == str(moved)
    assert project.read_image(vid).shape == SHAPE
    # a different file at the recorded path is refused
    shutil.copy(images[1], images[0])
    project._update_volume(vid, path=str(images[0]))
    with pytest.raises(LabelEffError, match="content of .* changed since it was added"):
        project.read_image(vid)


def test_read_only_and_second_writer(tmp_path, images, project):
    project.add(images[0])
    with pytest.raises(LabelEffError, match="is open in process"):
        Project.open(project.folder)
    ro = Project.open(project.folder, read_only=True)
    assert ro.volume_ids == ["case0"]
    with pytest.raises(LabelEffError, match="read-only"):
        ro.add(images[1])
    with pytest.raises(LabelEffError, match="read-only"):
        ro.set_weak_labels("case0", scribbles=scribbles_for())
    project.close()
    with pytest.raises(LabelEffError, match="read-only"):
        project.add(images[1])  # a closed project no longer writes
    with Project.open(project.folder) as again:
        again.add(images[1])


def test_create_and_open_refuse_bad_folders(tmp_path):
    with pytest.raises(LabelEffError, match="not a napari-labeleff project"):
        Project.open(tmp_path)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(LabelEffError, match="not empty"):
        Project.create(tmp_path, class_names=["a"])
    for bad in ("a", [], ["a", "A"], ["background"], [""]):
        with pytest.raises(LabelEffError, match="class_names"):
            Project.create(tmp_path / "new", class_names=bad)
    Project.create(tmp_path / "p", class_names=["a"]).close()
    with pytest.raises(LabelEffError, match="is a project"):
        Project.create(tmp_path / "p", class_names=["a"])


def test_remove_keeps_the_annotations(images, project):
    vid = project.add(images[0])
    project.set_weak_labels(vid, scribbles=scribbles_for())
    project.remove(vid)
    assert project.volume_ids == []
    trash = list((project.folder / "trash").iterdir())
    assert len(trash) == 1 and any(trash[0].rglob("session.json"))


def test_roles_and_validation_hold_out(tmp_path, project):
    from napari_labeleff.cohort.services import validation_ids as _validation_ids

    for i in range(6):
        project.add(make_volume(tmp_path, f"v{i}", seed=i))
    project.set_role("v1", "validation")
    recs = [VolumeRecord.from_dict({**v.to_dict(), "status": "weak"}) for v in project.volumes]
    held = _validation_ids(recs)
    assert held == {"v1", "v5"}  # explicit, and the 5th of the auto ones (v0, v2, v3, v4, v5)
    assert _validation_ids(recs[:2]) == {"v1"}
    with pytest.raises(LabelEffError, match="role='test' must be one of"):
        project.set_role("v0", "test")


def test_log_annotation_api(images, project):
    vid = project.add(images[0])
    project.log_annotation(vid, "correction", class_name="left atrium", voxels=40, seconds=4.0)
    project.log_annotation(vid, "scribble", class_name="background", voxels=10, seconds=1.0)
    t = project.annotation_totals()[vid]
    assert t == {"seconds": 5.0, "interactions": 2, "voxels": 50}
    with pytest.raises(LabelEffError, match="class_name='liver' is not one of"):
        project.log_annotation(vid, "scribble", class_name="liver")
    with pytest.raises(LabelEffError, match="voxels"):
        project.log_annotation(vid, "scribble", voxels=-3)
    with pytest.raises(LabelEffError, match="kind"):
        project.log_annotation(vid, "")
    rows = project.table()
    assert rows[0]["interactions"] == 2 and rows[0]["quality"] is None and rows[0]["present"]


def test_torn_log_line_is_skipped_and_not_glued(images, project):
    vid = project.add(images[0])
    project.log_annotation(vid, "scribble", voxels=1)
    with open(project.folder / "annotations.jsonl", "a") as f:
        f.write('{"time": "2026-01-01", "volume": "case0", "ki')  # crash mid-line
    project.log_annotation(vid, "scribble", voxels=2)
    assert [e["voxels"] for e in project.annotation_log(vid)] == [1, 2]
    lines = (project.folder / "annotations.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["voxels"] == 2


def test_log_scribble_change_and_status_from_memory(images, project):
    vid = project.add(images[0])
    old = np.zeros((2, 3, 3), np.uint8)
    new = old.copy()
    new[0, :2, 0] = 2  # 2 voxels of structure 1
    new[1, 0, :] = 1  # 3 voxels of background
    assert project.log_scribble_change(vid, old, new, seconds=2.5) == 5
    assert project.log_scribble_change(vid, new, new) == 0  # nothing changed: nothing logged
    log = project.annotation_log(vid)
    assert {(e["class"], e["voxels"]) for e in log} == {("left atrium", 2), ("background", 3)}
    assert len({e["op"] for e in log}) == 1 and sum(e["seconds"] for e in log) == 2.5
    project.refresh_status(vid, scribbles=scribbles_for(), boxes=[])
    assert project.volume(vid).status == "weak"
    assert project.labels(vid)["scribbles"].max() == 0  # only the status changed


def test_read_only_view_follows_the_writer_with_reload(images, project):
    view = Project.open(project.folder, read_only=True)
    project.add(images[0])
    assert view.volume_ids == []
    view.reload()
    assert view.volume_ids == ["case0"]
