"""Label QA panel: check a project's masks, list the doubtful ones, jump to one."""

import numpy as np
import pytest
from cohort.scale_synth import TINY, copy_project, corrupt, make_trained_project

from napari_labeleff._napari._qa_panel import LabelQAPanel

pytestmark = [pytest.mark.gui, pytest.mark.slow]

BAD = {"vol04": "extra", "vol05": "dilated", "vol06": "half"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained_qa_gui")
    p, gts = make_trained_project(folder, n=10, n_accepted=4,
                                  options=dict(TINY, max_steps=60))
    for v in list(gts)[4:]:
        p.accept(v, corrupt(gts[v], BAD[v]) if v in BAD else gts[v])
    p.close()
    return folder


def test_doubtful_masks_listed_and_opened(make_napari_viewer, qtbot, trained, tmp_path):
    copy_project(trained, tmp_path).close()
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    widget.runner.mode = "sync"
    ppanel = widget.project_panel
    ppanel.open_project(tmp_path / "proj")
    qa = widget.qa_panel  # the dock shows it under the project box
    assert isinstance(qa, LabelQAPanel)
    qa.models.value = "published model"
    assert qa.run_check()
    qtbot.waitUntil(lambda: qa.table.rowCount() > 0, timeout=60000)
    listed = {qa.table.item(r, 0).text() for r in range(qa.table.rowCount())}
    assert listed == set(BAD)
    assert qa.summary.text().startswith("3 doubtful of 10 masks")
    row = [qa.table.item(r, 0).text() for r in range(qa.table.rowCount())].index("vol04")
    qa.select(row)

    def shown():
        layer = widget.state.image_layer
        return layer is not None and layer.metadata.get("labeleff_volume") == "vol04"

    qtbot.waitUntil(shown, timeout=30000)
    item = qa.items[row]
    layer = widget.state.image_layer
    centre = (np.array(item.bbox[:3]) + np.array(item.bbox[3:]) - 1) / 2
    assert np.allclose(viewer.dims.point, layer.data_to_world(centre), atol=1.0)
