"""A project's anatomical rules (issue 21): stored beside project.json, learned from the
accepted masks with their support, checked in label QA (Python and CLI)."""

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.cli import main
from napari_labeleff.cohort import Project
from napari_labeleff.rules import Rules

from .project_fakes import make_volume

SHAPE = (10, 24, 24)


def ring_mask(shift=0, leak=False):
    """A cavity (1) inside a ring (2) on slices 2..7; ``leak``: the cavity runs through
    a gap in the ring to the outside."""
    z, y, x = np.indices(SHAPE)
    r = np.hypot(y - 12, x - 12 - shift)
    m = np.zeros(SHAPE, np.uint8)
    slab = (z >= 2) & (z <= 7)
    m[slab & (r <= 8)] = 2
    m[slab & (r <= 5)] = 1
    if leak:
        m[3, 12, 12 + shift:] = 1
        m[3, 11:14, 18 + shift:23] = 1
    return m


@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "proj", class_names=["cavity", "ring"])
    for i in range(4):
        p.add(make_volume(tmp_path, f"v{i}", seed=i, shape=SHAPE))
    yield p
    p.close()


def test_rules_are_learned_stored_and_checked(project):
    vids = project.volume_ids
    for i, vid in enumerate(vids[:3]):
        project.accept(vid, ring_mask(shift=i - 1))
    proposals = project.propose_rules(min_support=1.0)
    texts = [q.text for q in proposals]
    assert any("cavity inside ring" in t and "3 of 3" in t for t in texts), texts
    assert project.rules() is None and project.rule_qa() == []

    rules = project.accept_rule_proposals(proposals)
    assert project.accept_rule_proposals(proposals[:1]) == rules  # held already: skipped
    again = Project.open(project.folder.parent / "proj", read_only=True)
    try:
        assert again.rules() == rules  # stored beside project.json, read back by name
    finally:
        again.close()
    assert project.rule_qa() == []  # the accepted masks hold their own rules
    project.accept(vids[3], ring_mask(leak=True))
    items = project.rule_qa()
    assert {it["id"] for it in items} == {vids[3]}
    assert any("cavity inside ring" in it["text"] and it["slice"] == 3 for it in items)


def test_project_rules_act_in_a_graph_refine(project):
    """A refine of a project volume without rules of its own enforces the project's."""
    vid = project.volume_ids[0]
    scr = np.zeros(SHAPE, np.uint8)
    scr[4, 12, 10:14] = 2  # cavity
    scr[4, 12, 18:20] = 3  # ring
    scr[4, 2, 2:6] = 1  # background
    scr[4, 21, 18:22] = 1
    plain = project.refine(vid, scr, mode="graph")
    assert "rules" not in plain.info
    project.set_rules(Rules([("inside", "cavity", "ring")], class_names=["cavity", "ring"]))
    ruled = project.refine(vid, scr, mode="graph")
    assert ruled.info["rules"]["rules"] == ["cavity inside ring"]
    none = project.refine(vid, scr, mode="graph", rules=Rules([], class_names=["cavity", "ring"]))
    assert "cavity inside ring" not in str(none.info.get("rules"))


def test_a_rule_naming_a_removed_class_is_reported(project, tmp_path):
    project.set_rules(Rules([("inside", "cavity", "ring")], class_names=["cavity", "ring"]))
    text = (project.folder / "rules.json").read_text().replace("ring", "wall")
    (project.folder / "rules.json").write_text(text)
    with pytest.raises(LabelEffError, match="rules.json.*wall"):
        project.rules()


def test_cli_rules_and_qa(project, capsys):
    vids = project.volume_ids
    for i, vid in enumerate(vids[:3]):
        project.accept(vid, ring_mask(shift=i - 1))
    project.accept(vids[3], ring_mask(leak=True))
    folder = str(project.folder)
    project.close()
    assert main(["project", "qa", folder, "--rules-only"]) != 0
    assert "no rules" in capsys.readouterr().err
    assert main(["project", "rules", folder, "--file", _rules_json(tmp := project.folder)]) == 0
    capsys.readouterr()
    assert main(["project", "qa", folder, "--rules-only"]) == 0
    out = capsys.readouterr().out
    assert "1 rule violation(s)" in out and f"{vids[3]}:" in out and "slice 3" in out
    assert main(["project", "rules", folder, "--clear"]) == 0
    assert "no rules" in capsys.readouterr().out
    del tmp


def _rules_json(folder):
    path = folder.parent / "rules_in.json"
    path.write_text(Rules([("inside", "cavity", "ring")],
                          class_names=["cavity", "ring"]).to_json())
    return str(path)
