"""Shipped samples: present, small, consistent (scribbles inside their reference class)."""

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.io import list_samples, load_sample
from napari_labeleff.io._samples import sample_dir


def test_list_samples():
    assert set(list_samples()) == {"brain", "ct"}


def test_sample_folder_is_small():
    total = sum(p.stat().st_size for p in sample_dir().iterdir() if p.is_file())
    assert total <= 15 * 2**20


@pytest.mark.parametrize("key, n_structures, spacing", [("brain", 2, 2.0), ("ct", 4, 3.0)])
def test_load_sample_is_consistent(key, n_structures, spacing):
    s = load_sample(key)
    assert s.volume.shape == s.scribbles.shape == s.labels.shape
    assert s.volume.channel_axis is None and s.volume.spacing == pytest.approx((spacing,) * 3)
    assert s.volume.geometry.axcodes == "RAS"
    assert len(s.class_names) == len(s.colors) == n_structures + 1 and s.class_names[0] == "background"
    assert set(np.unique(s.labels)) == set(range(n_structures + 1))
    for c in range(n_structures + 1):
        scribbled = s.scribbles == c + 1
        assert len(np.unique(np.nonzero(scribbled)[0])) == 3  # 3 axial slices per class
        assert np.all(s.labels[scribbled] == c)  # strokes never cross the reference boundary
    for c, z0, y0, x0, z1, y1, x1 in s.boxes:
        inside = np.zeros(s.labels.shape, bool)
        inside[z0:z1, y0:y1, x0:x1] = True
        assert np.all(inside[s.labels == c])


def test_ct_sample_has_one_box_per_organ():
    s = load_sample("ct")
    assert [b[0] for b in s.boxes] == [1, 2, 3, 4]
    assert s.class_names[1:] == ["liver", "spleen", "kidney_right", "kidney_left"]
    assert s.info["ground_truth"] == "model"


def test_unknown_sample():
    with pytest.raises(LabelEffError, match="key='heart' is not a sample; available: brain, ct"):
        load_sample("heart")
