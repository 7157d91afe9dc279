"""forgetmi rankings: each kind's ranking by closeness to the retrained model and Kendall's τ
between kinds, from evaluated runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgetmi.evaluation.rankings import agreement, rank_kind
from forgetmi.evaluation.report import RunRecord
from forgetmi.jobs.rankings import main as rankings_main

SEEDS = (0, 1, 2)


def _runs(gaps: dict[str, float], percent: float = 10.0) -> list[RunRecord]:
    """Retrained models of three seeds and each method at ``gaps`` (attack AUC above the
    retrained model's), a small spread over seeds; the original far away."""
    runs = []
    for seed in SEEDS:
        base = 0.50 + 0.01 * seed
        runs.append(RunRecord(Path(f"retrained/{seed}"), "retrained", "retrained", percent, seed,
                              values={"fvu_auc": base, "test_auc": 0.75, "gap_fvu_auc": 0.0,
                                      "gap_test_auc": 0.0}))
        for label, gap in {**gaps, "original": 0.3}.items():
            model = "original" if label == "original" else label
            g = gap + 0.002 * seed
            runs.append(RunRecord(Path(f"{label}/{seed}"), model, label, percent, seed,
                                  values={"fvu_auc": base + g, "test_auc": 0.75,
                                          "gap_fvu_auc": g, "gap_test_auc": 0.0}))
    return runs


GAPS = {"a": 0.01, "b": 0.05, "c": 0.10, "d": 0.20}


def test_rankings_order_methods_and_tau_measures_agreement():
    same = rank_kind("label", _runs(GAPS))
    also = rank_kind("content", _runs({k: v * 1.5 for k, v in GAPS.items()}))
    reversed_ = rank_kind("both", _runs(dict(zip(GAPS, sorted(GAPS.values(), reverse=True)))))
    assert same[0].order() == ["a", "b", "c", "d"]         # the original is not ranked...
    assert same[0].original_gap == pytest.approx(0.302)    # ...but kept as the reference
    assert same[0].methods[0]["verdict"] in ("equivalent", "inconclusive", "differs")
    taus = {tuple(t["kinds"]): t for t in agreement([*same, *also, *reversed_])}
    assert taus[("label", "content")]["tau"] == pytest.approx(1.0)
    assert taus[("label", "both")]["tau"] == pytest.approx(-1.0)
    assert taus[("label", "content")]["methods"] == 4


def test_rankings_command_refuses_bad_input_in_one_line(tmp_path, caplog):
    caplog.set_level("ERROR", logger="forgetmi")
    assert rankings_main(["label=" + str(tmp_path)]) == 2     # one kind: nothing to compare
    assert "at least two kinds" in caplog.text
    assert rankings_main(["label", "content=x"]) == 2
    assert "expected KIND=RESULTS" in caplog.text
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    caplog.clear()
    assert rankings_main([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--out",
                          str(tmp_path / "out")]) == 2
    assert "no metrics.json found in" in caplog.text and len(caplog.records) == 1
    assert not (tmp_path / "out").exists()


def test_a_kinds_report_json_ranks_as_its_runs_do(tmp_path, capsys):
    """A kind's results kept as the one report.json `forgetmi report` wrote rank exactly as
    the evaluated runs themselves (same order, gaps, verdicts and τ)."""
    import json

    from forgetmi.evaluation.rankings import rank_report
    from forgetmi.evaluation.report import COLUMN_KEYS, COLUMNS, json_report, summarise

    runs = {"label": _runs(GAPS), "content": _runs({k: v * 1.5 for k, v in GAPS.items()})}
    for kind, records in runs.items():
        for r in records:  # the figures these runs do not define
            r.values = {k: float("nan") for k in COLUMN_KEYS} | r.values
            r.intervals = {c.key: (r.values[c.key],) * 2 for c in COLUMNS if c.interval}
        doc = json.loads(json.dumps(json_report(summarise(records), records)))
        from_runs = rank_kind(kind, records)
        from_file = rank_report(kind, doc, tmp_path / "report.json")
        assert [r.methods for r in from_file] == [r.methods for r in from_runs]
        assert [r.original_gap for r in from_file] == [r.original_gap for r in from_runs]
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "report.json").write_text(json.dumps(doc))
    assert rankings_main([f"{k}={tmp_path / k / 'report.json'}" for k in runs]) == 0
    assert "| 1 | a 0.012" in capsys.readouterr().out
    # a report.json from before the gaps were kept says what to do
    doc = json.loads((tmp_path / "label" / "report.json").read_text())
    for run in doc["runs"]:
        del run["values"]
    with pytest.raises(Exception, match="make it again"):
        rank_report("label", doc, tmp_path / "old.json")


def test_rankings_replace_only_an_earlier_rankings_files(tmp_path, caplog):
    import json

    from forgetmi.evaluation.report import COLUMN_KEYS, COLUMNS, json_report, summarise
    sources = []
    for kind, scale in (("label", 1.0), ("content", 1.5)):
        records = _runs({k: v * scale for k, v in GAPS.items()})
        for r in records:
            r.values = {k: float("nan") for k in COLUMN_KEYS} | r.values
            r.intervals = {c.key: (r.values[c.key],) * 2 for c in COLUMNS if c.interval}
        path = tmp_path / kind / "report.json"
        path.parent.mkdir()
        path.write_text(json.dumps(json.loads(json.dumps(json_report(summarise(records),
                                                                     records)))))
        sources.append(f"{kind}={path}")
    out = tmp_path / "out"
    assert rankings_main([*sources, "--out", str(out)]) == 0
    assert rankings_main([*sources, "--out", str(out)]) == 0      # its own earlier files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "rankings.md").write_text("my ranking\n")
    caplog.set_level("ERROR", logger="forgetmi")
    assert rankings_main([*sources, "--out", str(mine)]) == 2
    assert (mine / "rankings.md").read_text() == "my ranking\n"
    assert not (mine / "rankings.json").exists()
    assert rankings_main([*sources, "--out", str(mine), "--force"]) == 0
