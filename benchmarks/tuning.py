"""Pick each method's settings from its tuning sweep: the trial closest to the retrained model.

    python benchmarks/tuning.py runs/tune --references runs/tuning [--write FILE]

Reads every evaluated sweep run under ``runs/tune/<method>/s<seed>/runs/<id>/`` (the tuning
sweeps of ``configs/sweeps/tune/``, one folder per training seed, the same trial ids in each)
and the retrained references ``runs/tuning/retrained/<size>/s<seed>/`` of the tuning protocol
(``configs/experiments/tuning.yaml``). A trial's score, on each seed, is its distance to that
seed's retrained model:

    |forget-vs-unseen attack AUC - retrained's| + |test AUC - retrained's|      (joint head)

averaged over the seeds; lower is better, 0 is indistinguishable from retraining on both. Trials
whose unlearning took more than ``--budget`` (0.10) of the retraining's time, on average, are
not eligible. Every row here comes from the tuning stand-in, never from the benchmark's data.

A trial that failed on a seed (it diverged, say) is listed as such and not eligible.
Prints, per method, every trial with its score, the chosen one marked; with ``--write``, the
chosen settings as a presets file (``configs/presets/tuned.yaml``: one entry per method, the
overrides a protocol's ``methods`` takes), written atomically. Exit 1 when a method has no
eligible trial with every seed evaluated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

from forgetmi.utils.atomic import write_text

# Sweep parameters that say where a trial ran, not how it unlearned.
PLACE = {"config", "original", "checkpoint_every", "log_every", "seed", "forget_set"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _point(metrics: dict) -> tuple[float, float]:
    """(forget-vs-unseen attack AUC, test AUC of the joint head)."""
    return metrics["mia"]["forget_vs_unseen"]["auc"], \
        metrics["metrics"]["test"]["joint"]["auc"]["value"]


def _device_seconds(run: Path) -> float:
    """Training or unlearning seconds × processes: runs on other world sizes compare fairly."""
    timing = _read(run / "timing.json")
    return timing["train_seconds"] * int(timing.get("world_size") or 1)


def _references(root: Path, size: str) -> dict[int, dict]:
    refs = {}
    for folder in sorted(root.glob(f"retrained/{size}/s*")):
        if (folder / "metrics.json").is_file():
            fvu, test = _point(_read(folder / "metrics.json"))
            refs[int(folder.name[1:])] = {"fvu": fvu, "test": test,
                                          "seconds": _device_seconds(folder)}
    if not refs:
        raise SystemExit(f"no evaluated retrained/{size}/s*/ under {root}")
    return refs


def _trials(sweeps: Path, refs: dict[int, dict]) -> dict[str, dict[str, dict]]:
    """method -> trial id -> {params, per-seed results, seeds it failed on}. A trial that did not
    finish on a seed (diverged, say) or was not evaluated there is not eligible."""
    methods: dict[str, dict[str, dict]] = {}
    for params in sorted(sweeps.glob("*/s*/runs/*/sweep_params.json")):
        run = params.parent
        method, seed = run.parents[2].name, int(run.parents[1].name[1:])
        if seed not in refs:
            raise SystemExit(f"{run}: no retrained reference for seed {seed}")
        trial = methods.setdefault(method, {}).setdefault(run.name, {
            "params": {k: v for k, v in _read(params).items() if k not in PLACE},
            "seeds": {}, "failed": []})
        if not (run / "timing.json").is_file() or not (run / "metrics.json").is_file():
            trial["failed"].append(seed)
            continue
        ref = refs[seed]
        fvu, test = _point(_read(run / "metrics.json"))
        trial["seeds"][seed] = {"fvu": fvu, "test": test,
                                "ratio": _device_seconds(run) / ref["seconds"],
                                "score": abs(fvu - ref["fvu"]) + abs(test - ref["test"])}
    if not methods:
        raise SystemExit(f"no sweep runs (*/s*/runs/*/sweep_params.json) under {sweeps}")
    return methods


def _mean(trial: dict, key: str) -> float:
    values = [s[key] for s in trial["seeds"].values()]
    return statistics.mean(values) if values else float("nan")


def _settings(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "method")


def choose(methods: dict, seeds: set[int], budget: float) -> dict[str, str | None]:
    chosen = {}
    for method, trials in sorted(methods.items()):
        eligible = [t for t, trial in trials.items() if set(trial["seeds"]) == seeds
                    and not trial["failed"] and _mean(trial, "ratio") <= budget]
        chosen[method] = min(eligible, key=lambda t: _mean(trials[t], "score"), default=None)
    return chosen


def _write(path: Path, methods: dict, chosen: dict, refs: dict, budget: float) -> None:
    presets = {}
    for method, trial_id in chosen.items():
        if trial_id is not None:
            params = methods[method][trial_id]["params"]
            presets[method] = {"method": params.get("method", method),
                               **{k: params[k] for k in sorted(params) if k != "method"}}
    header = (f"# Each method's tuned settings: the trial of its tuning sweep (configs/sweeps/tune/"
              f"<method>.yaml)\n# closest to the retrained model on the tuning stand-in, seeds "
              f"{sorted(refs)}, unlearning <= {budget:.0%} of the\n# retraining's time. Written by "
              f"benchmarks/tuning.py; README, \"Tuning\".\n")
    text = header + yaml.safe_dump(presets, sort_keys=False)
    write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", type=Path, help="folder of the tuning sweeps (runs/tune)")
    parser.add_argument("--references", type=Path, required=True,
                        help="the tuning protocol's output folder (runs/tuning)")
    parser.add_argument("--size", default="10", help="forget-set label (default 10)")
    parser.add_argument("--budget", type=float, default=0.10,
                        help="most unlearning time, as a share of the retraining's (0.10)")
    parser.add_argument("--write", type=Path, help="write the chosen settings here (YAML)")
    args = parser.parse_args(argv)

    refs = _references(args.references, args.size)
    methods = _trials(args.sweeps, refs)
    chosen = choose(methods, set(refs), args.budget)
    print("references (retrained): " + "; ".join(
        f"seed {s}: attack AUC {r['fvu']:.3f}, test AUC {r['test']:.3f}, {r['seconds']:.0f} s"
        for s, r in sorted(refs.items())))
    for method, trials in sorted(methods.items()):
        print(f"\n## {method}: {len(trials)} trial(s)\n")
        print("| | settings | attack AUC per seed | test AUC | time ratio | score |")
        print("|---|---|---|---|---|---|")
        for t in sorted(trials, key=lambda t: (bool(trials[t]["failed"]),
                                               _mean(trials[t], "score"))):
            trial = trials[t]
            mark = "**chosen**" if t == chosen[method] else (
                "failed or not evaluated on seed " + ", ".join(map(str, trial["failed"]))
                if trial["failed"] else
                "over budget" if _mean(trial, "ratio") > args.budget else
                "seeds missing" if set(trial["seeds"]) != set(refs) else "")
            per_seed = " / ".join(f"{trial['seeds'][s]['fvu']:.3f}" if s in trial["seeds"]
                                  else "—" for s in sorted(refs))
            print(f"| {mark} | {_settings(trial['params'])} | {per_seed} | "
                  f"{_mean(trial, 'test'):.3f} | {_mean(trial, 'ratio'):.3f} | "
                  f"{_mean(trial, 'score'):.3f} |")
    if args.write:
        _write(args.write, methods, chosen, refs, args.budget)
        print(f"\nwrote {args.write}")
    missing = sorted(m for m, t in chosen.items() if t is None)
    if missing:
        print(f"\nno eligible trial: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
