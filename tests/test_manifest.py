"""The npe2 manifest resolves, every contribution imports, and the headless package
imports without Qt, napari or magicgui."""

import importlib
import subprocess
import sys

import pytest

npe2 = pytest.importorskip("npe2")


def manifest():
    return npe2.PluginManifest.from_distribution("napari-labeleff")


def test_manifest_validates_and_names_the_distribution():
    pm = manifest()
    assert pm.name == "napari-labeleff"
    npe2.PluginManifest.model_validate(pm.model_dump())  # the schema, re-checked
    pm.validate_imports()  # what `npe2 validate napari-labeleff --imports` runs
    assert {s.key for s in pm.contributions.sample_data} == {"brain", "ct"}
    assert [w.display_name for w in pm.contributions.widgets] == ["LabelEff"]


@pytest.mark.parametrize("command", manifest().contributions.commands, ids=lambda c: c.id)
def test_every_python_name_imports(command):
    module, _, attr = command.python_name.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_headless_modules_import_without_gui_libraries():
    code = (
        "import sys\n"
        "import napari_labeleff.io, napari_labeleff.engine, napari_labeleff.active\n"
        "import napari_labeleff.session, napari_labeleff.cli, napari_labeleff.cohort\n"
        "import napari_labeleff.cli._project, napari_labeleff.cohort._project\n"
        "bad = sorted(m for m in ('qtpy', 'napari', 'magicgui', 'PyQt5', 'PyQt6', 'PySide2',"
        " 'PySide6') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"headless import pulled in: {out.stdout.strip()}"
