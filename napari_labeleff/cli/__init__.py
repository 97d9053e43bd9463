"""``labeleff`` command line: headless commands over io / engine / active / cohort.

Modules: ``_volume`` (``info``, ``convert``, ``gui``), ``_refine`` (``refine``,
``suggest``), ``_project`` (``project create | add | status | train | accept | import |
relocate | remove | curve``), ``_batch`` (``project predict | score | export | suggest | qa``),
``_common`` (reading inputs, progress bars: the public
:func:`napari_labeleff._steps.drive_with_progress_bar`). Each command is a pair
``add_<name>(subparsers)`` (its arguments) and ``_cmd_<name>(args) -> int``; register
new ones in :data:`SUBCOMMANDS`.

Errors the user can fix (:class:`~napari_labeleff.LabelEffError`, :class:`OSError`)
print one line to stderr and exit with status 2; Ctrl-C exits with 130.
Only the ``gui`` command imports napari (lazily, inside the command); nothing heavy is
imported before a command runs.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from .._errors import LabelEffError
from ._project import add_project
from ._refine import add_refine, add_suggest
from ._volume import add_convert, add_gui, add_info

__all__ = ["SUBCOMMANDS", "main"]

#: Registered subcommands, in help order: functions adding their parser.
SUBCOMMANDS = (add_info, add_convert, add_gui, add_refine, add_suggest, add_project)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labeleff",
        description="Label-efficient 3D medical image segmentation (napari-labeleff).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
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
