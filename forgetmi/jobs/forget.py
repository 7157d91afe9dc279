"""``forgetmi forget``: from a patient's request to an audited model that no longer holds them.

1. validate the request (unknown patients, TEST-fold patients, patients already forgotten);
2. build the forget set (every row of those patients) and the retain set (everyone else, less
   the patients of earlier requests);
3. unlearn with the chosen method through the shared engine, starting from the model that the
   previous request left (or the trained model for the first one);
4. evaluate: forget/test metrics, the membership attacks and, with a retrained reference, the gap
   to it; the attacks also on the model before unlearning, so the record shows what the
   unlearning changed. The request is complete only when the attack's mean member-probability
   on the forgotten rows is at most the threshold; otherwise it is recorded as incomplete, and
   said so;
5. once complete, purge the patients' rows from the package's caches and add them to the
   workspace's ``forgotten.csv``, the list every later job on the data leaves out
   (``--data.exclude``; a job whose data still holds them stops at its start, naming it);
6. write an audit record (JSON and a short summary) — request hash, salted patient hashes,
   model checksums before and after, method and config, metrics and attack figures before and
   after, timings, what was purged — and append it to the workspace's request log
   (``forgetmi history``).

The workspace holds a random salt; patient ids appear in the audit and the request log only as
salted hashes, and never in logs. The patient lists the unlearning read (``patients.csv``,
``forgotten-before.csv`` in the request's folder, ``forgotten.csv``) name them: they are the
data its run and the later jobs need, kept with the workspace. A killed run is resumed by
rerunning the same command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from forgetmi.engine.checkpoint import sha256_file as file_sha256
from forgetmi.errors import DataError, ForgetMIError, exit_on_error
from forgetmi.utils.atomic import write_csv, write_json, write_text

logger = logging.getLogger("forgetmi.forget")

LOG = "requests.jsonl"
# Every patient the workspace's completed requests forgot (split rows): what later jobs on the
# data leave out with --data.exclude.
FORGOTTEN = "forgotten.csv"
COLUMNS, NAMES = ["subject_id", "study_id", "dicom_id", "severity", "fold"], \
    {"severity": "edema_severity"}


# -- the workspace: salt, log, hashes ----------------------------------------------------------------

def _existing_salt(workspace: Path) -> str | None:
    path = workspace / "salt"
    return path.read_text().strip() if path.is_file() else None


def _keep_salt(workspace: Path, salt: str) -> None:
    """Write a new workspace's salt (once the request has passed every check)."""
    path = workspace / "salt"
    if not path.is_file():
        write_text(path, salt)
        path.chmod(0o600)


def patient_hash(salt: str, patient) -> str:
    return hashlib.sha256(f"{salt}:{int(patient)}".encode()).hexdigest()


def read_log(workspace: Path) -> list[dict]:
    path = workspace / LOG
    if not path.is_file():
        return []
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError("request log line is not valid JSON", path, n) from None
    return entries


def _append_log(workspace: Path, entry: dict) -> None:
    lines = [json.dumps(e, sort_keys=True) for e in read_log(workspace)] + \
        [json.dumps(entry, sort_keys=True)]
    write_text(workspace / LOG, "\n".join(lines) + "\n")  # whole file replaced atomically


# -- the request -----------------------------------------------------------------------------------

def read_request(patients: list[str] | None, request_csv: str | None) -> list[int]:
    """Patient ids from the command line or from a CSV with a ``subject_id`` column."""
    if request_csv:
        from forgetmi.data.formats import read_raw_csv
        path = Path(request_csv)
        if not path.is_file():
            raise DataError("request file not found", path)
        frame = read_raw_csv(path, header="subject_id")
        if "subject_id" not in frame.columns:
            raise DataError("expected a subject_id column", path, 1, "subject_id")
        raw = list(frame["subject_id"])
        where = lambda i: f"{path} line {i + 2}"  # noqa: E731
    else:
        raw = list(patients or [])
        where = lambda i: f"--patients item {i + 1}"  # noqa: E731
    if not raw:
        raise ForgetMIError("the request names no patient; give --patients ID ... or --request CSV")
    ids = []
    for i, value in enumerate(raw):
        text = str(value).strip()
        if not text.isdigit():
            raise ForgetMIError(f"{where(i)}: expected a numeric patient id")
        ids.append(int(text))
    if len(set(ids)) != len(ids):
        raise ForgetMIError("the request names a patient twice")
    return ids


def validate(ids: list[int], split: pd.DataFrame, forgotten: dict[str, int], salt: str) -> None:
    """Clear errors naming request items (never the ids themselves)."""
    known = set(split["subject_id"])
    unknown = [i + 1 for i, p in enumerate(ids) if p not in known]
    if unknown:
        raise ForgetMIError(f"{len(unknown)} requested patient(s) are not in the split "
                            f"(request item(s) {', '.join(map(str, unknown))})")
    test = set(split.loc[split["fold"] == "TEST", "subject_id"])
    in_test = [i + 1 for i, p in enumerate(ids) if p in test]
    if in_test:
        raise ForgetMIError(f"{len(in_test)} requested patient(s) are in the TEST fold (request "
                            f"item(s) {', '.join(map(str, in_test))}): no model was trained on "
                            "them; remove them from the evaluation data instead")
    repeated = [(i + 1, forgotten[h]) for i, p in enumerate(ids)
                if (h := patient_hash(salt, p)) in forgotten]
    if repeated:
        raise ForgetMIError("patient(s) already forgotten: " + ", ".join(
            f"request item {i} in request #{k}" for i, k in repeated))


# -- one request -----------------------------------------------------------------------------------

def forget(workspace: str | Path, config_path: str | None, model: str | None, ids: list[int],
           overrides: list[str], retrained: str | None = None,
           max_member_probability: float = 0.5, n_boot: int = 200) -> dict:
    from forgetmi.config import ExperimentConfig, load_config, load_run_config
    from forgetmi.data import formats
    from forgetmi.data.purge import purge_caches
    from forgetmi.evaluation.evaluate import attack_figures, evaluate_run
    from forgetmi.jobs.unlearn import run_unlearning

    start = time.perf_counter()
    # Absolute: the run's config names its files, found from wherever it is read.
    workspace = Path(os.path.abspath(workspace))
    if workspace.exists() and not workspace.is_dir():
        raise ForgetMIError(f"--workspace {workspace}: exists and is not a folder")
    # Every check before the first write: a refused request leaves the workspace as it was.
    cfg = load_config(ExperimentConfig, config_path, overrides)
    split = formats.read_split(cfg.data.path("split"))
    log = read_log(workspace)
    salt = _existing_salt(workspace) or secrets.token_hex(32)
    forgotten = {h: e["request"] for e in log if e.get("complete") for h in e["patient_hashes"]}
    validate(ids, split, forgotten, salt)
    hashes = sorted(patient_hash(salt, p) for p in ids)
    request_hash = hashlib.sha256("".join(hashes).encode()).hexdigest()

    completed = [e for e in log if e.get("complete")]
    before = completed[-1]["model_after"] if completed else model
    before = None if before is None else Path(os.path.abspath(before))
    if before is None or not (before / "model.safetensors").is_file():
        raise ForgetMIError("give --model (the trained model folder) for the first request")
    workspace.mkdir(parents=True, exist_ok=True)
    _keep_salt(workspace, salt)
    # A request tried before (recorded incomplete) keeps its number and gets a new attempt; a
    # killed attempt left no record, so rerunning the command resumes it from its checkpoint.
    tries = [e for e in log if e["request_hash"] == request_hash]
    number = tries[0]["request"] if tries else len({e["request"] for e in log}) + 1
    folder = workspace / "requests" / f"{number:04d}-{request_hash[:12]}"
    attempt = len(tries) + 1
    rows = split[split["subject_id"].isin(ids)]
    write_csv(folder / "patients.csv", rows[COLUMNS].rename(columns=NAMES))
    earlier = split[split["subject_id"].map(lambda p: patient_hash(salt, p) in forgotten)]
    # Left out too: the patients --data.exclude names (forgotten in another workspace, say).
    given = cfg.data.path("exclude")
    if given is not None:
        earlier = split[split["subject_id"].isin(set(earlier["subject_id"]) | set(
            formats.read_forget_set(given)["subject_id"]))]
    data = replace(cfg.data, forget_set=str(folder / "patients.csv"), exclude=None)
    if len(earlier):
        write_csv(folder / "forgotten-before.csv", earlier[COLUMNS].rename(columns=NAMES))
        data = replace(data, exclude=str(folder / "forgotten-before.csv"))
    run_dir = folder / f"attempt-{attempt}"
    run_cfg = replace(cfg, output_dir=str(run_dir), data=data,
                      unlearn=replace(cfg.unlearn, original=str(before)))
    logger.info("request #%d: %d patient(s), %d row(s); %s from the model of %s", number,
                len(ids), len(rows), run_cfg.unlearn.method,
                f"request #{completed[-1]['request']}" if completed else "training")

    tic = time.perf_counter()
    run_unlearning(run_cfg, request=True)
    unlearn_s = time.perf_counter() - tic
    tic = time.perf_counter()
    result = evaluate_run(run_dir, retrained=retrained, n_boot=n_boot)
    # The same attacks on the model the request started from, on the same rows: the gate's
    # figure means something only beside what it was before the unlearning.
    before_mia = attack_figures(before, load_run_config(run_dir), n_boot=n_boot) or {}
    evaluate_s = time.perf_counter() - tic
    population = (result.get("mia") or {}).get("population") or {}
    member = population.get("target_member_probability")
    complete = member is not None and member <= max_member_probability

    purged = []
    if complete:
        # The list first: a purge is never left without the file that names who it removed.
        done_before = split[split["subject_id"].map(lambda p: patient_hash(salt, p) in forgotten)]
        everyone = split[split["subject_id"].isin(set(done_before["subject_id"]) | set(ids))]
        write_csv(workspace / FORGOTTEN, everyone[COLUMNS].rename(columns=NAMES))
        keep = set(split.loc[~split["subject_id"].isin(ids), "study_id"].astype(int))
        purged = purge_caches(cfg.data.resolved_cache_dir(), rows, keep,
                              listed=workspace / FORGOTTEN)
    joint = {part: {m: result["metrics"][part]["joint"][m]["value"] for m in ("auc", "f1")}
             for part in ("forget", "test") if part in result["metrics"]}
    record = {
        "request": number, "request_hash": request_hash, "patient_hashes": hashes,
        "salt_id": hashlib.sha256(salt.encode()).hexdigest()[:16],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "patients": len(ids), "rows": int(len(rows)),
        "method": run_cfg.unlearn.method,
        "preset": run_cfg.unlearn.preset if run_cfg.unlearn.method == "forgetmi" else None,
        "attempt": attempt,
        "model_before": str(before), "model_after": str(run_dir / "model"),
        "model_before_sha256": file_sha256(before / "model.safetensors"),
        "model_after_sha256": file_sha256(run_dir / "model" / "model.safetensors"),
        "config": str(run_dir / "config.yaml"),
        "metrics": {"joint": joint, "svc_mia": (result.get("mia") or {}).get("svc_mia_per_sample"),
                    "attack_auc": population.get("auc"),
                    "member_probability": member,
                    "gap_test_auc": (result.get("gap") or {}).get("test", {}).get("joint", {})
                    .get("auc")},
        "attack": {"before": attack_record(before_mia), "after": attack_record(result.get("mia"))},
        "threshold": max_member_probability, "complete": complete,
        "exclude": str(workspace / FORGOTTEN) if complete else None,
        "timings": {"unlearning_s": round(unlearn_s, 2), "evaluation_s": round(evaluate_s, 2),
                    "total_s": round(time.perf_counter() - start, 2)},
        "purged": purged,
    }
    write_json(folder / "audit.json", record)
    write_text(folder / "summary.txt", summary(record))
    _append_log(workspace, record)
    logger.info("\n%s", summary(record))
    return record


def attack_record(mia: dict | None) -> dict:
    """One model's attack figures for the audit: the forget-vs-unseen loss attack's AUC (0.5:
    the forgotten rows look unseen) with its interval, and the population attack's AUC and
    mean member-probability on the forgotten rows (the gate's figure)."""
    mia = mia or {}
    headline, population = mia.get("forget_vs_unseen") or {}, mia.get("population") or {}
    return {"forget_vs_unseen_auc": headline.get("auc"), "low": headline.get("low"),
            "high": headline.get("high"), "unseen": headline.get("unseen"),
            "population_auc": population.get("auc"),
            "member_probability": population.get("target_member_probability")}


def summary(r: dict) -> str:
    m = r["metrics"]
    def fmt(v):
        return "—" if v is None else f"{v:.3f}"
    joint = m["joint"]
    lines = [
        f"forget request #{r['request']} ({r['created']})",
        f"  request      {r['request_hash'][:16]}…, {r['patients']} patient(s), {r['rows']} row(s) "
        "(patients recorded as salted hashes only)",
        f"  method       {r['method']}" + (f" ({r['preset']})" if r.get("preset") else ""),
        f"  model        {r['model_before_sha256'][:16]}… -> {r['model_after_sha256'][:16]}…",
        f"  forget rows  AUC {fmt(joint.get('forget', {}).get('auc'))}, "
        f"F1 {fmt(joint.get('forget', {}).get('f1'))}; test AUC "
        f"{fmt(joint.get('test', {}).get('auc'))}, F1 {fmt(joint.get('test', {}).get('f1'))}",
    ]
    attack = r.get("attack")
    if attack:   # before -> after the unlearning
        b, a = attack["before"], attack["after"]
        lines += [
            f"  attack       forget-vs-{a.get('unseen') or 'unseen'} AUC "
            f"{fmt(b['forget_vs_unseen_auc'])} -> {fmt(a['forget_vs_unseen_auc'])} (0.5: as if "
            "never seen); mean member-probability of the forgotten rows "
            f"{fmt(b['member_probability'])} -> {fmt(a['member_probability'])} (threshold "
            f"{r['threshold']:.2f}); population attack AUC {fmt(b['population_auc'])} -> "
            f"{fmt(a['population_auc'])}"]
    else:        # a record written before the attacks were run on the model before too
        lines.append(f"  attack       mean member-probability of the forgotten rows "
                     f"{fmt(m['member_probability'])} (threshold {r['threshold']:.2f}); "
                     f"population attack AUC {fmt(m['attack_auc'])}")
    if m.get("gap_test_auc") is not None:
        lines.append(f"  vs retrained test AUC gap {m['gap_test_auc']:+.3f}")
    lines.append(f"  time         unlearning {r['timings']['unlearning_s']} s, evaluation "
                 f"{r['timings']['evaluation_s']} s")
    if r["complete"]:
        lines.append("  purged       " + ("; ".join(
            f"{p['kind']} ({p['rows']} rows) in {p['cache']}" if p["rows"] is not None
            else f"{p['kind']} {p['cache']}" for p in r["purged"]) or "nothing (no caches)"))
        if r.get("exclude"):
            lines.append(f"  later jobs   leave them out: --data.exclude={r['exclude']}")
        lines.append("  status       COMPLETE")
    else:
        lines.append("  status       INCOMPLETE: the attack still identifies the patients above "
                     "the threshold; nothing was purged. Rerun with a stronger setting (more "
                     "epochs, another preset or method); the request keeps its number.")
    return "\n".join(lines)


def history(workspace: str | Path) -> list[dict]:
    """Print the workspace's requests, one line each, on stdout (the command's output, not a
    log: ``history | grep`` sees it, ``-q`` does not hide it); return them."""
    entries = read_log(Path(workspace))
    for e in entries:
        sys.stdout.write("#%-3d %s  %d patient(s)  %s  %-10s %s  model %s…\n" % (
            e["request"], e["created"], e["patients"], e["request_hash"][:12], e["method"],
            "complete  " if e["complete"] else "INCOMPLETE", e["model_after_sha256"][:12]))
    if not entries:
        sys.stdout.write(f"no request yet in {workspace}\n")
    return entries


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forgetmi forget", description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True,
                        help="folder of the request log, audit records and unlearned models")
    parser.add_argument("--config", required=True,
                        help="the trained model's config.yaml (its data description)")
    parser.add_argument("--model", help="the trained model folder (first request)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--patients", nargs="+", metavar="ID")
    who.add_argument("--request", help="CSV with a subject_id column")
    parser.add_argument("--retrained", help="a retrained reference run (for the gap)")
    parser.add_argument("--max-member-probability", type=float, default=0.5,
                        help="complete only when the attack's mean member-probability on the "
                             "forgotten rows is at most this")
    parser.add_argument("--bootstrap", type=int, default=200)
    args, overrides = parser.parse_known_args(argv)
    ids = read_request(args.patients, args.request)
    record = forget(args.workspace, args.config, args.model, ids, overrides, args.retrained,
                    args.max_member_probability, args.bootstrap)
    return 0 if record["complete"] else 1


@exit_on_error
def history_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forgetmi history",
                                     description="the requests of a forget workspace")
    parser.add_argument("workspace")
    args = parser.parse_args(argv)
    if not Path(args.workspace).is_dir():
        raise ForgetMIError(f"{args.workspace}: no such forget workspace (the --workspace "
                            "folder of forgetmi forget)")
    history(args.workspace)
    return 0
