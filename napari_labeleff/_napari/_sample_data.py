"""npe2 sample data: shipped volumes with example scribbles (and boxes for the CT).

Layers carry the same metadata as layers the dock widget makes (role, source geometry
and path, class names and colours), so the widget adopts them when it binds the image.
"""

from __future__ import annotations

import pandas as pd

from ..io import load_sample
from ._layers import BOX_FEATURES, annotation_metadata, boxes_to_shapes, scribble_colormap
from ._reader import layer_name, volume_layer_data


def sample_layers(key: str) -> list[tuple]:
    """Layer data tuples of one sample: image, "Scribbles" and, if any, "Boxes".

    Parameters
    ----------
    key : {"brain", "ct"}
    """
    sample = load_sample(key)
    volume = sample.volume
    image = volume_layer_data(volume, layer_name(volume.path))
    # a shipped sample lives in the package: its autosave store goes to the user data
    # dir and its export defaults to the home folder, never next to the file
    metas = image[1]["metadata"]
    for meta in metas if isinstance(metas, list) else [metas]:
        meta["labeleff_sample"] = key
    geometry = volume.geometry
    source = str(volume.path)
    names = dict(enumerate(sample.class_names))
    colors = dict(enumerate(sample.colors))
    affine = geometry.napari_affine
    scribble_meta = annotation_metadata("scribbles", geometry, source, names, colors)
    scribble_meta["classes"] = [[n, list(c)] for n, c in zip(sample.class_names, sample.colors)]
    layers = [
        image,
        (
            sample.scribbles,
            {
                "name": "Scribbles",
                "affine": affine,
                "colormap": scribble_colormap(colors),
                "metadata": scribble_meta,
            },
            "labels",
        ),
    ]
    if sample.boxes:
        shapes, features = boxes_to_shapes(sample.boxes)
        layers.append(
            (
                shapes,
                {
                    "name": "Boxes",
                    "ndim": 3,
                    "affine": affine,
                    "shape_type": "rectangle",
                    "features": pd.DataFrame(features, columns=list(BOX_FEATURES)),
                    "edge_color": [colors[c] for c in features["class_id"]],
                    "face_color": "transparent",
                    "edge_width": 1.5,
                    "metadata": annotation_metadata("boxes", geometry, source, names, colors),
                },
                "shapes",
            )
        )
    return layers


def make_brain_sample() -> list[tuple]:
    """MNI152 T1 (2 mm) with example gray/white matter scribbles."""
    return sample_layers("brain")


def make_ct_sample() -> list[tuple]:
    """Abdominal CT (3 mm) with example organ scribbles and boxes."""
    return sample_layers("ct")
