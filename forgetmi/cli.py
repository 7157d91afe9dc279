"""The ``forgetmi`` command.

The jobs (train, retrain, unlearn, evaluate, report, select, rankings, ulira, protocol, sweep,
status, convert-sweep, forget, history, demo) come from the one job table, :data:`forgetmi.jobs.JOBS`,
and parse their own arguments; the data tools (make-demo-data, make-forget-set, audit,
build-cache, keywords, import-checkpoint) and `configs` (the shipped files) are defined
here. ``main(argv)`` runs in-process.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from forgetmi import __version__
from forgetmi.errors import ForgetMIError, exit_on_error
from forgetmi.jobs import JOBS
from forgetmi.jobs.help import JobParser
from forgetmi.utils.arguments import number_in
from forgetmi.utils.logs import hide_dependency_warnings  # noqa: F401 (known by this name)

logger = logging.getLogger("forgetmi")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="experiment YAML (configs/experiments/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="--key=value",
                        help="config overrides, e.g. --data.root=DIR --image_size=512")


def _load_experiment(args, extra: list[str]):
    from forgetmi.config import ExperimentConfig, load_config
    return load_config(ExperimentConfig, args.config, list(args.overrides) + extra)


def cmd_make_demo_data(args, extra) -> int:
    from forgetmi.synthetic import generate_dataset
    paths = generate_dataset(args.out, n_patients=args.patients, image_size=args.image_size,
                             seed=args.seed, workers=args.workers, overwrite=args.overwrite,
                             **{k: v for k, v in (("test_fraction", args.test_fraction),
                                                  ("label_noise", args.label_noise),
                                                  ("atypical", args.atypical))
                                if v is not None})
    logger.info("stand-in dataset written to %s", paths.root)
    return 0


def cmd_check_holdout(args, extra) -> int:
    from forgetmi.synthetic.draws import compare_draws, render
    from forgetmi.utils.atomic import refuse_to_replace, write_json

    if args.json:
        refuse_to_replace([args.json], args.force)
    if args.retrained:
        return _retrained_coverage(args)
    if args.draws < 2:  # the interval over draws needs two at least
        raise ForgetMIError(f"--draws {args.draws}: expected 2 or more draws")
    settings = {k: v for k, v in (("test_fraction", args.test_fraction),
                                  ("label_noise", args.label_noise),
                                  ("atypical", args.atypical)) if v is not None}
    table, summary = compare_draws(args.draws, args.patients, args.first_seed, **settings)
    sys.stdout.write(render(table, summary) + "\n")
    if args.json:
        write_json(args.json, {"draws": table.to_dict("records"), "summary": summary,
                               "patients": args.patients, **settings})
    return 0


def _retrained_coverage(args) -> int:
    """The headline interval's coverage of 0.5 on retrained models' forget and holdout rows."""
    from forgetmi.evaluation.evaluate import _predictions, _run_config
    from forgetmi.evaluation.mia import training_losses
    from forgetmi.evaluation.signal import interval_coverage

    covered = []
    for run in map(Path, args.retrained):
        cfg = _run_config(run)
        if cfg.data.holdout is None:
            raise ForgetMIError(f"{run}/config.yaml: no data.holdout; the check compares "
                                "forget rows with holdout rows")
        p = _predictions(cfg, run / "model", ("forget", "holdout"), 64)
        result = interval_coverage(training_losses(p["forget"]), training_losses(p["holdout"]),
                                   p["forget"]["group"], p["holdout"]["group"],
                                   splits=args.splits, seed=cfg.seed)
        covered.append((result["coverage"] * result["splits"],
                        result["bootstrap_coverage"] * result["splits"], result["splits"]))
        sys.stdout.write(f"{run}: 95% interval holds 0.5 in {result['coverage']:.1%} of "
                         f"{result['splits']} reassignments of its {result['patients']} unseen "
                         f"patients (mean width {result['mean_width']:.3f}; the percentile "
                         f"bootstrap's {result['bootstrap_coverage']:.1%}, width "
                         f"{result['bootstrap_mean_width']:.3f}; mean AUC "
                         f"{result['mean_auc']:.3f})\n")
    if len(covered) > 1:
        held, bootstrap_held, total = (sum(c[i] for c in covered) for i in range(3))
        sys.stdout.write(f"pooled: {held / total:.1%} of {total:.0f} ({_wilson(held, total)}); "
                         f"the percentile bootstrap's {bootstrap_held / total:.1%} "
                         f"({_wilson(bootstrap_held, total)})\n")
    return 0


def _wilson(held: float, total: float, z: float = 1.96) -> str:
    """95% Wilson interval of a coverage, as text: how far the measured share may be off."""
    share = held / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = (z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
            / (1 + z * z / total))
    return f"95% CI {centre - half:.1%}–{centre + half:.1%}"


def cmd_make_forget_set(args, extra) -> int:
    from forgetmi.data.formats import read_forget_set, read_split
    from forgetmi.data.splits import (draw_forget_sets, draw_holdout, make_forget_sets,
                                      side_summary)
    from forgetmi.utils.atomic import refuse_to_replace, write_csv

    split = read_split(args.split)
    out = Path(args.out)
    columns = ["subject_id", "study_id", "dicom_id", "edema_severity", "fold"]
    if args.forget and args.no_holdout:
        raise ForgetMIError("--forget draws a holdout and --no-holdout draws none: give one")
    if args.forget:
        # A holdout for forget sets the user already has (e.g. the published ones).
        forget = read_forget_set(args.forget)
        forget = split[split["subject_id"].isin(forget["subject_id"])]
        sets, holdout = {}, draw_holdout(split, forget, seed=args.seed)
    elif args.no_holdout:
        sets, holdout = make_forget_sets(split, args.percents, seed=args.seed), None
    else:
        draw = draw_forget_sets(split, args.percents, seed=args.seed)
        sets, holdout = draw.forget_sets, draw.holdout
    targets = [(out / f"forget_set_{percent}per.csv", rows) for percent, rows in sets.items()]
    if holdout is not None:
        targets.append((out / "holdout.csv", holdout))
    refuse_to_replace([t for t, _ in targets], args.force)   # every file, before the first
    for target, rows in targets:
        write_csv(target, rows.rename(columns={"severity": "edema_severity"})[columns])
        logger.info("%s: %d rows (%.2f%% of %d), %d patients, %.1f rows per patient", target,
                    len(rows), 100 * len(rows) / len(split), len(split),
                    rows["subject_id"].nunique(), side_summary(rows)["rows_per_patient"])
    if holdout is not None:
        logger.info("the holdout's %d rows (%d patients) are trained on by no model: set "
                    "data.holdout to %s; the forget-vs-unseen attacks compare the forget rows "
                    "with them", len(holdout), holdout["subject_id"].nunique(), out / "holdout.csv")
        if args.forget:
            logger.info("forget set %s: %.1f rows per patient; holdout: %.1f (drawn with the "
                        "same weighting from the patients left; compare the two)", args.forget,
                        side_summary(forget)["rows_per_patient"],
                        side_summary(holdout)["rows_per_patient"])
    return 0


def cmd_audit(args, extra) -> int:
    from forgetmi.data.formats import read_forget_set, read_split
    from forgetmi.data.splits import (audit_partitions, audit_shared_original, build_partitions,
                                      check_forget_set)
    from forgetmi.utils.atomic import refuse_to_replace, write_json, write_text

    if args.report:
        refuse_to_replace([args.report], args.force)
    split = read_split(args.split)
    forget = read_forget_set(args.forget)
    holdout = read_forget_set(args.holdout) if args.holdout else None
    others = {path: read_forget_set(path) for path in args.val_avoid or []}
    for path, rows in others.items():
        check_forget_set(split, rows, path)
    avoided = frozenset().union(*(set(rows["subject_id"]) for rows in others.values()))
    parts = build_partitions(split, forget, args.val_fraction, args.seed, forget_path=args.forget,
                             holdout=holdout, holdout_path=args.holdout, val_avoid=avoided)
    report = audit_partitions(parts, split)
    if others:  # the rule that lets one original serve every listed forget set
        report.checks.append(audit_shared_original(split, {args.forget: forget, **others},
                                                   args.val_fraction, args.seed, holdout))
    sys.stdout.write(report.to_text() + "\n")
    if args.report:
        report_path = Path(args.report)
        if report_path.suffix == ".json":
            write_json(report_path, report.to_dict())
        else:
            write_text(report_path, report.to_text() + "\n")
    return 0 if report.ok else 1


def cmd_build_cache(args, extra) -> int:
    from forgetmi.data.prepare import ensure_caches, load_partitions
    cfg = _load_experiment(args, extra)
    data = ensure_caches(load_partitions(cfg.data, cfg.seed), cfg.model.text_encoder,
                         rebuild=args.rebuild)
    logger.info("image cache: %d images at %d² (%.1f s); token cache: %.1f s",
                len(data.image_cache), cfg.data.image_size, data.timings["image_cache_s"],
                data.timings["token_cache_s"])
    return 0


def cmd_keywords(args, extra) -> int:
    from forgetmi.data.keywords import keywords_from_reports
    words = keywords_from_reports(args.reports, k=args.k)
    sys.stdout.write("\n".join(words) + "\n")
    return 0


def cmd_configs(args, extra) -> int:
    from forgetmi import shipped
    if args.copy:
        for folder in shipped.copy(args.copy, force=args.force):
            logger.info("wrote %s", folder)
        return 0
    # Results on stdout (for grep and redirection), diagnostics on stderr.
    if args.show:
        sys.stdout.write(shipped.resolve(args.show, "shipped file", shipped.root())
                         .read_text(encoding="utf-8"))
        return 0
    sys.stdout.write("\n".join(shipped.listing()) + "\n")
    return 0


def _import_replaces(dst: Path, overwrite: bool) -> bool:
    """Whether the import may replace the folder at ``dst``; refuses, before the (slow) import,
    a ``dst`` that is not free. ``--overwrite`` replaces only a model this command imported
    (origin ``release``, outside any run folder); an empty folder holds nothing to lose."""
    from forgetmi.errors import OutputError
    from forgetmi.utils.run_folder import check_model_target, model_meta

    if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
        return True
    meta = model_meta(dst)
    in_run = any((dst.parent / name).exists() for name in ("config.yaml", "timing.json"))
    imported = meta is not None and meta["forgetmi_model"].get("origin") == "release" \
        and not in_run
    if meta is not None and not overwrite:
        raise OutputError(f"{dst}: a forgetmi model is already there; refusing to replace it "
                          f"({'pass --overwrite to' if imported else 'choose another path to'} "
                          "write the import)")
    if overwrite and dst.is_dir() and not imported:
        raise OutputError(f"{dst}: --overwrite replaces only a model folder written by "
                          "import-checkpoint, and this is not one; choose another path")
    check_model_target(dst, replace=overwrite)
    return overwrite


def cmd_import_checkpoint(args, extra) -> int:
    from forgetmi.models.checkpoint import import_published_checkpoint
    replace = _import_replaces(Path(args.dst), args.overwrite)
    model = import_published_checkpoint(args.src, text_encoder=args.text_encoder,
                                        config=args.config)
    model.save_pretrained(args.dst, replace=replace)
    logger.info("imported %s -> %s (safetensors)", args.src, args.dst)
    return 0


def cmd_job(args, extra) -> int:
    return JOBS[args.command].resolve()(list(args.rest) + extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgetmi", description="machine unlearning for multimodal (chest X-ray + report) "
                                     "models: Forget-MI, its baselines, evaluation and HPC tooling")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--version", action="version", version=f"forgetmi {__version__}")
    # JobParser: the jobs' `--help` lists every config key (generated from forgetmi.config).
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=JobParser)

    p = sub.add_parser("make-demo-data", help="generate the MIMIC-like stand-in dataset")
    p.add_argument("out")
    p.add_argument("--patients", type=int, default=120,
                   help="number of patients (120: tests; 1663: the real data's size)")
    p.add_argument("--image-size", type=int, default=320, help="side of the DICOM files (up to ~2500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=number_in(0.0, 0.5, closed=False), default=None,
                   help="the TEST fold's share of rows, in (0, 0.5) (default: the real data's "
                        "0.079; the benchmark uses more, for its attacks' non-members)")
    p.add_argument("--label-noise", type=number_in(0.0, 2.0, closed=True), default=None,
                   help="spread of the noise between what a row shows and its written label "
                        "(default 0.17: about one row in eight gets a neighbouring grade)")
    p.add_argument("--atypical", type=number_in(0.0, 1.0, closed=True), default=None,
                   help="share of patients whose studies show a grade milder than their label, "
                        "told apart only by a word and a mark of their own (default 0: off)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a stand-in dataset generated at OUT before (nothing else)")
    p.set_defaults(func=cmd_make_demo_data)

    p = sub.add_parser("check-holdout", help="over many stand-in draws (metadata only), is the "
                                             "holdout drawn like the forget set?")
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--patients", type=int, default=500)
    p.add_argument("--first-seed", type=int, default=0, help="generator seed of the first draw")
    p.add_argument("--test-fraction", type=number_in(0.0, 0.5, closed=False), default=None)
    p.add_argument("--label-noise", type=number_in(0.0, 2.0, closed=True), default=None)
    p.add_argument("--atypical", type=number_in(0.0, 1.0, closed=True), default=None)
    p.add_argument("--json", help="also write the draws and the summary here")
    p.add_argument("--retrained", nargs="+", metavar="RUN",
                   help="instead: finished retrained runs with a holdout; how often the "
                        "headline's 95%% interval holds 0.5 when their forget and holdout "
                        "patients (none trained on) are reassigned to two sides at random")
    p.add_argument("--splits", type=int, default=200, help="reassignments per run (--retrained)")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=cmd_check_holdout)

    p = sub.add_parser("make-forget-set", help="nested patient-level forget sets and a holdout "
                                               "drawn like them, disjoint from TEST")
    p.add_argument("--split", required=True)
    p.add_argument("--percents", type=float, nargs="+", default=[3, 6, 10])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True,
                   help="folder for forget_set_<p>per.csv and holdout.csv")
    p.add_argument("--no-holdout", action="store_true",
                   help="draw the forget sets alone (no holdout.csv: the attacks then compare "
                        "forget rows with the TEST fold, drawn differently)")
    p.add_argument("--forget", help="draw only a holdout for this existing forget-set CSV (the "
                                    "largest of a nested family), from the patients outside it "
                                    "and outside TEST")
    p.add_argument("--force", action="store_true",
                   help="replace forget-set or holdout files already in --out")
    p.set_defaults(func=cmd_make_forget_set)

    p = sub.add_parser("audit", help="partition the split and prove there is no leakage")
    p.add_argument("--split", required=True)
    p.add_argument("--forget", required=True)
    p.add_argument("--holdout", help="the holdout CSV (make-forget-set's holdout.csv), audited too")
    p.add_argument("--val-avoid", nargs="+", metavar="CSV",
                   help="the other forget sets validation avoids (data.val_avoid): also proves "
                        "the original's training rows are the same for each of them")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help="also write the report (.txt or .json)")
    p.add_argument("--force", action="store_true", help="replace an existing --report file")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("build-cache", help="decode images and tokenise reports once")
    _add_data_args(p)
    p.add_argument("--rebuild", action="store_true")
    p.set_defaults(func=cmd_build_cache)

    p = sub.add_parser("keywords", help="most frequent content words of your reports")
    p.add_argument("reports", help="reports TSV (all_data.tsv format)")
    p.add_argument("-k", type=int, default=9)
    p.set_defaults(func=cmd_keywords)

    p = sub.add_parser("configs", help="list, print or copy the shipped configs, launchers "
                                       "and Slurm templates")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="list them (the default)")
    what.add_argument("--show", metavar="FILE", help="print one (configs/accelerate/zero2.yaml)")
    what.add_argument("--copy", metavar="DIR", help="copy configs/, launch/ and slurm/ into DIR; "
                      "the copied Accelerate configs name their DeepSpeed JSON by absolute path")
    p.add_argument("--force", action="store_true", help="with --copy, replace existing files")
    p.set_defaults(func=cmd_configs)

    # The jobs parse their own arguments (`forgetmi unlearn --help` lists every config key).
    for name, job in JOBS.items():
        p = sub.add_parser(name, add_help=False, help=job.help)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_job)

    p = sub.add_parser("import-checkpoint",
                       help="convert a published Forget-MI checkpoint folder to forgetmi's format")
    p.add_argument("src", help="folder with config.json and pytorch_model.bin, or a bare weights "
                               "file (the release's epoch_N/model_state_dict.pth) with --config")
    p.add_argument("dst", help="output folder (config.json + model.safetensors)")
    p.add_argument("--text-encoder", help="tokenizer folder the weights were trained with (e.g. "
                                          "SciBERT); its vocabulary must match the embeddings")
    p.add_argument("--config", help="the original model's BERT config.json, for a weights file "
                                    "without one beside it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model this command imported to DST before (nothing else)")
    p.set_defaults(func=cmd_import_checkpoint)

    return parser


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    from forgetmi.utils.logs import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    # A job gets everything after its name untouched (argparse would reorder options that come
    # before positional arguments).
    flags = [a for a in argv[:2] if a in ("-q", "--quiet", "-v", "-vv", "--verbose")]
    rest = argv[len(flags):]
    if rest and rest[0] in JOBS:
        quiet = any(f in ("-q", "--quiet") for f in flags)
        verbosity = -1 if quiet else (sum(f.count("v") for f in flags if f != "--verbose")
                                      + flags.count("--verbose"))
        setup_logging(verbosity)
        return cmd_job(argparse.Namespace(command=rest[0], rest=rest[1:]), [])

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    if extra and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args, extra)


if __name__ == "__main__":
    sys.exit(main())
