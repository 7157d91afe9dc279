"""``forgetmi demo``: the whole pipeline on the embedded stand-in data, end to end on a CPU.

Generate the data (the benchmark's recipe, smaller: a third of the labels only memory explains,
a quarter of the rows in the unseen test fold), audit the partitions of every forget size,
build the caches, stream every partition (and the noisy forget set) through the loaders, train
the original model (retain + forget) and the retrained reference (retain only) to convergence
through the shared engine, unlearn the 10% forget set from the original with Forget-MI and every
baseline, evaluate each, and print a summary that says in words whether the original remembers
its forget rows, whether the retrained model is at chance, and where each method lands.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from forgetmi.config import DataConfig
from forgetmi.errors import exit_on_error
from forgetmi.utils.arguments import number_in
from forgetmi.utils.atomic import write_json
from forgetmi.utils.run_folder import RunFolder

logger = logging.getLogger("forgetmi.demo")


def _dataset(out: Path, n_patients: int, image_size: int, seed: int, workers: int,
             test_fraction: float, label_noise: float, atypical: float):
    """Reuse a stand-in dataset generated earlier with the same parameters, else generate one."""
    from forgetmi.synthetic import DatasetPaths, generate_dataset, parameter_differences
    root = out / "data"
    if parameter_differences(root, n_patients, image_size, seed, test_fraction,
                             label_noise, atypical) == []:
        logger.info("reusing the stand-in dataset in %s", root)
        return DatasetPaths.from_root(root)
    return generate_dataset(root, n_patients=n_patients, image_size=image_size, seed=seed,
                            workers=workers, overwrite=True, test_fraction=test_fraction,
                            label_noise=label_noise, atypical=atypical)


# The demo's stand-in and models: the benchmark's (configs/experiments/benchmark.yaml), one seed.
# Smaller could not tell: at 300 patients the holdout (18 patients) left the original's and the
# retrained model's intervals overlapping. The forget rows stay memorable (README, "The
# benchmark"): a third of the labels are what only memory explains, the models train to fit them.
DEMO = {"patients": 500, "image_size": 64, "epochs": 30, "test_fraction": 0.25,
        "label_noise": 0.5, "atypical": 0.0}

# The demo's unlearning runs: Forget-MI and every baseline at their tuned settings, those of
# configs/presets/tuned.yaml (a test keeps the two equal), found by equal-budget sweeps on a
# tuning stand-in of the benchmark's recipe (README, "Tuning").
UNLEARNING = {
    "forgetmi": {"method": "forgetmi", "epochs": 6, "lr": 0.003, "noise.image_std": 0.3,
                 "preset": "equal", "unlearn.objective": "pull"},
    "cf-k": {"method": "cf-k", "epochs": 2, "lr": 0.003},
    "eu-k": {"method": "eu-k", "epochs": 2, "lr": 0.0001},
    "finetune": {"method": "finetune", "epochs": 2, "lr": 0.003},
    "multidelete": {"method": "multidelete", "epochs": 6, "lr": 0.003},
    "neggrad+": {"method": "neggrad+", "epochs": 8, "lr": 0.003},
    "random-label": {"method": "random-label", "epochs": 8, "lr": 0.003},
    "scrub": {"method": "scrub", "epochs": 1, "lr": 0.001}}


# The equivalence margins of the demo's verdicts: one seed has no retrained spread of its own,
# so it borrows the benchmark's, as `forgetmi report --write-margins` measured them over its
# three retrained seeds (configs/presets/margins.yaml; a test keeps the two equal).
MARGINS = {"attack": 0.05064311255798501, "test": 0.020470098902388763,
           "source": "the benchmark's retrained-vs-retrained spread over 3 seeds"}


# The original and retrained models train as the benchmark's (configs/experiments/
# benchmark.yaml): to convergence at a constant rate, no weight decay, the last epoch kept.
TRAINING = {"weight_decay": 0.0, "scheduler": "constant", "final_model": "last"}


def _demo_config(out: Path, name: str, data_root: Path, seed: int, image_size: int,
                 epochs: int, lr: float, text_encoder: str, training: dict | None = None,
                 **unlearn):
    from forgetmi.config import (ExperimentConfig, ModelConfig, TrackingConfig, TrainConfig,
                                 UnlearnConfig)
    return ExperimentConfig(
        seed=seed, output_dir=str(out / name),
        data=DataConfig(root=str(data_root), forget_set="forget_set_10per.csv",
                        holdout="holdout.csv",
                        image_size=image_size),
        model=ModelConfig(text_encoder=None if text_encoder == "minilm" else text_encoder),
        train=TrainConfig(epochs=epochs, batch_size=16, lr=lr,
                          text_lr=None if text_encoder == "tiny" else 5e-5,
                          early_stopping_patience=0, checkpoint_every=100_000, log_every=20,
                          **(training or {})),
        unlearn=UnlearnConfig(**unlearn), tracking=TrackingConfig(wandb="disabled"))


def _score(run: Path, retrained: Path | None, n_boot: int) -> dict:
    """Evaluate a finished run (``metrics.json``); the summary's joint-head figures of it."""
    from forgetmi.evaluation.evaluate import evaluate_run

    result = evaluate_run(run, retrained=retrained, n_boot=n_boot)
    timing = RunFolder(run).timing()
    figures = {f"{part}_joint_{metric}": round(result["metrics"][part]["joint"][metric]["value"], 4)
               for part in ("validation", "test", "forget") for metric in ("auc", "f1")}
    mia = result.get("mia") or {}
    headline = mia.get("forget_vs_unseen") or {}
    paired = result.get("paired") or {}
    return {"train_seconds": timing["train_seconds"], "rows": timing["rows"], **figures,
            "paired": {figure: [paired[key]["diff"], paired[key]["se"]]
                       for figure, key in (("attack", "fvu_auc"), ("test", "test_auc"))
                       if key in paired},
            "mia_svc": mia.get("svc_mia_per_sample"),
            "attack_auc": (mia.get("population") or {}).get("auc"),
            "forget_vs_unseen_auc": headline.get("auc"),
            "forget_vs_unseen_low": headline.get("low"),
            "forget_vs_unseen_high": headline.get("high")}


def _train_models(out: Path, data_root: Path, seed: int, image_size: int, epochs: int,
                  text_encoder: str, n_boot: int = 200) -> dict:
    """Train the original and the retrained model, unlearn the original with Forget-MI and
    every baseline, evaluate each run against the retrained model and write the report."""
    from forgetmi.config import as_overrides, with_overrides
    from forgetmi.evaluation.report import (load_runs, render_tables, summarise, verdicts,
                                            write_report)
    from forgetmi.jobs.train import run_training
    from forgetmi.jobs.unlearn import run_unlearning

    results = {}
    retrained = out / "retrained"
    for mode, name in (("retrain", "retrained"), ("train", "original")):
        cfg = _demo_config(out, name, data_root, seed, image_size, epochs, 1e-3, text_encoder,
                           training=TRAINING)
        run_training(cfg, mode)
    for name in ("original", "retrained"):
        results[name] = _score(out / name, None if name == "retrained" else retrained, n_boot)
    for name, setting in UNLEARNING.items():
        cfg = with_overrides(_demo_config(out, name, data_root, seed, image_size, 1, 1e-3,
                                          text_encoder, original=str(out / "original" / "model")),
                             as_overrides(setting))
        run_unlearning(cfg)
        results[name] = _score(out / name, retrained, n_boot)
    runs = load_runs(out / name / "metrics.json" for name in results)
    summary = summarise(runs)
    # One seed has no spread of its own to take margins from: the benchmark's are used.
    written = write_report(runs, out / "report", summary, verdicts(runs, demo_margins()))
    return {"models": results, "report": [str(p) for p in written],
            "report_table": render_tables(summary), "verdict": verdict(results)}


def _interval(m: dict) -> str:
    return (f"{m['forget_vs_unseen_auc']:.2f} [{m['forget_vs_unseen_low']:.2f}, "
            f"{m['forget_vs_unseen_high']:.2f}]")


def demo_margins():
    """The equivalence margins the demo's verdicts use (:data:`MARGINS`)."""
    from forgetmi.evaluation.verdicts import Margins
    return Margins(**MARGINS)


def verdict(models: dict) -> list[str]:
    """The forget-vs-unseen attack AUCs in plain words: does the original remember its forget
    rows, is the retrained model at chance, and what the equivalence test says of each
    unlearned model (:mod:`forgetmi.evaluation.verdicts`, the report's logic: a model whose
    utility fell outside the margin is never called a match, whatever its attack AUC)."""
    from forgetmi.evaluation.verdicts import decide

    keys = ("forget_vs_unseen_auc", "forget_vs_unseen_low", "forget_vs_unseen_high")
    if not all(models.get(k) and all(models[k].get(x) is not None for x in keys)
               for k in ("original", "retrained")):
        return ["the forget-vs-unseen attack has no value for the original or retrained model"]
    o, r = models["original"], models["retrained"]
    gap = o["forget_vs_unseen_auc"] - r["forget_vs_unseen_auc"]
    lines = [f"original (trained on the forget rows): attack AUC {_interval(o)}; 0.5 would mean "
             "an attacker cannot tell its forget rows from rows of patients it never saw (the "
             "holdout, drawn like them)",
             f"retrained (never saw them; the target): {_interval(r)}"]
    if o["forget_vs_unseen_low"] > r["forget_vs_unseen_high"]:
        lines.append("the two intervals do not overlap: this run tells a model that remembers "
                     "from one that never saw the rows")
    else:
        lines.append("the two intervals overlap: at this size the demo cannot tell remembering "
                     "from never having seen; run the benchmark (configs/experiments/"
                     "benchmark.yaml)")
        return lines
    margins = demo_margins()
    methods = {name: {figure: ([pair[0]], [pair[1]]) for figure, pair in m["paired"].items()}
               for name, m in models.items()
               if name not in ("original", "retrained") and len(m.get("paired") or {}) == 2}
    decisions = decide(methods, margins) if methods else {}
    lines.append(f"verdicts: equivalence tests against the retrained model (margins ±"
                 f"{margins.attack:.3f} attack AUC, ±{margins.test:.3f} test AUC: "
                 f"{margins.source}); one seed, so they speak of this seed's patients only, "
                 "not of training variation: the benchmark's seeds do")
    for name, m in models.items():
        if name in ("original", "retrained") or m.get("forget_vs_unseen_auc") is None:
            continue
        auc, high = m["forget_vs_unseen_auc"], m["forget_vs_unseen_high"]
        closed = (o["forget_vs_unseen_auc"] - auc) / gap
        moved = (f"{closed:.0%} of the way from the original to the retrained model"
                 if closed >= 0 else "further from the retrained model than the original")
        decision = decisions.get(name)
        if decision is None:
            lines.append(f"{name}: {_interval(m)} ({moved}); no paired figures to test")
            continue
        attack, test = decision["figures"]["attack"], decision["figures"]["test"]
        if decision["verdict"] == "equivalent":
            where = "equivalent to the retrained model on attack and test AUC"
        elif test["outcome"] == "differs":
            where = (f"not a match: its test AUC moved {test['mean']:+.3f} (outside the "
                     f"±{margins.test:.3f} utility margin)"
                     + (", whatever its attack AUC" if attack["outcome"] != "differs" else ""))
        elif attack["outcome"] == "differs" and attack["mean"] < 0:
            where = ("below the target: it fits the forget rows worse than unseen ones, which "
                     "an attacker can see too")
        elif attack["outcome"] == "differs" and high >= o["forget_vs_unseen_auc"]:
            where = "still remembers them about as the original does"
        elif attack["outcome"] == "differs":
            where = "differs from the retrained model: between the original and the target"
        else:
            where = "inconclusive: neither shown equivalent nor shown to differ"
        lines.append(f"{name}: {_interval(m)}, {where} ({moved}; attack {attack['outcome']}, "
                     f"test {test['outcome']})")
    return lines


def run_demo(out: Path, n_patients: int = DEMO["patients"], image_size: int = DEMO["image_size"],
             seed: int = 0, workers: int = 2, train_image_size: int = DEMO["image_size"],
             epochs: int = DEMO["epochs"], text_encoder: str = "tiny",
             test_fraction: float = DEMO["test_fraction"],
             label_noise: float = DEMO["label_noise"],
             atypical: float = DEMO["atypical"]) -> dict:
    from forgetmi.data.batches import BatchReader
    from forgetmi.data.dataset import EdemaDataset, build_loader
    from forgetmi.config import Perturbation
    from forgetmi.data.noise import build_perturber
    from forgetmi.data.prepare import ensure_caches, load_partitions

    out = Path(out)
    summary: dict = {"seed": seed}
    start = time.perf_counter()
    paths = _dataset(out, n_patients, image_size, seed, workers, test_fraction, label_noise,
                     atypical)
    summary["generate_s"] = round(time.perf_counter() - start, 2)

    audits = {}
    for percent in sorted(paths.forget_sets):
        config = DataConfig(root=str(paths.root), forget_set=paths.forget_sets[percent].name,
                            holdout=paths.holdout.name, image_size=image_size, workers=workers)
        audits[percent] = load_partitions(config, seed)  # raises if any leak is found
    data = ensure_caches(audits[max(audits)])
    logger.info("\n%s", data.audit.to_text())

    perturber = build_perturber(Perturbation(seed=seed), paths.synonyms)
    throughput = {}
    for name, frame in data.partitions.items():
        dataset = EdemaDataset(frame, data.image_cache, data.token_cache,
                               length_bucket=data.config.length_bucket)
        plan = [list(range(i, min(i + 16, len(dataset)))) for i in range(0, len(dataset), 16)]
        tic = time.perf_counter()
        n = sum(len(batch["label"]) for batch in BatchReader(dataset, plan))
        throughput[name] = (n, n / max(time.perf_counter() - tic, 1e-9))
    noisy = EdemaDataset(data.partitions.forget, data.image_cache, data.token_cache,
                         perturb=perturber, reports=data.reports.set_index("study_id")["text"])
    batch = next(iter(build_loader(noisy, batch_size=8, shuffle=False, seed=seed)))
    clean = next(iter(build_loader(EdemaDataset(data.partitions.forget, data.image_cache,
                                                data.token_cache), batch_size=8, shuffle=False,
                                   seed=seed)))
    image_change = float((batch["image"] - clean["image"]).abs().mean())
    token_change = float((batch["input_ids"] != clean["input_ids"]).float().mean())

    summary.update({
        "data_dir": str(paths.root),
        "rows": int(len(data.split)), "patients": int(data.split["subject_id"].nunique()),
        "studies": int(data.split["study_id"].nunique()),
        "severity": {int(k): int(v) for k, v in data.split["severity"].value_counts().sort_index().items()},
        "forget_sets": {p: {"rows": int(len(d.partitions.forget)),
                            "patients": int(d.partitions.forget["subject_id"].nunique()),
                            "audit_ok": d.audit.ok} for p, d in audits.items()},
        "partitions": data.audit.counts,
        "image_cache_s": round(data.timings["image_cache_s"], 2),
        "token_cache_s": round(data.timings["token_cache_s"], 2),
        "loader_samples_per_s": {k: round(v[1], 1) for k, v in throughput.items()},
        "noisy_forget": {"mean_abs_image_change": round(image_change, 4),
                         "changed_token_fraction": round(token_change, 3)},
        "batch_shapes": {k: list(v.shape) for k, v in batch.items() if hasattr(v, "shape")},
    })
    if epochs > 0:
        summary.update(_train_models(out, paths.root, seed, train_image_size, epochs,
                                     text_encoder))
        summary["models_setting"] = {"image_size": train_image_size, "epochs": epochs,
                                     "text_encoder": text_encoder, "forget_set": "10%"}
        summary["unlearning"] = UNLEARNING
    write_json(out / "summary.json", summary)
    logger.info("%s", format_summary(summary))
    return summary


def format_summary(s: dict) -> str:
    sev = "/".join(str(s["severity"].get(k, 0)) for k in range(4))
    lines = ["", "forgetmi demo — summary",
             f"  data        {s['rows']} image-report rows, {s['studies']} studies, "
             f"{s['patients']} patients; severity 0/1/2/3 = {sev}  ({s['generate_s']} s)"]
    for p, f in s["forget_sets"].items():
        lines.append(f"  forget {p:>2}%  {f['rows']} rows / {f['patients']} patients; "
                     f"audit {'passed' if f['audit_ok'] else 'FAILED'}")
    lines.append("  partitions  " + ", ".join(f"{k} {v['rows']}" for k, v in s["partitions"].items())
                 + "  (10% forget set)")
    lines.append(f"  caches      images {s['image_cache_s']} s, tokens {s['token_cache_s']} s")
    lines.append("  loaders     " + ", ".join(f"{k} {v:.0f}/s" for k, v in
                                               s["loader_samples_per_s"].items()))
    n = s["noisy_forget"]
    lines.append(f"  noisy set   mean |Δimage| {n['mean_abs_image_change']}, "
                 f"tokens changed {n['changed_token_fraction']:.0%}")
    shapes = s["batch_shapes"]
    lines.append(f"  batch       image {shapes.get('image')}, input_ids {shapes.get('input_ids')}")
    if "models" in s:
        setting = s["models_setting"]
        lines += ["", f"  models (joint head; {setting['image_size']}² images, text encoder "
                      f"{setting['text_encoder']}, forget set {setting['forget_set']}; training "
                      f"{setting['epochs']} epochs; time = training, or unlearning alone)",
                  f"  {'model':<13} {'data':>14} {'time s':>7}  {'remembers? (FvU AUC)':>21}  "
                  f"{'test AUC':>8} {'test F1':>7}  {'forget AUC':>10} {'forget F1':>9}  "
                  f"{'MIA':>5} {'pop. AUC':>8}"]
        for name, m in s["models"].items():
            fvu = (_interval(m) if m.get("forget_vs_unseen_low") is not None
                   else _num(m.get("forget_vs_unseen_auc")))
            lines.append(f"  {name:<13} {_rows(m['rows']):>14} {m['train_seconds']:>7.1f}  "
                         f"{fvu:>21}  "
                         f"{m['test_joint_auc']:>8.3f} {m['test_joint_f1']:>7.3f}  "
                         f"{m['forget_joint_auc']:>10.3f} {m['forget_joint_f1']:>9.3f}  "
                         f"{_num(m.get('mia_svc')):>5} {_num(m.get('attack_auc')):>8}")
        lines.append("  FvU AUC: can an attacker tell the forget rows from rows of patients no "
                     "model saw, by their lower loss? 0.5 = no (forgotten); 95% CI in brackets")
        retrain = s["models"].get("retrained", {}).get("train_seconds")
        unlearning = [s["models"][name]["train_seconds"] for name in s.get("unlearning", {})]
        if retrain and unlearning:
            lines.append(f"  unlearning took {min(unlearning):.1f}–{max(unlearning):.1f} s against "
                         f"{retrain:.1f} s of retraining (evaluation excluded)")
    if s.get("verdict"):
        lines += ["", "  what it shows:"] + [f"    {line}" for line in s["verdict"]]
    if "report_table" in s:
        lines += ["", "  the report (forgetmi report; mean ± std over seeds, one seed here):", "",
                  s["report_table"], ""]
        lines += [f"  wrote {path}" for path in s["report"]]
    return "\n".join(lines)


def _num(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def _rows(rows: dict) -> str:
    """A run's data: training rows, or the forget and retain rows an unlearning run drew on."""
    if "train" in rows:
        return f"{rows['train']} rows"
    return " + ".join(f"{rows[k]} {k[0]}" for k in ("forget", "retain") if k in rows)


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """``forgetmi demo [--out DIR] [...]``."""
    p = argparse.ArgumentParser(prog="forgetmi demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="forgetmi-demo")
    p.add_argument("--patients", type=int, default=None, help="default 500")
    p.add_argument("--image-size", type=int, default=None, help="DICOM side (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-image-size", type=int, default=None,
                   help="image side for training the demo models (default: --image-size)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the original and retrained models (default 30); 0 skips "
                        "training")
    p.add_argument("--test-fraction", type=number_in(0.0, 0.5, closed=False), default=None,
                   help="the TEST fold's share of rows (default 0.25)")
    p.add_argument("--label-noise", type=number_in(0.0, 2.0, closed=True), default=None,
                   help="spread of the label noise (default 0.5: a third of the rows)")
    p.add_argument("--atypical", type=number_in(0.0, 1.0, closed=True), default=None,
                   help="share of patients whose studies look milder than their label (default "
                        "0: off)")
    p.add_argument("--text-encoder", default="tiny",
                   help="'tiny' (small random BERT, CPU-fast), a BERT folder, or 'minilm' for the "
                        "packaged all-MiniLM-L6-v2")
    args = p.parse_args(argv)
    given = {"n_patients": args.patients, "image_size": args.image_size,
             "train_image_size": args.train_image_size or args.image_size,
             "epochs": args.epochs, "test_fraction": args.test_fraction,
             "label_noise": args.label_noise, "atypical": args.atypical}
    run_demo(Path(args.out), seed=args.seed, workers=args.workers,
             text_encoder=args.text_encoder, **{k: v for k, v in given.items() if v is not None})
    return 0
