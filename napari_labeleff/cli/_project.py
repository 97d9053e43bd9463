"""``labeleff project ...``: the cohort project store from the command line.

Subcommands: ``create``, ``add``, ``status``, ``curve``, ``train``, ``accept``,
``import``, ``relocate``, ``remove`` (batch jobs ``predict``, ``export``, ``score``,
``suggest``, ``qa``: ``_batch``). The store is imported inside each command. ``status``
and ``curve`` open the project read-only (they run while napari holds the project).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .._errors import LabelEffError
from ..io import read_label_volume
from ._batch import add_batch
from ._common import drive, warnings_to_stderr


def add_project(subparsers) -> None:
    """Add ``project`` and its subcommands to ``labeleff``'s subparsers."""
    parser = subparsers.add_parser(
        "project", help="cohort projects: many volumes, one model learned across them",
        description="Cohort projects: add volumes, annotate them weakly (scribbles, boxes) in "
                    "the GUI or import masks, train a network across them, predict.",
    )
    sub = parser.add_subparsers(dest="project_command", required=True, metavar="ACTION")

    p = sub.add_parser("create", help="create a project folder")
    p.add_argument("path", help="new (or empty) project folder")
    p.add_argument("--classes", nargs="+", required=True, metavar="NAME",
                   help="structure names, background excluded (e.g. --classes 'left atrium')")
    p.set_defaults(func=_cmd_create)

    p = sub.add_parser("add", help="add volumes: files, folders of files, DICOM series folders")
    p.add_argument("path", help="project folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="NIfTI/NRRD/MetaImage file, DICOM series folder, zarr store, or a folder of them")
    p.add_argument("--series", help="DICOM Series Instance UID (single DICOM folder only)")
    p.add_argument("--recursive", action="store_true", help="also look in subfolders of folders")
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser("status", help="volumes, their status and annotation cost, the published model")
    p.add_argument("path", help="project folder")
    p.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("curve", help="learning curve: the model's Dice on each accepted mask "
                       "before it trained on it, the work spent, and how much the network leads")
    p.add_argument("path", help="project folder")
    p.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of lines")
    p.set_defaults(func=_cmd_curve)

    p = sub.add_parser("train", help="train a new model version; published only if not worse")
    p.add_argument("path", help="project folder")
    p.add_argument("--max-minutes", type=float, default=10.0, help="time budget (default 10)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--semi", action=argparse.BooleanOptionalAction, default=None,
                   help="semi-supervised terms on unlabeled volumes (learner's default if not given)")
    p.add_argument("--pretrain", action=argparse.BooleanOptionalAction, default=None,
                   help="self-supervised pretraining first (learner's default if not given)")
    p.add_argument("--self-training", type=float, default=None, metavar="SHARE",
                   help="after this share of the budget (0..1) the model labels the unlabeled volumes "
                        "and trains on its confident voxels too (default: off)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("accept", help="accept a mask for a volume (status 'accepted')")
    p.add_argument("path", help="project folder")
    p.add_argument("volume", help="volume id (see status)")
    p.add_argument("--mask", help="mask file on the volume's grid (default: the mask saved "
                   "for the volume in the GUI, 'final')")
    p.add_argument("--replace", action="store_true",
                   help="replace the volume's accepted or imported mask (refused without it)")
    p.set_defaults(func=_cmd_accept)

    p = sub.add_parser("import", help="import an existing mask (status 'imported')")
    p.add_argument("path", help="project folder")
    p.add_argument("volume", help="volume id")
    p.add_argument("mask", help="mask file (NIfTI...) on the volume's grid")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("relocate", help="point a volume at its moved image (content checked)")
    p.add_argument("path", help="project folder")
    p.add_argument("volume", help="volume id")
    p.add_argument("new_path", help="the image's new location")
    p.set_defaults(func=_cmd_relocate)

    p = sub.add_parser("remove", help="remove a volume (its annotations move to trash/)")
    p.add_argument("path", help="project folder")
    p.add_argument("volume", help="volume id")
    p.set_defaults(func=_cmd_remove)

    add_batch(sub)


def _open(path, read_only=False):
    from ..cohort import Project

    return Project.open(path, read_only=read_only)


def _cmd_create(args) -> int:
    from ..cohort import Project

    with Project.create(args.path, class_names=args.classes) as p:
        print(f"created project {p.folder} with structures: {', '.join(p.class_names)}")
    return 0


def _cmd_add(args) -> int:
    from ..io import can_read

    added, skipped = [], []
    with warnings_to_stderr(), _open(args.path) as p:
        for item in args.inputs:
            path = Path(item).expanduser()
            if path.is_dir() and not can_read(path):
                if args.series:
                    raise _error(f"--series applies to one DICOM folder; {path} is a folder of volumes")
                ids, bad = p.add_folder(path, recursive=args.recursive)
                added += ids
                skipped += bad
            else:
                added.append(p.add(path, series=args.series))
        for line in skipped:
            print(f"skipped {line}", file=sys.stderr)
        print(f"added {len(added)} volume(s): {', '.join(added) or '-'}"
              + (f"; skipped {len(skipped)}" if skipped else "")
              + f"; the project has {len(p.volume_ids)}")
    return 0 if added else 2


def _fmt(value, spec="{:.2f}") -> str:
    return "-" if value is None else spec.format(value)


def _cmd_status(args) -> int:
    with warnings_to_stderr(), _open(args.path, read_only=True) as p:
        rows = p.table()
        published = p.published
        if args.as_json:
            print(json.dumps({
                "project": str(p.folder), "classes": p.class_names,
                "published": None if published is None else {"version": published.version,
                                                              "score": published.score},
                "models": p.models, "volumes": rows,
            }, indent=1, default=str))
            return 0
        print(f"project:   {p.folder}")
        print(f"classes:   {', '.join(p.class_names)}")
        model = "none (train first)" if published is None else \
            f"{published} (validation score {_fmt(published.score, '{:.4f}')})"
        print(f"published: {model}")
        counts = {s: sum(r["status"] == s for r in rows) for s in ("new", "weak", "accepted", "imported")}
        print("volumes:   " + f"{len(rows)} (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
        if not rows:
            return 0
        header = ("id", "status", "role", "shape", "time", "interactions", "voxels", "quality", "uncertainty")
        table = [header] + [(
            r["id"] + ("" if r["present"] else " (missing!)"), r["status"], r["role"],
            "x".join(map(str, r["shape"])), f"{r['seconds'] / 60:.1f} min", str(r["interactions"]),
            str(r["voxels"]), _fmt(r["quality"]), _fmt(r["uncertainty"]),
        ) for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _cmd_curve(args) -> int:
    """One line per accepted volume, in the order accepted, then the network's lead."""
    with warnings_to_stderr(), _open(args.path, read_only=True) as p:
        items = p.curve()
        lead, reason = p.network_lead()
        if args.as_json:
            print(json.dumps({
                "project": str(p.folder),
                "curve": [{"order": i, "volume_id": it.volume_id,
                           "model_dice_before": it.model_dice_before,
                           "interactions": it.interactions, "seconds": it.seconds,
                           "model": it.model, "accepted": it.accepted}
                          for i, it in enumerate(items, 1)],
                "lead": lead, "lead_reason": reason,
            }, indent=1))
            return 0
        header = ("#", "volume", "model Dice before", "interactions", "seconds", "model")
        table = [header] + [(
            str(i), it.volume_id, _fmt(it.model_dice_before, "{:.4f}"), str(it.interactions),
            f"{it.seconds:.1f}", it.model or "-",
        ) for i, it in enumerate(items, 1)]
        if items:
            widths = [max(len(row[i]) for row in table) for i in range(len(header))]
            for row in table:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        else:
            print("no accepted volume yet (accept a mask to start the curve)")
        print(f"lead {lead:.2f}: {reason}")
    return 0


def _cmd_train(args) -> int:
    from ..cohort import run_training

    options = {k: v for k, v in (("semi", args.semi), ("pretrain", args.pretrain),
                                 ("self_training", args.self_training)) if v is not None}
    with warnings_to_stderr(), _open(args.path) as p:
        plan = p.prepare_training(max_minutes=args.max_minutes, device=args.device,
                                  seed=args.seed, **options)  # bad input fails before the bar
        if plan.resumed:
            print(f"resuming the interrupted run of {plan.version}", file=sys.stderr)
        try:
            report = p.finish_training(drive(run_training(plan), "train"))
        except KeyboardInterrupt:
            print("training interrupted; run the same command again to resume it", file=sys.stderr)
            raise
        print(report.message)
        val = getattr(report.train, "val_score", None)
        secs = getattr(report.train, "seconds", None)
        if secs is not None:
            print(f"trained {report.version} in {secs / 60:.1f} min"
                  + (f" (learner's validation Dice {val:.4f})" if val is not None else ""))
    return 0


def _read_mask(p, vid, path):
    """A mask file checked against the volume's grid, as an integer array."""
    rec = p.volume(vid)
    return read_label_volume(path, tuple(rec.shape), rec.geometry, what="mask",
                             owner=f"volume {vid!r}", grid=f"the voxel grid of volume {vid!r}")


def _cmd_accept(args) -> int:
    with _open(args.path) as p:
        if args.mask:
            mask = _read_mask(p, args.volume, args.mask)
        else:
            mask = p.labels(args.volume)["masks"].get("final")
            if mask is None:
                raise _error(f"volume {args.volume!r} has no saved 'final' mask (from the GUI); "
                             "give one with --mask FILE")
        p.accept(args.volume, mask, replace=args.replace)
        print(f"accepted the mask of {args.volume} ({int((mask > 0).sum())} structure voxels)"
              + (" (replacing the earlier one)" if args.replace else ""))
    return 0


def _cmd_import(args) -> int:
    with _open(args.path) as p:
        p.import_mask(args.volume, args.mask)
        print(f"imported {args.mask} for {args.volume}")
    return 0


def _cmd_relocate(args) -> int:
    with _open(args.path) as p:
        p.relocate(args.volume, args.new_path)
        print(f"{args.volume} now reads {p.volume(args.volume).path}")
    return 0


def _cmd_remove(args) -> int:
    with _open(args.path) as p:
        p.remove(args.volume)
        print(f"removed {args.volume}; its annotations are kept in {p.folder / 'trash'}")
    return 0


def _error(message: str):
    return LabelEffError(message)
