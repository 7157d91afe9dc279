"""``forgetmi demo``: the whole pipeline on the embedded stand-in data, end to end on a CPU.

Today: generate the data, audit the partitions of every forget size, build the caches, stream
every partition (and the noisy forget set) through the loaders, and print a summary.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from forgetmi.config import DataConfig
from forgetmi.utils.atomic import write_json

logger = logging.getLogger("forgetmi.demo")


def _dataset(out: Path, n_patients: int, image_size: int, seed: int, workers: int):
    """Reuse a stand-in dataset generated earlier with the same parameters, else generate one."""
    from forgetmi.data.synthetic import DatasetPaths, generate_dataset
    root = out / "data"
    if (root / "manifest.json").is_file():
        manifest = json.loads((root / "manifest.json").read_text())
        params = manifest.get("parameters", manifest)
        if (params.get("n_patients"), params.get("image_size"), params.get("seed")) == \
                (n_patients, image_size, seed):
            logger.info("reusing the stand-in dataset in %s", root)
            return DatasetPaths.from_root(root)
    return generate_dataset(root, n_patients=n_patients, image_size=image_size, seed=seed,
                            workers=workers, overwrite=True)


def run_demo(out: Path, n_patients: int = 120, image_size: int = 256, seed: int = 0,
             workers: int = 2) -> dict:
    from forgetmi.data.dataset import EdemaDataset, build_loader
    from forgetmi.data.noise import Perturbation, build_perturber
    from forgetmi.data.prepare import ensure_caches, load_partitions

    out = Path(out)
    summary: dict = {"seed": seed}
    start = time.perf_counter()
    paths = _dataset(out, n_patients, image_size, seed, workers)
    summary["generate_s"] = round(time.perf_counter() - start, 2)

    audits = {}
    for percent in sorted(paths.forget_sets):
        config = DataConfig(root=str(paths.root), forget_set=paths.forget_sets[percent].name,
                            image_size=image_size, workers=workers)
        audits[percent] = load_partitions(config, seed)  # raises if any leak is found
    data = ensure_caches(audits[max(audits)])
    logger.info("\n%s", data.audit.to_text())

    perturber = build_perturber(Perturbation(seed=seed), paths.synonyms)
    throughput = {}
    for name, frame in data.partitions.items():
        dataset = EdemaDataset(frame, data.image_cache, data.token_cache)
        tic = time.perf_counter()
        n = sum(len(batch["label"]) for batch in build_loader(dataset, batch_size=16, shuffle=True,
                                                              seed=seed))
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
    return "\n".join(lines)
