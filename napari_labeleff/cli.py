"""``labeleff`` command line: headless commands over io/engine/active.

Each subcommand is a pair ``_add_<name>(subparsers)`` (its arguments) and
``_cmd_<name>(args) -> int``; register new ones in :data:`_SUBCOMMANDS`. Shared helpers
for commands: :func:`_load_volume`, :func:`_load_label_volume`, :func:`_load_boxes`,
:func:`_drive`.

Errors the user can fix (:class:`~napari_labeleff.LabelEffError`, :class:`OSError`)
print one line to stderr and exit with status 2; Ctrl-C exits with 130.
Only the ``gui`` command imports napari (lazily, inside the command).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import __version__
from ._errors import LabelEffError
from ._steps import drain
from .io import Volume, read_volume, write_labels, write_volume
from .io._atomic import atomic_write_text
from .io._write import label_table_paths, smallest_uint

SAMPLE_KEYS = ("brain", "ct")


# ---- shared helpers ------------------------------------------------------------------------
def _load_volume(path, series: str | None = None) -> Volume:
    """Read an image volume (any supported format) or fail with a one-line error."""
    return read_volume(path, series=series)


def _load_label_volume(path, like: Volume, what: str = "scribbles") -> np.ndarray:
    """Read a label volume that must lie on ``like``'s voxel grid.

    Parameters
    ----------
    path : str or Path
        Any format :func:`read_volume` reads.
    like : Volume
        The image the labels belong to.
    what : str
        Name used in error messages (``"scribbles"``, ``"mask"``...).

    Returns
    -------
    ndarray, shape (Z, Y, X)
        Non-negative integer labels in the smallest unsigned dtype.
    """
    vol = _load_volume(path)
    if vol.channel_axis is not None:
        raise LabelEffError(f"{what} {path} has {vol.n_channels} channels; expected a single label volume")
    if vol.shape != like.shape:
        raise LabelEffError(f"{what} {path} has shape {vol.shape} (Z, Y, X) but the image has {like.shape}")
    gap = float(np.abs(vol.geometry.affine_ras - like.geometry.affine_ras).max())
    if gap > 1e-3:
        raise LabelEffError(
            f"{what} {path} is not on the image's voxel grid (affines differ by up to {gap:.3g} mm)"
        )
    data = np.asarray(vol.data)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise LabelEffError(f"{what} {path} holds non-integer values; expected integer labels")
    if data.size and data.min() < 0:
        raise LabelEffError(f"{what} {path} holds negative values ({data.min():g}); labels must be >= 0")
    return data.astype(smallest_uint(int(data.max()) if data.size else 0))


def _load_boxes(path) -> list[tuple[int, ...]]:
    """Read boxes from JSON: a list of ``[c, z0, y0, x0, z1, y1, x1]`` or of objects with
    keys ``class, z0, y0, x0, z1, y1, x1`` (inclusive-exclusive voxel indices, c >= 1)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LabelEffError(f"boxes file {path} is not valid JSON ({err})") from err
    if not isinstance(raw, list):
        raise LabelEffError(f"boxes file {path} must hold a JSON list, got {type(raw).__name__}")
    keys = ("class", "z0", "y0", "x0", "z1", "y1", "x1")
    boxes = []
    for n, item in enumerate(raw):
        values = [item.get(k) for k in keys] if isinstance(item, dict) else item
        if not isinstance(values, list) or len(values) != 7 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise LabelEffError(
                f"boxes file {path}: box {n} = {item!r} must be 7 integers "
                "[c, z0, y0, x0, z1, y1, x1] or an object with keys " + "/".join(keys)
            )
        c, lo, hi = values[0], values[1:4], values[4:]
        if c < 1 or any(a < 0 or a >= b for a, b in zip(lo, hi)):
            raise LabelEffError(f"boxes file {path}: box {n} = {item!r} needs c >= 1 and 0 <= start < stop")
        boxes.append(tuple(values))
    return boxes


def _drive(generator, desc: str, unit: str = "step"):
    """Run a generator of :class:`~napari_labeleff.engine.Progress` with a progress bar
    on stderr and return its return value. Interrupting closes (cancels) it."""
    from tqdm import tqdm

    with tqdm(desc=desc, file=sys.stderr, unit=unit, dynamic_ncols=True) as bar:
        def show(progress):
            bar.total = progress.total
            bar.n = progress.step
            bar.set_postfix_str(progress.message, refresh=False)
            bar.refresh()

        return drain(generator, show)


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


# ---- commands ------------------------------------------------------------------------------
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="show shape, spacing, orientation and intensities of a volume")
    p.add_argument("file", help="NIfTI, NRRD, MetaImage, DICOM folder or zarr/OME-Zarr")
    p.add_argument("--series", help="DICOM Series Instance UID (default: the largest series)")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    vol = _load_volume(args.file, series=args.series)
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


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert any supported volume to NIfTI, geometry kept")
    p.add_argument("input", help="NIfTI, NRRD, MetaImage, DICOM folder or zarr/OME-Zarr")
    p.add_argument("output", help="output .nii.gz or .nii")
    p.add_argument("--series", help="DICOM Series Instance UID (default: the largest series)")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    vol = _load_volume(args.input, series=args.series)
    for note in vol.metadata.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    out = write_volume(args.output, vol.data, vol.geometry, source_path=vol.path)
    print(f"wrote {out} ({' x '.join(map(str, vol.data.shape))}, {vol.data.dtype}, {vol.geometry.axcodes})")
    return 0


def _add_gui(sub) -> None:
    p = sub.add_parser("gui", help="open napari with the LabelEff panel")
    p.add_argument("file", nargs="?", help="volume to open (optional)")
    p.add_argument("--sample", choices=SAMPLE_KEYS, help="open a shipped sample instead")
    p.set_defaults(func=_cmd_gui)


def _cmd_gui(args) -> int:
    if args.file and args.sample:
        raise LabelEffError("give either FILE or --sample, not both")
    # Read before starting Qt so a bad file is a one-line error with exit status 2.
    volume = _load_volume(args.file) if args.file else None
    if volume is not None:
        for note in volume.metadata.get("notes", []):
            print(f"note: {note}", file=sys.stderr)
    import napari

    from ._napari._reader import layer_name, volume_layer_data

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


def _refuse_inputs(outputs: dict, inputs: dict) -> None:
    """Raise if an output path names an input file (or another output) of the command.

    ``outputs`` / ``inputs``: option name -> path (None = not given).
    """
    import os

    def same(a, b) -> bool:
        a, b = Path(a).expanduser(), Path(b).expanduser()
        try:
            return os.path.samefile(a, b)
        except OSError:
            return a.absolute() == b.absolute()

    seen = {k: v for k, v in inputs.items() if v}
    for name, path in outputs.items():
        if not path:
            continue
        targets = [path]
        if name == "--out":
            targets += label_table_paths(path)
        for target in targets:
            for other, used in seen.items():
                if same(target, used):
                    raise LabelEffError(
                        f"{name}={path} would overwrite {other} {used}; choose another output path"
                    )
        seen[name] = path


def _add_suggest(sub) -> None:
    # option values are checked by active.check_options: importing the active package
    # (torch) here would slow down every labeleff command
    p = sub.add_parser("suggest", help="rank slices or regions to annotate next (JSON)")
    p.add_argument("image", help="NIfTI, NRRD, MetaImage, DICOM folder or zarr/OME-Zarr")
    p.add_argument("--scribbles", required=True,
                   help="label volume: 0 unannotated, 1 background, c + 1 structure c")
    p.add_argument("--boxes", help="JSON list of [c, z0, y0, x0, z1, y1, x1] boxes")
    p.add_argument("--n", type=int, default=10, help="number of suggestions (default 10)")
    p.add_argument("--granularity", default="slice", help="slice (default) or region")
    p.add_argument("--axis", type=int, default=0, help="slice axis: 0 (Z), 1 (Y), 2 (X)")
    p.add_argument("--strategy", default="default",
                   help="default, entropy, random, foreground_random or equidistant")
    p.add_argument("--uncertainty-kind", default="entropy", help="entropy or margin")
    p.add_argument("--method", default="auto", help="refinement method (default auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True, help="output file for the ranked list")
    p.add_argument("--uncertainty", help="also write the voxel uncertainty as NIfTI")
    p.set_defaults(func=_cmd_suggest)


def _cmd_suggest(args) -> int:
    from .active import check_options, suggest, uncertainty_map
    from .engine import refine_steps

    check_options(args.n, args.axis, args.granularity, args.strategy, args.uncertainty_kind,
                  n_members=1)  # one refinement: no ensemble for mutual information
    _refuse_inputs({"--json": args.json, "--uncertainty": args.uncertainty},
                   {"image": args.image, "--scribbles": args.scribbles, "--boxes": args.boxes})
    vol = _load_volume(args.image)
    scribbles = _load_label_volume(args.scribbles, vol)
    boxes = _load_boxes(args.boxes) if args.boxes else None
    image = np.asarray(vol.data)
    if vol.channel_axis is not None:
        image = np.moveaxis(image, vol.channel_axis, 0)
    result = _drive(refine_steps(image, scribbles, spacing=vol.spacing, boxes=boxes,
                                 method=args.method, device=args.device), "refine")
    ranked = suggest(image, scribbles, spacing=vol.spacing, result=result, n=args.n,
                     axis=args.axis, granularity=args.granularity,
                     strategy=args.strategy, boxes=boxes, seed=args.seed,
                     uncertainty=args.uncertainty_kind, device=args.device)
    out = {"image": str(vol.path), "scribbles": str(args.scribbles),
           "refine_method": result.method, "device": result.device,
           "granularity": args.granularity, "axis": args.axis, "strategy": args.strategy,
           "uncertainty": args.uncertainty_kind,
           "suggestions": [s.to_dict() for s in ranked]}
    atomic_write_text(args.json, json.dumps(out, indent=1))
    print(f"wrote {len(ranked)} suggestions to {args.json} (refined with {result.method})")
    for s in ranked[:3]:
        print(f"  {s.rank}. {s.reason}")
    if args.uncertainty:
        unc = uncertainty_map(result, args.uncertainty_kind, device=args.device)
        path = write_volume(args.uncertainty, unc, vol.geometry, source_path=vol.path)
        print(f"wrote uncertainty ({args.uncertainty_kind}) to {path}")
    return 0


def _add_refine(sub) -> None:
    p = sub.add_parser("refine", help="refine scribbles and/or boxes into a full 3D mask (NIfTI)")
    p.add_argument("image", help="NIfTI, NRRD, MetaImage, DICOM folder or zarr/OME-Zarr")
    p.add_argument("--scribbles", help="label volume on the image's grid: 0 unannotated, "
                   "1 background, c + 1 structure c (optional with --boxes)")
    p.add_argument("--boxes", help="JSON list of [c, z0, y0, x0, z1, y1, x1] voxel boxes")
    p.add_argument("--out", required=True, help="output mask .nii.gz or .nii (image geometry)")
    p.add_argument("--method", default="auto", help="auto (default), randomwalk, online, hybrid")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--probabilities", help="also write the (K + 1)-channel probabilities")
    p.set_defaults(func=_cmd_refine)


def _cmd_refine(args) -> int:
    import warnings

    from .engine import refine_steps

    if not args.scribbles and not args.boxes:
        raise LabelEffError("refine needs --scribbles, --boxes or both")
    _refuse_inputs({"--out": args.out, "--probabilities": args.probabilities},
                   {"image": args.image, "--scribbles": args.scribbles, "--boxes": args.boxes})
    vol = _load_volume(args.image)
    boxes = _load_boxes(args.boxes) if args.boxes else None
    if args.scribbles:
        scribbles = _load_label_volume(args.scribbles, vol)
    else:
        scribbles = np.zeros(vol.shape, np.uint8)
    image = vol.data  # lazy data stays lazy: the engine reads only the region it solves
    if vol.channel_axis is not None:
        image = np.moveaxis(np.asarray(image), vol.channel_axis, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = _drive(refine_steps(image, scribbles, spacing=vol.spacing, boxes=boxes,
                                     method=args.method, device=args.device), "refine")
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    written = write_labels(args.out, result.labels, vol.geometry, source_path=vol.path)
    counts = np.bincount(result.labels.ravel(), minlength=result.n_classes)
    print(f"wrote {written[0]} ({result.summary()}; voxels per class {counts.tolist()})")
    if args.probabilities:
        # float16 in memory on large volumes; written as float32 (asked for)
        path = write_volume(args.probabilities,
                            np.asarray(result.probabilities, dtype=np.float32),
                            vol.geometry, source_path=vol.path)
        print(f"wrote probabilities ({result.n_classes} channels) to {path}")
    return 0


def _add_project(sub) -> None:
    from .cohort._cli import register  # light: the store is imported inside each command

    register(sub)


#: Registered subcommands, in help order: functions adding their parser.
_SUBCOMMANDS = (_add_info, _add_convert, _add_gui, _add_refine, _add_suggest, _add_project)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labeleff",
        description="Label-efficient 3D medical image segmentation (napari-labeleff).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    """Run ``labeleff``; return the exit status (0 ok, 2 error, 130 interrupted)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return int(exit_.code or 0)
    try:
        return int(args.func(args) or 0)
    except LabelEffError as err:
        print(f"labeleff: error: {err}", file=sys.stderr)
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        print(f"labeleff: error: {err.strerror or err}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print("labeleff: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
