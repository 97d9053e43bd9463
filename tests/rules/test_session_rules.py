"""The session stores its rules (by class name) in session.json; renames follow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.io import Geometry
from napari_labeleff.rules import Rules
from napari_labeleff.session import AnnotationSession


def _session(tmp_path):
    img = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    s = AnnotationSession.open(img, Geometry.from_spacing((2.0, 1.0, 1.0)), store_dir=tmp_path)
    for n in ("RV cavity", "myocardium", "LV cavity"):
        s.add_class(n)
    return img, s


def test_rules_persist_and_follow_renames(tmp_path):
    img, s = _session(tmp_path)
    s.set_rules(Rules.template("cardiac", ["RV cavity", "myocardium", "LV cavity"]))
    assert ["inside", "LV cavity", "myocardium"] in s.rules
    s.rename_class(3, "LV blood pool")
    assert ["inside", "LV blood pool", "myocardium"] in s.rules
    meta = json.loads((s.store_path / "session.json").read_text())
    assert ["inside", "LV blood pool", "myocardium"] in meta["rules"]
    store = s.store_path
    s.close()
    again = AnnotationSession.open(img, Geometry.from_spacing((2.0, 1.0, 1.0)), store_dir=tmp_path)
    assert again.store_path == store and again.rules == s.rules
    r = again.rules_object()
    assert r.text(r.rules[0]) == "LV blood pool inside myocardium"
    again.set_rules([])
    assert again.rules == [] and again.rules_object() is None
    again.close()


def test_removed_class_gives_a_clear_error_and_bad_rules_are_refused(tmp_path):
    _, s = _session(tmp_path)
    with pytest.raises(LabelEffError, match="contradict"):
        s.set_rules([("inside", 3, 2), ("inside", 2, 3)])
    assert s.rules == []
    s.set_rules([("inside", "LV cavity", "myocardium"), ("one_piece", "RV cavity")])
    s.remove_class(2)  # the myocardium
    with pytest.raises(LabelEffError, match="'myocardium' is not one of the classes"):
        s.rules_object()
    s.set_rules(Rules([tuple(r) for r in s.rules if "myocardium" not in r],
                      class_names=[c.name for c in s.classes[1:]]))
    assert s.rules == [["one_piece", "RV cavity"]]
    s.close()
