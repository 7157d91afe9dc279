"""The ``forgetmi`` command.

Subcommands: make-demo-data, make-forget-set, audit, build-cache, keywords, train, retrain,
unlearn, evaluate, report, ulira, protocol, sweep, status, convert-sweep, forget, history,
import-checkpoint, demo.
Every subcommand is a function taking parsed arguments; ``main(argv)`` runs in-process for tests.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from forgetmi.config_help import JobParser
from forgetmi.errors import ForgetMIError

logger = logging.getLogger("forgetmi")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="experiment YAML (configs/experiments/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="--key=value",
                        help="config overrides, e.g. --data.root=DIR --image_size=512")


def _load_experiment(args, extra: list[str]):
    from forgetmi.config import ExperimentConfig, load_config
    return load_config(ExperimentConfig, args.config, list(args.overrides) + extra)


def _number_in(low: float, high: float, closed: bool):
    """An argparse type: a float in (low, high), or [low, high] when ``closed``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        inside = low <= value <= high if closed else low < value < high
        if not inside:
            bounds = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
            raise argparse.ArgumentTypeError(f"expected a number in {bounds}, got {text!r}")
        return value
    return parse


def cmd_make_demo_data(args, extra) -> int:
    from forgetmi.data.synthetic import generate_dataset
    paths = generate_dataset(args.out, n_patients=args.patients, image_size=args.image_size,
                             seed=args.seed, workers=args.workers, overwrite=args.overwrite,
                             **{k: v for k, v in (("test_fraction", args.test_fraction),
                                                  ("label_noise", args.label_noise))
                                if v is not None})
    logger.info("stand-in dataset written to %s", paths.root)
    return 0


def cmd_make_forget_set(args, extra) -> int:
    from forgetmi.data.formats import read_split
    from forgetmi.data.splits import make_forget_sets
    from forgetmi.utils.atomic import write_csv

    split = read_split(args.split)
    sets = make_forget_sets(split, args.percents, seed=args.seed)
    out = Path(args.out)
    for percent, rows in sets.items():
        frame = rows.rename(columns={"severity": "edema_severity"})
        target = out / f"forget_set_{percent}per.csv"
        write_csv(target, frame[["subject_id", "study_id", "dicom_id", "edema_severity", "fold"]])
        logger.info("%s: %d rows (%.2f%% of %d), %d patients", target, len(rows),
                    100 * len(rows) / len(split), len(split), rows["subject_id"].nunique())
    return 0


def cmd_audit(args, extra) -> int:
    from forgetmi.data.formats import read_forget_set, read_split
    from forgetmi.data.splits import audit_partitions, build_partitions
    from forgetmi.utils.atomic import write_json, write_text

    split = read_split(args.split)
    forget = read_forget_set(args.forget)
    parts = build_partitions(split, forget, args.val_fraction, args.seed, forget_path=args.forget)
    report = audit_partitions(parts, split)
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


def cmd_import_checkpoint(args, extra) -> int:
    from forgetmi.models.checkpoint import import_published_checkpoint
    model = import_published_checkpoint(args.src, text_encoder=args.text_encoder,
                                        config=args.config)
    model.save_pretrained(args.dst)
    logger.info("imported %s -> %s (safetensors)", args.src, args.dst)
    return 0


def cmd_train(args, extra) -> int:
    from forgetmi.train import main as train_main
    argv = (["--config", args.config] if args.config else []) + list(args.overrides) + extra
    return train_main(argv, mode=args.command)


def cmd_unlearn(args, extra) -> int:
    from forgetmi.unlearn import main as unlearn_main
    argv = (["--config", args.config] if args.config else []) + list(args.overrides) + extra
    return unlearn_main(argv)


# Subcommands that parse their own arguments (``forgetmi evaluate --help``): module, help.
PASS_THROUGH = {
    "evaluate": ("forgetmi.evaluation.evaluate",
                 "metrics with CIs, membership attacks and the gap to the retrained model of "
                 "finished runs -> RUN/metrics.json"),
    "report": ("forgetmi.evaluation.report",
               "the paper-style table (Markdown, CSV, JSON) and plots from many evaluated runs"),
    "ulira": ("forgetmi.evaluation.ulira",
              "per-example audit of an unlearned model with shadow pipelines (U-LiRA)"),
    "protocol": ("forgetmi.protocol",
                 "run an experimental protocol (sizes × seeds × methods, with dependencies) here "
                 "or as dependent Slurm arrays; --dry-run lists its jobs"),
    "sweep": ("forgetmi.hpc.submit:sweep_main",
              "expand a W&B sweep YAML offline and submit it as one Slurm array (or run it here)"),
    "status": ("forgetmi.hpc.status", "per-task state of a submitted sweep or protocol"),
    "convert-sweep": ("forgetmi.hpc.convert",
                      "rewrite the Forget-MI release's sweep file with forgetmi's key names "
                      "(commented: what became what, what was dropped and why)"),
    "forget": ("forgetmi.forget",
               "a patient's request to be forgotten: unlearn, evaluate, purge, audit"),
    "history": ("forgetmi.forget:history_main", "the requests of a forget workspace"),
}


def cmd_pass_through(args, extra) -> int:
    import importlib
    module, _, function = PASS_THROUGH[args.command][0].partition(":")
    return getattr(importlib.import_module(module), function or "main")(list(args.rest) + extra)


def cmd_demo(args, extra) -> int:
    from forgetmi.demo import run_demo
    given = {"n_patients": args.patients, "image_size": args.image_size,
             "train_image_size": args.train_image_size or args.image_size,
             "epochs": args.epochs, "test_fraction": args.test_fraction,
             "label_noise": args.label_noise}
    run_demo(Path(args.out), seed=args.seed, workers=args.workers,
             text_encoder=args.text_encoder, **{k: v for k, v in given.items() if v is not None})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forgetmi", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    # JobParser: the jobs' `--help` lists every config key (generated from forgetmi.config).
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=JobParser)

    p = sub.add_parser("make-demo-data", help="generate the MIMIC-like stand-in dataset")
    p.add_argument("out")
    p.add_argument("--patients", type=int, default=120,
                   help="number of patients (120: tests; 1663: the real data's size)")
    p.add_argument("--image-size", type=int, default=320, help="side of the DICOM files (up to ~2500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=_number_in(0.0, 0.5, closed=False), default=None,
                   help="the TEST fold's share of rows, in (0, 0.5) (default: the real data's "
                        "0.079; the benchmark uses more, for its attacks' non-members)")
    p.add_argument("--label-noise", type=_number_in(0.0, 2.0, closed=True), default=None,
                   help="spread of the noise between what a row shows and its written label "
                        "(default 0.17: about one row in eight gets a neighbouring grade)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_make_demo_data)

    p = sub.add_parser("make-forget-set", help="nested patient-level forget sets, disjoint from TEST")
    p.add_argument("--split", required=True)
    p.add_argument("--percents", type=float, nargs="+", default=[3, 6, 10])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for forget_set_<p>per.csv")
    p.set_defaults(func=cmd_make_forget_set)

    p = sub.add_parser("audit", help="partition the split and prove there is no leakage")
    p.add_argument("--split", required=True)
    p.add_argument("--forget", required=True)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help="also write the report (.txt or .json)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("build-cache", help="decode images and tokenise reports once")
    _add_data_args(p)
    p.add_argument("--rebuild", action="store_true")
    p.set_defaults(func=cmd_build_cache)

    p = sub.add_parser("keywords", help="most frequent content words of your reports")
    p.add_argument("reports", help="reports TSV (all_data.tsv format)")
    p.add_argument("-k", type=int, default=9)
    p.set_defaults(func=cmd_keywords)

    for mode, text in (("train", "train the original model on retain + forget rows"),
                       ("retrain", "train the gold-standard model on retain rows only")):
        p = sub.add_parser(mode, help=text, description=text, job=mode)
        _add_data_args(p)
        p.set_defaults(func=cmd_train)

    p = sub.add_parser("unlearn", help="unlearn the forget set from a trained model "
                                       "(--original=RUN/model --preset=unimodal ...)",
                       description="unlearn the forget set from a trained model", job="unlearn")
    _add_data_args(p)
    p.set_defaults(func=cmd_unlearn)

    for name, (_, help_text) in PASS_THROUGH.items():
        p = sub.add_parser(name, add_help=False, help=help_text)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_pass_through)

    p = sub.add_parser("import-checkpoint",
                       help="convert a published Forget-MI checkpoint folder to forgetmi's format")
    p.add_argument("src", help="folder with config.json and pytorch_model.bin, or a bare weights "
                               "file (the release's epoch_N/model_state_dict.pth) with --config")
    p.add_argument("dst", help="output folder (config.json + model.safetensors)")
    p.add_argument("--text-encoder", help="tokenizer folder the weights were trained with (e.g. "
                                          "SciBERT); its vocabulary must match the embeddings")
    p.add_argument("--config", help="the original model's BERT config.json, for a weights file "
                                    "without one beside it")
    p.set_defaults(func=cmd_import_checkpoint)

    p = sub.add_parser("demo", help="run the whole pipeline on the embedded stand-in data")
    p.add_argument("--out", default="forgetmi-demo")
    p.add_argument("--patients", type=int, default=None, help="default 300")
    p.add_argument("--image-size", type=int, default=None, help="DICOM side (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-image-size", type=int, default=None,
                   help="image side for training the demo models (default: --image-size)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the original and retrained models (default 25); 0 skips "
                        "training")
    p.add_argument("--test-fraction", type=_number_in(0.0, 0.5, closed=False), default=None,
                   help="the TEST fold's share of rows (default 0.25)")
    p.add_argument("--label-noise", type=_number_in(0.0, 2.0, closed=True), default=None,
                   help="spread of the label noise (default 0.5: a third of the rows)")
    p.add_argument("--text-encoder", default="tiny",
                   help="'tiny' (small random BERT, CPU-fast), a BERT folder, or 'minilm' for the "
                        "packaged all-MiniLM-L6-v2")
    p.set_defaults(func=cmd_demo)
    return parser


def hide_dependency_warnings(verbosity: int) -> None:
    """Warnings raised inside dependencies (pydantic's about W&B's ``sweeps``, say) tell a user
    nothing they can act on; ``-v`` shows them. forgetmi's own warnings always show."""
    if verbosity < 1:
        warnings.filterwarnings("ignore", module=r"(?!forgetmi(\.|$))")


def main(argv: list[str] | None = None) -> int:
    from forgetmi.utils.logs import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    # A pass-through subcommand gets everything after its name untouched (argparse would
    # reorder options that come before positional arguments).
    flags = [a for a in argv[:2] if a in ("-q", "--quiet", "-v", "-vv", "--verbose")]
    rest = argv[len(flags):]
    if rest and rest[0] in PASS_THROUGH:
        quiet = any(f in ("-q", "--quiet") for f in flags)
        verbosity = -1 if quiet else (sum(f.count("v") for f in flags if f != "--verbose")
                                      + flags.count("--verbose"))
        setup_logging(verbosity)
        hide_dependency_warnings(verbosity)
        try:
            return cmd_pass_through(argparse.Namespace(command=rest[0], rest=rest[1:]), [])
        except ForgetMIError as err:
            logger.error("%s", err)
            return 2

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    hide_dependency_warnings(-1 if args.quiet else args.verbose)
    if extra and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra)
    except ForgetMIError as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
