"""``labeleff project predict|score|export|suggest|qa``: cohort-scale commands.

:func:`add_batch` adds them to the ``project`` subparsers (``_project``). Batch jobs
run on ``dask.distributed`` (``--scheduler local`` starts a LocalCluster of
``--workers`` processes; an address such as ``tcp://host:8786`` uses an existing
cluster; ``serial`` runs in this process) with a progress bar on stderr. Nothing heavy
is imported at registration time.

``predict``, ``score``, ``export`` and ``qa`` only read the project: they open it
read-only and run while napari (another process) holds it for writing. The scores
they find go to ``OUT/scores.json`` and to the project (at once when no one holds it,
else through its inbox, recorded when a writer next opens it). ``predict`` and
``export`` never replace ``OUT/<volume id>.nii.gz`` without ``--overwrite``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .._errors import LabelEffError
from ._common import drive


def _job_options(p, *, out_required: bool, out_help: str) -> None:
    p.add_argument("path", help="project folder")
    p.add_argument("--out", required=out_required, help=out_help)
    p.add_argument("--scheduler", default="local",
                   help="local (default: a LocalCluster on this machine), serial (this "
                        "process), or a Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes of the local cluster (default 2; one thread each)")
    p.add_argument("--device", default="auto",
                   help="torch device on the workers: auto (default: each worker's GPU "
                        "when it has one, else its CPU), cpu, cuda, cuda:N")
    p.add_argument("--volumes", nargs="+", metavar="ID", help="only these volume ids")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to reach a scheduler address (default 10)")
    if out_required:
        p.add_argument("--overwrite", action="store_true",
                       help="replace OUT/<volume id>.nii.gz files of an earlier run")


def add_batch(sub) -> None:
    """Add the batch and ranking commands to ``labeleff project``'s subparsers."""
    p = sub.add_parser("predict", help="predict every volume with the published model "
                       "(Dask batch job) -> OUT/<volume id>.nii.gz")
    _job_options(p, out_required=True, out_help="output folder (created)")
    p.set_defaults(func=_cmd_job, kind="predict")

    p = sub.add_parser("score", help="record the model's uncertainty and estimated quality "
                       "of every volume (Dask batch job)")
    _job_options(p, out_required=False, out_help="also write OUT/scores.json")
    p.set_defaults(func=_cmd_job, kind="score")

    p = sub.add_parser("export", help="write accepted/imported masks with each volume's "
                       "geometry -> OUT/<volume id>.nii.gz (Dask batch job)")
    _job_options(p, out_required=True, out_help="output folder (created)")
    p.set_defaults(func=_cmd_job, kind="export")

    p = sub.add_parser("suggest", help="which volume to annotate next (ranked)")
    p.add_argument("path", help="project folder")
    p.add_argument("--n", type=int, default=3, help="number of volumes (default 3)")
    p.add_argument("--strategy", default="default",
                   help="default (uncertainty x representativeness x diversity), random "
                        "or foreground_random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the ranking as JSON")
    p.set_defaults(func=_cmd_suggest)

    p = sub.add_parser("qa", help="flag doubtful accepted/imported masks")
    p.add_argument("path", help="project folder")
    p.add_argument("--folds", type=int, default=2,
                   help="k-fold models that did not train on the checked masks (default "
                        "2; 0 = the published model)")
    p.add_argument("--threshold", type=float, default=None,
                   help="robust z-score from which a mask is doubtful (default 3.5)")
    p.add_argument("--all", dest="include_all", action="store_true",
                   help="list every mask, not only the doubtful ones")
    p.add_argument("--max-minutes", type=float, default=3.0,
                   help="training budget of each fold model (default 3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the items as JSON")
    p.add_argument("--rules-only", action="store_true",
                   help="check the project's anatomical rules only (no fold models)")
    p.set_defaults(func=_cmd_qa)

    p = sub.add_parser("rules", help="the project's anatomical rules: show, set from a "
                       "template or a file, learn from the accepted masks")
    p.add_argument("path", help="project folder")
    p.add_argument("--template", help="cardiac, brain_tumour or abdomen (matched to the "
                   "project's class names)")
    p.add_argument("--file", help="rules JSON (as exported beside a mask)")
    p.add_argument("--learn", action="store_true",
                   help="propose the relations that hold in the accepted masks")
    p.add_argument("--min-support", type=float, default=0.8,
                   help="share of the masks a proposed relation must hold in (default 0.8)")
    p.add_argument("--accept-learned", action="store_true",
                   help="add the proposals (with --learn) to the project's rules")
    p.add_argument("--clear", action="store_true", help="remove the project's rules")
    p.set_defaults(func=_cmd_rules)


def _cmd_rules(args) -> int:
    from ..rules import Rules

    changing = args.template or args.file or args.clear or args.accept_learned
    with _open(args.path, read_only=not changing) as p:
        if args.clear:
            p.set_rules(None)
            print("rules removed")
        elif args.template or args.file:
            rules = (Rules.template(args.template, p.class_names) if args.template else
                     Rules.from_json(Path(args.file).read_text(), class_names=p.class_names))
            for msg in getattr(rules, "unmatched", None) or []:
                print(f"template: {msg}", file=sys.stderr)
            p.set_rules(rules)
        if args.learn:
            proposals = p.propose_rules(min_support=args.min_support)
            print(f"{len(proposals)} proposed rule(s) (support: masks where it holds)")
            for q in proposals:
                print(f"  {q.text}")
            if args.accept_learned and proposals:
                p.accept_rule_proposals(proposals)
        rules = p.rules()
        if rules is None:
            print("no rules")
        else:
            print(f"{len(rules)} rule(s):")
            for r in rules:
                print(f"  {rules.text(r)}")
    return 0


def _open(path, read_only=False):
    from ..cohort import Project

    return Project.open(path, read_only=read_only)


def _cmd_job(args) -> int:
    from ..cohort.jobs import job_steps

    with _open(args.path, read_only=True) as p:
        report = drive(job_steps(p, args.kind, out=args.out, scheduler=args.scheduler,
                                 workers=args.workers, volumes=args.volumes,
                                 device=args.device, connect_timeout=args.timeout,
                                 overwrite=getattr(args, "overwrite", False)),
                       f"project {args.kind}", unit="volume")
    print(report.summary())
    if report.handed_over:
        print(f"  scores wait in {report.handed_over}: the project is open for writing "
              "elsewhere; they are recorded when it is next opened for writing")
    for vid, path in report.outputs.items():
        print(f"  {vid}: {path}")
    if args.kind == "score":
        for vid, r in report.results.items():
            if r.ok:
                s = r.scores
                print(f"  {vid}: uncertainty {s.get('uncertainty', 0):.3f}, quality "
                      f"{s['quality'] if s.get('quality') is None else round(s['quality'], 3)}")
    return 1 if report.failed else 0


def _cmd_suggest(args) -> int:
    from ..cohort.services import suggest_volumes

    with _open(args.path) as p:
        items = suggest_volumes(p, n=args.n, strategy=args.strategy, seed=args.seed,
                                device=args.device)
    for it in items:
        print(f"{it.rank}. {it.volume_id} (score {it.score:.3f}): {it.reason}")
    if args.json:
        Path(args.json).write_text(json.dumps([it.to_dict() for it in items], indent=1))
    return 0


def _cmd_qa(args) -> int:
    from ..cohort.services import QA_THRESHOLD, label_qa, rule_qa, write_qa

    threshold = QA_THRESHOLD if args.threshold is None else args.threshold
    with _open(args.path, read_only=True) as p:
        broken = rule_qa(p)
        if p.rules() is not None:
            print(f"{len(broken)} rule violation(s) in the accepted masks")
            for it in broken:
                print(f"  {it['id']}: {it['message']} [rule: {it['text']}; slice "
                      f"{it['slice']}; box {tuple(it['bbox'])}]")
        elif args.rules_only:
            raise LabelEffError(f"project {p.folder.name} has no rules; set them with "
                                "'labeleff project rules PATH --template NAME'")
        if args.rules_only:
            if args.json:
                Path(args.json).write_text(json.dumps(broken, indent=1, default=list))
            return 0
        items = label_qa(p, threshold=threshold, folds=args.folds,
                         include_all=args.include_all, device=args.device,
                         max_minutes=args.max_minutes,
                         progress=lambda k, n, step: print(
                             f"\rtraining fold model {k + 1}/{n}: step {step.step}",
                             end="", file=sys.stderr))
    print(file=sys.stderr)
    doubtful = [it for it in items if it.doubtful]
    print(f"{len(doubtful)} doubtful mask(s) at threshold {threshold:g}")
    for it in items:
        where = "" if it.bbox is None else f" in box {tuple(it.bbox)}"
        flag = "DOUBTFUL" if it.doubtful else "ok"
        print(f"  {it.volume_id}: {flag}, score {it.score:.1f}{where}: {it.reason}")
    if args.json:
        write_qa(args.json, items)
    return 0
