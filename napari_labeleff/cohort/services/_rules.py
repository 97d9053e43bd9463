"""Anatomical rules of a project (issue 21): stored beside ``project.json``, learned
from the accepted masks, checked in label QA.

The rules live in ``<project>/rules.json`` (``Rules.to_json``, by class name, written
atomically); the project's classes give them their ids when read, so a renamed or
removed class is reported there with the rule that names it.
"""

from __future__ import annotations

from ..._errors import LabelEffError
from ...io.atomic import atomic_write_text
from ...rules import Rules, accept, learn, qa

#: File of the project's rules, beside project.json.
RULES_FILE = "rules.json"


def _masked(project) -> list[str]:
    return [r.id for r in project.volumes if r.status in ("accepted", "imported")]


def project_rules(project) -> Rules | None:
    """The project's rules, or None when it has none."""
    path = project.folder / RULES_FILE
    if not path.exists():
        return None
    try:
        return Rules.from_json(path.read_text(), class_names=project.class_names)
    except LabelEffError as exc:
        raise LabelEffError(f"{path}: {exc}") from None


def set_project_rules(project, rules: Rules | None) -> None:
    """Store ``rules`` as the project's (None removes them); needs the writer."""
    if project.read_only:
        raise LabelEffError(f"project {project.folder.name} is open read-only; rules are "
                            "changed by the process that holds it for writing")
    path = project.folder / RULES_FILE
    if rules is None or not len(rules):
        path.unlink(missing_ok=True)
        return
    if not isinstance(rules, Rules):
        raise LabelEffError(f"rules has type {type(rules).__name__}; pass a Rules object")
    atomic_write_text(path, rules.for_classes(project.class_names).to_json())


def propose_rules(project, *, min_support: float = 0.8):
    """Relations that hold in (nearly) all accepted or imported masks (``rules.learn``):
    proposals with ``rule``, ``support`` (k, n) and ``text``."""
    vids = _masked(project)
    if not vids:
        raise LabelEffError(f"project {project.folder.name} has no accepted or imported "
                            "mask to learn rules from")
    masks = [project.labels(v)["mask"] for v in vids]
    spacings = [project.volume(v).spacing for v in vids]
    return learn(masks, project.class_names, spacings, min_support=min_support)


def accept_proposals(project, proposals) -> Rules:
    """Add the chosen proposals to the project's rules (those it holds already are
    skipped; contradictions refused); returns the new rules."""
    chosen = accept(proposals, project.class_names)
    current = project_rules(project)
    new = chosen if current is None else current.added(
        *[r for r in chosen.rules if r not in current.rules])
    set_project_rules(project, new)
    return new


def rule_qa(project, rules: Rules | None = None) -> list[dict]:
    """Rule violations of every accepted or imported mask (``rules.qa`` items: ``id``,
    ``text``, ``bbox``, ``slice``, ``message``); [] without rules."""
    rules = project_rules(project) if rules is None else rules
    if rules is None:
        return []
    vids = _masked(project)
    return qa(rules, {v: (lambda v=v: project.labels(v)["mask"]) for v in vids},
              {v: project.volume(v).spacing for v in vids})
