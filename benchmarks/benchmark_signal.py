"""Check that a benchmark run can tell remembering from never having seen, and print its table.

    python benchmarks/benchmark_signal.py runs/benchmark [--size 10]

Reads the ``metrics.json`` of every evaluated run under the protocol's output folder
(``<model>/<size>/s<seed>/metrics.json``) and prints, per model and seed, the headline
forget-vs-unseen attack AUC with its patient-bootstrap 95% interval, the learned attack's, and
forget / test AUC; then the mean ± std over seeds; then the benchmark's signal checks:

- at least 300 unseen (test-fold) rows;
- the original: attack AUC >= 0.70 with the interval's lower bound >= 0.60, in every seed;
- the retrained model: the interval holds 0.5 and the AUC is within 0.5 ± 0.05, in every seed;
- test AUC varies by at most 0.02 (std over seeds) for the original and the retrained model.

Then each method's distance to the retrained model of the same seed (attack AUC, test AUC, time
ratio; mean ± std over seeds) and whether it meets the goal: within ±0.05 attack AUC and ±0.02
test AUC of the retrained model at <= 10% of its time (reported, not a check).

``--record FILE`` writes every model's per-seed figures and their mean and spread (JSON, the
benchmark's recorded figures); ``--recorded FILE`` adds a check per model that this run
reproduces them: mean attack AUC and mean test AUC each within twice the recorded std over
seeds (at least 0.01) of the recorded mean.

Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from forgetmi.utils.atomic import write_json


def _load(root: Path, size: str) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(root.glob(f"*/{size}/s*/metrics.json")):
        model, seed = path.parents[2].name, int(path.parent.name[1:])
        doc = json.loads(path.read_text())
        timing = path.parent / "timing.json"
        times = json.loads(timing.read_text()) if timing.is_file() else {}
        doc["_seconds"] = times.get("train_seconds")
        # device-seconds (× processes): the time ratio compares runs on any world size fairly
        doc["_device_seconds"] = (None if doc["_seconds"] is None
                                  else doc["_seconds"] * int(times.get("world_size") or 1))
        runs.setdefault(model, {})[seed] = doc
    if not runs:
        raise SystemExit(f"no */{size}/s*/metrics.json under {root}")
    return runs


def _auc(doc: dict, part: str) -> float:
    return doc["metrics"][part]["joint"]["auc"]["value"]


def _ci(block: dict | None) -> str:
    if not block or block.get("auc") is None:
        return "—"
    return f"{block['auc']:.3f} [{block['low']:.3f}, {block['high']:.3f}]"


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the protocol's output folder")
    parser.add_argument("--size", default="10", help="forget-set label (default 10)")
    parser.add_argument("--record", type=Path, help="write this run's figures here (JSON)")
    parser.add_argument("--recorded", type=Path,
                        help="check this run against figures written by --record")
    args = parser.parse_args(argv)
    runs = _load(args.runs, args.size)
    order = ["original", "retrained"] + sorted(m for m in runs if m not in
                                                ("original", "retrained"))
    print("| model | seed | forget-vs-unseen AUC [95% CI] | learned attack [95% CI] | "
          "forget AUC | test AUC |")
    print("|---|---|---|---|---|---|")
    for model in order:
        for seed, doc in sorted(runs.get(model, {}).items()):
            mia = doc.get("mia") or {}
            print(f"| {model} | {seed} | {_ci(mia.get('forget_vs_unseen'))} | "
                  f"{_ci(mia.get('forget_vs_unseen_learned'))} | {_auc(doc, 'forget'):.3f} | "
                  f"{_auc(doc, 'test'):.3f} |")
    print()
    print("| model | seeds | forget-vs-unseen AUC | forget AUC | test AUC | "
          "training / unlearning s (mean) |")
    print("|---|---|---|---|---|---|")
    for model in order:
        docs = list(runs.get(model, {}).values())
        if not docs:
            continue
        seconds = [d["_seconds"] for d in docs if d["_seconds"] is not None]
        mean_seconds = f"{statistics.mean(seconds):.1f}" if seconds else "—"
        print(f"| {model} | {len(docs)} | "
              f"{_mean_std([d['mia']['forget_vs_unseen']['auc'] for d in docs])} | "
              f"{_mean_std([_auc(d, 'forget') for d in docs])} | "
              f"{_mean_std([_auc(d, 'test') for d in docs])} | {mean_seconds} |")
    print()
    original, retrained = runs.get("original", {}), runs.get("retrained", {})
    _distances(runs, order, retrained)
    figures = _figures(runs)
    checks = []
    if args.recorded:
        checks += _reproduced(figures, json.loads(args.recorded.read_text()))
    if args.record:
        write_json(args.record, figures)
        print(f"wrote {args.record}")
    unseen = [d["mia"]["forget_vs_unseen"]["n_unseen"] for d in original.values()]
    checks.append(("at least 300 unseen rows", bool(unseen) and min(unseen) >= 300,
                   f"{min(unseen) if unseen else 0} rows"))
    for seed, doc in sorted(original.items()):
        head = doc["mia"]["forget_vs_unseen"]
        checks.append((f"original s{seed} remembers (AUC >= 0.70, low >= 0.60)",
                       head["auc"] >= 0.70 and head["low"] >= 0.60, _ci(head)))
    for seed, doc in sorted(retrained.items()):
        head = doc["mia"]["forget_vs_unseen"]
        checks.append((f"retrained s{seed} at chance (CI holds 0.5, |AUC - 0.5| <= 0.05)",
                       head["low"] <= 0.5 <= head["high"] and abs(head["auc"] - 0.5) <= 0.05,
                       _ci(head)))
    for name, docs in (("original", original), ("retrained", retrained)):
        tests = [_auc(d, "test") for d in docs.values()]
        spread = statistics.stdev(tests) if len(tests) > 1 else float("nan")
        checks.append((f"{name} test AUC std <= 0.02 over seeds", spread <= 0.02,
                       f"std {spread:.3f} over {len(tests)} seeds"))
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def _distances(runs: dict, order: list[str], retrained: dict) -> None:
    """Each model's distance to the retrained model of the same seed, and the goal."""
    print("| model | Δ attack AUC vs retrained | Δ test AUC | device-time / retraining | goal |")
    print("|---|---|---|---|---|")
    for model in order:
        if model == "retrained" or not retrained:
            continue
        seeds = sorted(set(runs.get(model, {})) & set(retrained))
        if not seeds:
            continue
        docs = [(runs[model][s], retrained[s]) for s in seeds]
        fvu = [d["mia"]["forget_vs_unseen"]["auc"] - r["mia"]["forget_vs_unseen"]["auc"]
               for d, r in docs]
        test = [_auc(d, "test") - _auc(r, "test") for d, r in docs]
        ratios = [d["_device_seconds"] / r["_device_seconds"] for d, r in docs
                  if d["_device_seconds"] is not None and r["_device_seconds"]]
        ratio = statistics.mean(ratios) if ratios else float("nan")
        met = (abs(statistics.mean(fvu)) <= 0.05 and abs(statistics.mean(test)) <= 0.02
               and ratio <= 0.10)
        print(f"| {model} | {_signed(fvu)} | {_signed(test)} | {ratio:.3f} | "
              f"{'met' if met else 'not met'} |")
    print()


def _signed(values: list[float]) -> str:
    mean = f"{statistics.mean(values):+.3f}"
    return mean if len(values) < 2 else f"{mean} ± {statistics.stdev(values):.3f}"


def _figures(runs: dict) -> dict:
    out = {}
    for model, docs in sorted(runs.items()):
        fvu = {s: d["mia"]["forget_vs_unseen"]["auc"] for s, d in sorted(docs.items())}
        test = {s: _auc(d, "test") for s, d in sorted(docs.items())}
        out[model] = {name: {"per_seed": values, "mean": statistics.mean(values.values()),
                             "std": (statistics.stdev(values.values()) if len(values) > 1
                                     else 0.0)}
                      for name, values in (("attack_auc", fvu), ("test_auc", test))}
    return out


def _reproduced(figures: dict, recorded: dict) -> list[tuple[str, bool, str]]:
    checks = []
    for model, record in sorted(recorded.items()):
        now = figures.get(model)
        for name in ("attack_auc", "test_auc"):
            if now is None:
                checks.append((f"{model} {name} reproduced", False, "not in this run"))
                continue
            allowed = max(2 * record[name]["std"], 0.01)
            delta = now[name]["mean"] - record[name]["mean"]
            checks.append((f"{model} {name} reproduced (|Δ mean| <= {allowed:.3f})",
                           abs(delta) <= allowed, f"{now[name]['mean']:.3f} vs recorded "
                           f"{record[name]['mean']:.3f} ± {record[name]['std']:.3f}"))
    return checks


if __name__ == "__main__":
    sys.exit(main())
