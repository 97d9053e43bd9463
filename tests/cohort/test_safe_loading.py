"""Issue 22: a resume file or a checkpoint whose unpickling would run code (a crafted
file in a project shared on a network drive) is refused with a clear message, and the
code does not run."""

import json
import os

import pytest
import torch

from napari_labeleff import LabelEffError
from napari_labeleff.cohort.prediction import load_model
from napari_labeleff.cohort.training import train_steps

from .learning_synth import make_spec


class Payload:
    """Unpickling this runs ``exec`` (what a malicious pickle does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _assert_would_run(path, marker):
    """The file really is malicious: an unsafe load runs its code."""
    assert not marker.exists()
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.read_text() == "ran"
    marker.unlink()


def test_malicious_resume_file_is_refused_and_not_run(tmp_path):
    spec = make_spec(tmp_path, n_labelled=1, n_val=0, options={"max_steps": 2, "semi": False})
    os.makedirs(spec.run_dir, exist_ok=True)
    marker = tmp_path / "pwned.txt"
    resume = os.path.join(spec.run_dir, "resume.pt")
    torch.save({"fingerprint": "x", "run": {"stage": "train"}, "net": Payload(marker)}, resume)
    with pytest.raises(LabelEffError, match=r"resume state .* was refused: it holds more than "
                                            r"weights and plain values .*nothing in it was run"):
        next(train_steps(spec))
    assert not marker.exists()
    _assert_would_run(resume, marker)


def test_malicious_checkpoint_is_refused_and_not_run(tmp_path):
    folder = tmp_path / "v0001"
    folder.mkdir()
    marker = tmp_path / "pwned.txt"
    torch.save({"weight": Payload(marker)}, folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({
        "network": "BasicUNet", "features": [4, 8, 16, 32, 32, 4], "in_channels": 1,
        "n_classes": 2, "class_names": ["ball"], "target_spacing": [1.0, 1.0, 1.0],
        "patch_size": [16, 32, 32]}))
    with pytest.raises(LabelEffError, match=r"model\.pt was refused: .*nothing in it was run"):
        load_model(folder, device="cpu")
    assert not marker.exists()
    _assert_would_run(folder / "model.pt", marker)


def test_a_real_resume_file_loads_with_weights_only(tmp_path):
    """What training writes is tensors and plain values: a cancelled run resumes."""
    spec = make_spec(tmp_path, n_labelled=1, n_val=0, options={"max_steps": 3, "semi": False})
    gen = train_steps(spec)
    for p in gen:
        if p.stage == "train":
            break
    gen.close()
    state = torch.load(os.path.join(spec.run_dir, "resume.pt"), map_location="cpu", weights_only=True)
    assert state["run"]["step"] >= 1 and "opt" in state
    steps = [p.step for p in train_steps(spec) if p.stage == "train"]
    assert steps[0] == state["run"]["step"] + 1
