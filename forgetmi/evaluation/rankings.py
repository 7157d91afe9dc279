"""Do methods rank alike whatever the model remembers? Rankings per kind of memory, and their
agreement (Kendall's τ).

Each *kind* is one benchmark (a protocol's evaluated runs) on a stand-in whose memory comes
from one source: label noise, content (atypical patients), or both. Per kind and forget size,
the unlearning methods are ranked by closeness to the retrained model on the headline
(mean over seeds of |ΔFvU AUC|, as :func:`forgetmi.evaluation.report.closest_to_retrained`),
with the verdict of each (:func:`forgetmi.evaluation.report.verdicts`) beside it. τ-b between
two kinds' rankings, over the methods both ran: 1 = the same order, 0 = unrelated, −1 =
reversed; with eight methods its p-value is wide, and both are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np

from forgetmi.errors import DataError
from forgetmi.evaluation.report import RANK_KEYS, RunRecord, by_size, verdicts
from forgetmi.evaluation.signal import size_name

REFERENCES = ("original", "retrained")  # ranked against, never ranked


@dataclass
class Ranking:
    """One kind at one forget size: methods in order, closest to the retrained model first."""

    kind: str
    size: str
    methods: list[dict] = field(default_factory=list)   # label, gap, test_gap, seeds, verdict
    original_gap: float | None = None                   # the original's mean |ΔFvU AUC|

    def order(self) -> list[str]:
        return [m["label"] for m in self.methods]

    def gaps(self) -> dict[str, float]:
        return {m["label"]: m["gap"] for m in self.methods}


def _mean_abs(values: Sequence[float]) -> float | None:
    finite = [abs(v) for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def rank_kind(kind: str, runs: Sequence[RunRecord],
              judged: Sequence[dict] | None = None) -> list[Ranking]:
    """The rankings of one kind's runs, one per forget size (``judged``: their verdicts, when
    already made, as a report.json holds them)."""
    judged = {v["size"]: v for v in (verdicts(runs) if judged is None else judged)}
    out = []
    for percent, members in by_size(runs):
        size = size_name(percent)
        decisions = judged.get(size, {}).get("decisions", {})
        per_label: dict[str, list[RunRecord]] = {}
        for run in members:
            per_label.setdefault(run.label, []).append(run)
        ranking = Ranking(kind, size)
        for label, group in sorted(per_label.items()):
            gap = _mean_abs([r.values["gap_fvu_auc"] for r in group])
            if group[0].model == "original":
                ranking.original_gap = gap
            if group[0].model in REFERENCES or gap is None:
                continue
            ranking.methods.append({
                "label": label, "gap": gap,
                "test_gap": _mean_abs([r.values["gap_test_auc"] for r in group]),
                "seeds": len(group),
                "verdict": decisions.get(label, {}).get("verdict", "no verdict")})
        ranking.methods.sort(key=lambda m: (m["gap"], m["label"].casefold()))
        out.append(ranking)
    return out


def rank_report(kind: str, doc: dict, source: Path) -> list[Ranking]:
    """The rankings of one kind from the report.json ``forgetmi report`` wrote for its runs:
    the same as from the runs themselves (the gaps per run and the verdicts are kept there),
    so a kind's results travel as one small file."""
    try:
        judged = doc["verdicts"]
        runs = [RunRecord(Path(r["path"]), r["model"], r["label"], r["forget_percent"], r["seed"],
                          values={k: math.nan if r["values"][k] is None else float(r["values"][k])
                                  for k in RANK_KEYS})
                for r in doc["runs"]]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"not a report.json with per-run gaps (missing {err}); make it again "
                        "with this version's `forgetmi report`", source) from None
    if not runs:
        raise DataError("holds no evaluated runs", source)
    return rank_kind(kind, runs, judged)


def kendall(a: Ranking, b: Ranking) -> dict:
    """τ-b between two rankings over the methods both hold (their gaps, so ties count as ties)."""
    from scipy.stats import kendalltau

    common = sorted(set(a.order()) & set(b.order()))
    entry = {"size": a.size, "kinds": [a.kind, b.kind], "methods": len(common),
             "tau": None, "p_value": None}
    if len(common) >= 3:
        ga, gb = a.gaps(), b.gaps()
        result = kendalltau([ga[m] for m in common], [gb[m] for m in common])
        if math.isfinite(result.statistic):
            entry.update(tau=float(result.statistic), p_value=float(result.pvalue))
    return entry


def agreement(rankings: Sequence[Ranking]) -> list[dict]:
    """τ for every pair of kinds at every size both cover."""
    by_size_kind: dict[str, dict[str, Ranking]] = {}
    for r in rankings:
        by_size_kind.setdefault(r.size, {})[r.kind] = r
    out = []
    for size, kinds in by_size_kind.items():
        for first, second in combinations(list(kinds), 2):
            out.append(kendall(kinds[first], kinds[second]))
    return out


def render_markdown(rankings: Sequence[Ranking], taus: Sequence[dict]) -> str:
    kinds = list(dict.fromkeys(r.kind for r in rankings))
    lines = ["# Method rankings by kind of memory", "",
             "Per forget size and kind, the methods in order of closeness to the retrained "
             "model: mean over seeds of |ΔFvU AUC| (lower is closer), with each method's "
             "verdict against retraining. The original's gap is the distance a method that did "
             "nothing keeps.", ""]
    for size in dict.fromkeys(r.size for r in rankings):
        lines += [f"## Forget set {size}", "",
                  "| Rank | " + " | ".join(kinds) + " |",
                  "|---:|" + "---|" * len(kinds)]
        at = {r.kind: r for r in rankings if r.size == size}
        depth = max(len(r.methods) for r in at.values())
        for i in range(depth):
            cells = []
            for kind in kinds:
                methods = at[kind].methods if kind in at else []
                m = methods[i] if i < len(methods) else None
                cells.append("—" if m is None else
                             f"{m['label']} {m['gap']:.3f} ({m['verdict']})")
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
        originals = [f"{kind} {at[kind].original_gap:.3f}" for kind in kinds
                     if kind in at and at[kind].original_gap is not None]
        if originals:
            lines += ["", "Original (did nothing): " + ", ".join(originals) + "."]
        lines.append("")
    lines += ["## Agreement between kinds (Kendall's τ-b)", "",
              "| Forget set | Kinds | Methods | τ | p |", "|---|---|---:|---:|---:|"]
    for t in taus:
        tau = "—" if t["tau"] is None else f"{t['tau']:+.2f}"
        p = "—" if t["p_value"] is None else f"{t['p_value']:.3f}"
        lines.append(f"| {t['size']} | {' vs '.join(t['kinds'])} | {t['methods']} | {tau} | {p} |")
    lines.append("")
    return "\n".join(lines)


def json_document(rankings: Sequence[Ranking], taus: Sequence[dict]) -> dict:
    return {"rankings": [{"kind": r.kind, "size": r.size, "original_gap": r.original_gap,
                          "methods": r.methods} for r in rankings],
            "kendall": list(taus)}
