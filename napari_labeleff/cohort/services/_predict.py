"""The published model's prediction of a project volume, with its scores recorded."""

from __future__ import annotations

import numpy as np

from ..._errors import LabelEffError
from ..prediction import Prediction, summarise


class Predictor:
    """Loads the published model once (per version and device) and keeps the last
    prediction (the GUI asks for the same volume's prediction several times)."""

    def __init__(self, store):
        self._store = store
        self._models: dict = {}
        self.last: Prediction | None = None
        self._session = None

    def forget(self) -> None:
        """Drop the loaded model and the last prediction (a new model was published)."""
        self._models.clear()
        self.last = None
        self._session = None

    def session(self, vid: str, device: str = "auto"):
        """The interactive network's session on ``vid`` (one kept: the open volume)."""
        from ..prediction import InteractiveSession

        model = self.load_model(device)
        s = getattr(self, "_session", None)
        if s is None or s.volume_id != vid or s.model is not model:
            vol = self._store.volumes.read_image(vid, verify=False)
            s = InteractiveSession(model, np.asarray(vol.data), vol.spacing, volume_id=vid)
            self._session = s
        return s

    def load_model(self, device: str = "auto"):
        """See :meth:`Project.load_model`."""
        from .. import prediction

        published = self._store.models.require_published()
        key = (published.version, device)
        if key not in self._models:
            folder = self._store.models.folder(published.version)
            try:
                model = prediction.load_model(str(folder), device=device)
            except LabelEffError:
                raise
            except Exception as err:  # noqa: BLE001 - a damaged checkpoint, named
                raise LabelEffError(
                    f"published model {published} in {folder} cannot be loaded "
                    f"({type(err).__name__}: {err}); train again to replace it"
                ) from err
            self._models.clear()
            self._models[key] = model
        return self._models[key]

    def predict(self, vid: str, *, device: str = "auto", record: bool = True) -> Prediction:
        """See :meth:`Project.predict`."""
        store = self._store
        rec = store.volumes.get(vid)
        model = self.load_model(device)
        version = store.models.published.version
        last = self.last
        if last is not None and last.volume_id == vid and last.version == version:
            if record and not store.read_only and rec.scores != last.scores:
                store.volumes.update(vid, scores=last.scores)
            return last
        vol = store.volumes.read_image(vid)
        probs = np.asarray(model.predict(np.asarray(vol.data), vol.spacing), dtype=np.float32)
        k1 = len(store.class_names) + 1
        if probs.shape != (k1, *rec.shape):
            raise LabelEffError(
                f"model {version} returned probabilities of shape {probs.shape}; "
                f"expected {(k1, *rec.shape)}"
            )
        labels, uncertainty, scores = summarise(probs)
        pred = Prediction(labels, probs, uncertainty, version, vid, {"model": version, **scores})
        self.last = pred
        if record and not store.read_only:
            store.volumes.update(vid, scores=pred.scores)
        return pred
