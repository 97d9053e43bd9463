"""Rule model: construction, bad input, contradictions, JSON, renames, templates."""

from __future__ import annotations

import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.io import Geometry
from napari_labeleff.rules import Rule, Rules

from .conftest import NAMES


def test_names_and_ids_give_the_same_rules():
    a = Rules([("inside", "LV cavity", "myocardium"), ("one_piece", "myocardium")],
              class_names=NAMES)
    b = Rules([("inside", 3, 2), ("one_piece", 2)], class_names=NAMES)
    assert a == b
    assert a.rules == (Rule("inside", 3, 2), Rule("n_pieces", 2, n=1))
    assert a.text(a.rules[0]) == "LV cavity inside myocardium"
    assert Rules([("inside", "lv_cavity", "MYOCARDIUM")], class_names=NAMES).rules[0] == Rule("inside", 3, 2)
    # a dict of names works too, duplicates are dropped
    c = Rules([("inside", 3, 2), ("inside", 3, 2)], class_names={1: "RV cavity", 2: "myocardium", 3: "LV cavity"})
    assert len(c) == 1


@pytest.mark.parametrize("rules, match", [
    ([("inside", "LV cavity", "myocardium"), ("inside", "myocardium", "LV cavity")], "contradict"),
    ([("inside", 3, 2), ("inside", 2, 1), ("inside", 1, 3)], "contradict"),
    ([("excludes", "LV cavity", "myocardium"), ("inside", "LV cavity", "myocardium")], "cannot exclude"),
    ([("inside", 3, 2), ("inside", 2, 1), ("excludes", 3, 1)], "cannot exclude"),
    ([("excludes", 1, 3), ("touches", 3, 1)], "contradict"),
    ([("volume", 2, 500.0, 100.0)], "no mask can meet"),
    ([("volume", 2, 100.0, None), ("volume", 2, None, 50.0)], "no mask can meet both"),
    ([("part_of", 3, 2), ("volume", 3, 1000.0, None), ("volume", 2, None, 10.0)], "no mask can meet both"),
    ([("volume", 2, None, 0)], "allows no voxel"),
    ([("within", 2, 3, 0)], "must be a finite number > 0"),
    ([("within", 2, 3)], "the form is"),
    ([("volume", 2, None, None)], "lower or an upper"),
    ([("volume", 2, -1, None)], ">= 0"),
    ([("n_pieces", 1, 0)], ">= 1"),
    ([("n_pieces", 1, 2), ("one_piece", 1)], "two piece rules"),
    ([("inside", "LV cavity", "epicardium")], "'epicardium' is not one of the classes"),
    ([("inside", 3, 7)], "class id 7 is not a structure"),
    ([("inside", 3, "background")], "background is implicit"),
    ([("inside", 3, 3)], "itself"),
    ([("near", 3, 2)], "relation 'near' is unknown"),
    ([("inside", 3)], "the form is"),
    ([("left_of", 1, 3)], "needs the image geometry"),
    ([("inside", 3, 2), ("inside", 3, 1)], "must form a tree"),
    ("inside", "list of rule tuples"),
])
def test_bad_rules_raise_clear_errors(rules, match):
    with pytest.raises(LabelEffError, match=match):
        Rules(rules, class_names=NAMES)


def test_bad_class_names():
    with pytest.raises(LabelEffError, match="both named"):
        Rules([], class_names=["a", "A"])
    with pytest.raises(LabelEffError, match="class_names"):
        Rules([], class_names="abc")


def test_side_rules_with_geometry_and_contradiction():
    g = Geometry.from_spacing((2.0, 1.0, 1.0))
    r = Rules([("left_of", 1, 3)], class_names=NAMES, geometry=g)
    assert r.rules[0].relation == "left_of"
    with pytest.raises(LabelEffError, match="contradicts another side rule"):
        Rules([("left_of", 1, 3), ("right_of", 1, 3)], class_names=NAMES, geometry=g)
    with pytest.raises(LabelEffError, match="geometry="):
        Rules([("left_of", 1, 3)], class_names=NAMES, geometry="nonsense")


def test_json_round_trip_and_class_changes():
    g = Geometry.from_spacing((2.0, 1.0, 1.0))
    r = Rules([("inside", 3, 2), ("touches", 1, 2), ("excludes", 1, 3), ("one_piece", 2),
               ("n_pieces", 1, 2), ("volume", 3, 10.0, None), ("left_of", 1, 3),
               ("within", 2, 3, 12.5)], class_names=NAMES, geometry=g)
    back = Rules.from_json(r.to_json(), geometry=g)
    assert back == r
    assert back.to_list() == r.to_list()
    t = Rules.template("brain_tumour", ["whole tumour", "tumour core", "enhancing tumour"])
    assert Rules.from_json(t.to_json()) == t
    # mapped onto a renumbered class list by name (a class was added in front)
    moved = Rules.from_json(r.to_json(), class_names=["aorta", *NAMES], geometry=g)
    assert moved.rules[0] == Rule("inside", 4, 3)
    # renamed
    ren = r.for_classes(["RV", "myocardium", "LV cavity"], renamed={"RV cavity": "RV"})
    assert ren.text(ren.rules[1]) == "RV touches myocardium"
    # removed class: clear error naming the rule, and the way out
    with pytest.raises(LabelEffError, match="names class 'myocardium', which is not among"):
        r.for_classes(["RV cavity", "LV cavity"])
    kept = r.without_class("myocardium").for_classes(["RV cavity", "LV cavity"])
    assert {x.relation for x in kept} == {"excludes", "n_pieces", "volume", "left_of"}
    assert r.to_list()[-1] == ("within", "myocardium", "LV cavity", 12.5)
    with pytest.raises(LabelEffError, match="not a rules document"):
        Rules.from_json('{"a": 1}')
    with pytest.raises(LabelEffError, match="cannot be parsed"):
        Rules.from_json("{")


def test_edits_return_new_validated_sets():
    r = Rules([("inside", 3, 2)], class_names=NAMES)
    r2 = r.added(("one_piece", 2))
    assert len(r) == 1 and len(r2) == 2
    assert len(r2.removed(0)) == 1 and r2.removed(("one_piece", "myocardium")) == r
    with pytest.raises(LabelEffError, match="contradict"):
        r.added(("inside", 2, 3))


@pytest.mark.parametrize("names, unmatched", [
    (["RV cavity", "LV myocardium", "LV cavity"], []),
    (["right ventricle", "Myocardium", "left_ventricle"], []),
    (["LV cavity", "myocardium"], ["RV cavity"]),
    (["liver", "LV cavity"], ["myocardium", "RV cavity"]),
])
def test_cardiac_template_matches_names(names, unmatched):
    r = Rules.template("cardiac", names)
    assert r.unmatched == unmatched
    texts = {r.text(x) for x in r}
    if not unmatched:
        lv, myo = names[2], names[1]
        assert f"{lv} inside {myo}" in texts
        assert f"{names[0]} never touches {lv}" in texts
        assert len(r) == 7
        assert f"{myo} within 15 mm of {lv}" in texts
    if unmatched == ["RV cavity"]:
        assert texts == {"LV cavity inside myocardium", "LV cavity in one piece",
                         "myocardium in one piece", "myocardium within 15 mm of LV cavity"}
    if len(unmatched) == 2:
        assert texts == {"LV cavity in one piece"}


def test_other_templates():
    t = Rules.template("brain_tumour", ["whole tumour", "tumour core", "enhancing tumour"])
    assert {t.text(x) for x in t} == {
        "enhancing tumour part of tumour core", "tumour core part of whole tumour",
        "whole tumour in one piece", "tumour core in one piece"}
    a = Rules.template("abdomen", ["liver", "spleen", "kidney_right", "kidney_left"])
    assert "spleen never touches liver" in {a.text(x) for x in a}
    assert not any(x.relation == "left_of" for x in a) and a.notes  # no geometry: said so
    g = Geometry.from_spacing((3.0, 3.0, 3.0))
    a2 = Rules.template("abdomen", ["liver", "spleen", "kidney_right", "kidney_left"], geometry=g)
    assert any(x.relation == "left_of" for x in a2)
    with pytest.raises(LabelEffError, match="template 'lungs' is unknown"):
        Rules.template("lungs", ["a"])


def test_rules_file_beside_a_mask(tmp_path):
    from napari_labeleff.rules import rules_path, write_beside

    assert rules_path(tmp_path / "a_mask.nii.gz").name == "a_mask.rules.json"
    assert rules_path("x/b.nrrd").name == "b.rules.json"
    assert rules_path("x/c").name == "c.rules.json"
    r = Rules.template("cardiac", NAMES)
    p = write_beside(r, tmp_path / "m.nii.gz")
    assert Rules.from_json(p.read_text()) == r
