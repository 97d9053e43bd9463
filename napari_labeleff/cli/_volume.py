"""``labeleff info | convert | gui``: one volume at a time."""

from __future__ import annotations

import sys

import numpy as np

from .._errors import LabelEffError
from ..io import write_volume
from ._common import load_volume

SAMPLE_KEYS = ("brain", "ct")


def _intensity_range(data) -> tuple[float, float] | None:
    """(min, max) over finite voxels, computed blockwise for lazy data; None if none."""
    import dask.array as da

    arr = data if isinstance(data, da.Array) else da.from_array(data, chunks="auto")
    if arr.dtype.kind == "f":
        arr = da.where(da.isfinite(arr), arr, np.nan)
        lo, hi = da.compute(da.nanmin(arr), da.nanmax(arr))
    else:
        lo, hi = da.compute(arr.min(), arr.max())
    return None if not np.isfinite(lo) else (float(lo), float(hi))


def _join(values) -> str:
    return " x ".join(f"{v:g}" for v in values)


def add_info(sub) -> None:
    p = sub.add_parser("info", help="show shape, spacing, orientation and intensities of a volume")
    p.add_argument("file", help="NIfTI, NRRD, MetaImage, DICOM folder or zarr/OME-Zarr")
    p.add_argument("--series", help="DICOM Series Instance UID (default: the largest series)")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    vol = load_volume(args.file, series=args.series)
    g = vol.geometry
    meta = vol.metadata
    rng = _intensity_range(vol.data)
    lines = [
        ("file", str(vol.path)),
        ("format", meta["format"] + (" (lazy)" if meta.get("lazy") else "")),
        ("shape", f"{_join(vol.shape)} (Z x Y x X)"),
        ("spacing", f"{_join(vol.spacing)} mm (Z x Y x X)"),
        ("orientation", g.axcodes + (" (oblique)" if g.is_oblique else "")),
        ("origin", f"{_join(np.round(g.affine_ras[:3, 3], 4))} mm (RAS)"),
        ("dtype", str(vol.data.dtype)),
        ("intensity", "no finite voxels" if rng is None else f"{rng[0]:g} .. {rng[1]:g}"),
        ("channels", f"{vol.n_channels}" + (f" ({', '.join(meta['channel_names'])})"
                                              if meta.get("channel_names") else "")),
    ]
    if meta.get("nonfinite_voxels"):
        lines.append(("NaN/Inf", f"{meta['nonfinite_voxels']} voxels (refinement will refuse them)"))
    lines += [("note", note) for note in meta.get("notes", [])]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return 0


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert any supported volume to NIfTI, geometry kept")
    p.add_argument("input", help="NIfTI, NRRD, MetaImage, DICOM folder or zarr/OME-Zarr")
    p.add_argument("output", help="output .nii.gz or .nii")
    p.add_argument("--series", help="DICOM Series Instance UID (default: the largest series)")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    vol = load_volume(args.input, series=args.series)
    for note in vol.metadata.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    out = write_volume(args.output, vol.data, vol.geometry, source_path=vol.path)
    print(f"wrote {out} ({' x '.join(map(str, vol.data.shape))}, {vol.data.dtype}, {vol.geometry.axcodes})")
    return 0


def add_gui(sub) -> None:
    p = sub.add_parser("gui", help="open napari with the LabelEff panel")
    p.add_argument("file", nargs="?", help="volume to open (optional)")
    p.add_argument("--sample", choices=SAMPLE_KEYS, help="open a shipped sample instead")
    p.set_defaults(func=_cmd_gui)


def _cmd_gui(args) -> int:
    if args.file and args.sample:
        raise LabelEffError("give either FILE or --sample, not both")
    # Read before starting Qt so a bad file is a one-line error with exit status 2.
    volume = load_volume(args.file) if args.file else None
    if volume is not None:
        for note in volume.metadata.get("notes", []):
            print(f"note: {note}", file=sys.stderr)
    import napari

    from .._napari import layer_name, volume_layer_data

    viewer = napari.Viewer(title="napari-labeleff")
    if volume is not None:  # the plugin reader's own layer construction
        data, kwargs, _ = volume_layer_data(volume, layer_name(args.file))
        viewer.add_image(data, **kwargs)
    elif args.sample:
        viewer.open_sample("napari-labeleff", args.sample)
        _show_scribbled_slice(viewer)
    viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    napari.run()
    return 0


def _show_scribbled_slice(viewer) -> None:
    """Step the viewer to the axial slice holding the most example scribbles."""
    for layer in viewer.layers:
        if layer.metadata.get("labeleff_role") == "scribbles":
            data = np.asarray(layer.data)
            z = int(np.argmax(np.count_nonzero(data.reshape(data.shape[0], -1), axis=1)))
            viewer.dims.set_point(0, layer.data_to_world((z, 0, 0))[0])
            return
