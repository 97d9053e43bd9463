"""``labeleff refine | suggest``: weak labels of one volume -> a mask, or where to draw next."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .._errors import LabelEffError
from ..io import write_labels, write_volume
from ..io.atomic import atomic_write_text
from ._common import drive, load_boxes, load_label_volume, load_volume, refuse_inputs


def add_suggest(sub) -> None:
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
    from ..active import check_options, suggest, uncertainty_map
    from ..engine import refine_steps

    check_options(args.n, args.axis, args.granularity, args.strategy, args.uncertainty_kind,
                  n_members=1)  # one refinement: no ensemble for mutual information
    refuse_inputs({"--json": args.json, "--uncertainty": args.uncertainty},
                   {"image": args.image, "--scribbles": args.scribbles, "--boxes": args.boxes})
    vol = load_volume(args.image)
    scribbles = load_label_volume(args.scribbles, vol)
    boxes = load_boxes(args.boxes) if args.boxes else None
    image = np.asarray(vol.data)
    if vol.channel_axis is not None:
        image = np.moveaxis(image, vol.channel_axis, 0)
    result = drive(refine_steps(image, scribbles, spacing=vol.spacing, boxes=boxes,
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


def add_refine(sub) -> None:
    p = sub.add_parser("refine", help="refine scribbles and/or boxes into a full 3D mask (NIfTI)")
    p.add_argument("image", help="NIfTI, NRRD, MetaImage, DICOM folder or zarr/OME-Zarr")
    p.add_argument("--scribbles", help="label volume on the image's grid: 0 unannotated, "
                   "1 background, c + 1 structure c (optional with --boxes)")
    p.add_argument("--boxes", help="JSON list of [c, z0, y0, x0, z1, y1, x1] voxel boxes")
    p.add_argument("--out", required=True, help="output mask .nii.gz or .nii (image geometry)")
    p.add_argument("--method", default="auto", help="auto (default), randomwalk, online, hybrid")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--probabilities", help="also write the (K + 1)-channel probabilities")
    p.add_argument("--classes", help="comma-separated structure names (structure c = the "
                   "c-th name); needed by --rules and --rules-template")
    p.add_argument("--rules", help="anatomical rules JSON (as written beside an exported "
                   "mask) to enforce")
    p.add_argument("--rules-template", help="cardiac, brain_tumour or abdomen, matched to "
                   "--classes")
    p.set_defaults(func=_cmd_refine)


def _load_rules(args, vol):
    """The rules of ``--rules`` / ``--rules-template`` for ``--classes``, or None."""
    if not args.rules and not args.rules_template:
        return None
    from ..rules import Rules

    if not args.classes:
        raise LabelEffError("--rules and --rules-template need --classes (the structure "
                            "names, e.g. --classes 'RV cavity,myocardium,LV cavity')")
    if args.rules and args.rules_template:
        raise LabelEffError("give --rules or --rules-template, not both")
    names = [n.strip() for n in args.classes.split(",")]
    if args.rules_template:
        rules = Rules.template(args.rules_template, names, geometry=vol.geometry)
        for msg in getattr(rules, "unmatched", None) or []:
            print(f"rules template: {msg}", file=sys.stderr)
        return rules
    return Rules.from_json(Path(args.rules).read_text(), class_names=names,
                           geometry=vol.geometry)


def _cmd_refine(args) -> int:
    import warnings

    from ..engine import refine_steps

    if not args.scribbles and not args.boxes:
        raise LabelEffError("refine needs --scribbles, --boxes or both")
    refuse_inputs({"--out": args.out, "--probabilities": args.probabilities},
                   {"image": args.image, "--scribbles": args.scribbles, "--boxes": args.boxes})
    vol = load_volume(args.image)
    boxes = load_boxes(args.boxes) if args.boxes else None
    if args.scribbles:
        scribbles = load_label_volume(args.scribbles, vol)
    else:
        scribbles = np.zeros(vol.shape, np.uint8)
    rules = _load_rules(args, vol)
    image = vol.data  # lazy data stays lazy: the engine reads only the region it solves
    if vol.channel_axis is not None:
        image = np.moveaxis(np.asarray(image), vol.channel_axis, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = drive(refine_steps(image, scribbles, spacing=vol.spacing, boxes=boxes,
                                     method=args.method, device=args.device, rules=rules),
                       "refine")
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    written = write_labels(args.out, result.labels, vol.geometry, source_path=vol.path)
    counts = np.bincount(result.labels.ravel(), minlength=result.n_classes)
    print(f"wrote {written[0]} ({result.summary()}; voxels per class {counts.tolist()})")
    if rules is not None:
        from ..rules import write_beside

        report = result.info.get("rules", {})
        print(f"rules enforced: {len(report.get('rules', []))}; wrote "
              f"{write_beside(rules, written[0])}")
        for msg in report.get("conflicts", []):
            print(f"rule conflict: {msg}", file=sys.stderr)
    if args.probabilities:
        # float16 in memory on large volumes; written as float32 (asked for)
        path = write_volume(args.probabilities,
                            np.asarray(result.probabilities, dtype=np.float32),
                            vol.geometry, source_path=vol.path)
        print(f"wrote probabilities ({result.n_classes} channels) to {path}")
    return 0
