"""Training-step throughput and peak memory per rank: DDP vs ZeRO-2 vs ZeRO-3, fp32 vs bf16.

    python benchmarks/bench_train.py --device cpu
    python benchmarks/bench_train.py --device cuda --image-size 2048 [--text-encoder PATH]

Each configuration is one ``accelerate launch`` of this file in worker mode with the shipped
``configs/accelerate/{ddp,zero2,zero3}.yaml``, training the joint model through the engine on
generated data. Every rank times the steady-state steps (the first ``--warmup`` steps are
skipped) and writes its own JSON: step times, and peak memory (on a GPU
``torch.cuda.max_memory_allocated`` over the measured steps, on CPU the process's peak RSS,
``ru_maxrss``, over its whole life). The driver prints one row per configuration.

On CPU the runs use 2 processes over gloo. On a GPU they use one process per visible GPU
over NCCL with bf16 autocast; with a single GPU, DDP and ZeRO still run their code paths
(wrapping, partitioned optimizer, gathers) but nothing is sharded or communicated, so the
memory and speed differences between strategies are not those of a multi-GPU run.

bf16 on CPU needs images of at least 512 px: oneDNN (torch 2.14) returns garbage weight
gradients for bf16 3x3 stride-2 convolutions on 1x1 inputs, which smaller images produce in
the last stages of the image encoder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("ddp", "zero2", "zero3")
# fp32 leaves the precision to the launcher's config ("no" in every shipped one)
PRECISIONS = {"fp32": "none", "bf16": "bf16"}


# ----------------------------------------------------------------------------------- worker side

def run_worker(args: argparse.Namespace) -> int:
    """One rank of one configuration: train ``warmup + steps + 1`` steps, time the middle."""
    import resource

    import pandas as pd
    import torch

    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.data.dataset import EdemaDataset
    from forgetmi.engine.distributed import build_accelerator, finish, zero_stage
    from forgetmi.engine.loop import Engine
    from forgetmi.engine.objective import Objective, SupervisedObjective
    from forgetmi.models import JointModel
    from forgetmi.data.prepare import build_datasets
    from forgetmi.utils.logs import setup_logging
    from forgetmi.utils.tracking import Tracker

    setup_logging(-1)
    out = Path(args.worker_dir)
    text_encoder = {"minilm": "none", "tiny": "tiny"}.get(args.text_encoder, args.text_encoder)
    cfg = load_config(ExperimentConfig, None, [
        f"--data.root={args.data}", f"--output_dir={out / 'run'}",
        f"--image_size={args.image_size}", f"--text_encoder={text_encoder}",
        f"--batch_size={args.batch_size}", f"--precision={PRECISIONS[args.precision]}",
        "--epochs=1", f"--max_steps={args.warmup + args.steps + 1}", "--checkpoint_every=1000000",
        "--log_every=1000000", "--warmup_ratio=0", "--wandb=disabled", "--resume=false",
        f"--num_workers={args.num_workers}"])
    accelerator = build_accelerator(cfg.train.precision, 1)
    cuda = accelerator.device.type == "cuda"

    class TimedObjective(Objective):
        """The supervised objective, stamping the start of every step (one update each)."""

        def __init__(self, inner):
            self.inner, self.marks, self.peak = inner, [], None

        def streams(self):
            return self.inner.streams()

        def compute_loss(self, model, batch):
            # The engine reads the previous step's loss back (a sync), so a stamp here closes
            # that step's backward and optimizer update; on CUDA make sure of it.
            if cuda:
                torch.cuda.synchronize()
            if len(self.marks) == args.warmup and cuda:
                torch.cuda.reset_peak_memory_stats()
            if len(self.marks) == args.warmup + args.steps:
                self.peak = (torch.cuda.max_memory_allocated() if cuda else
                             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            self.marks.append(time.perf_counter())
            return self.inner.compute_loss(model, batch)

    data, _ = build_datasets(cfg, accelerator)
    rows = pd.concat([data.partitions.retain, data.partitions.forget]).sort_index()
    train_set = EdemaDataset(rows, data.image_cache, data.token_cache,
                             length_bucket=cfg.data.length_bucket)
    torch.manual_seed(cfg.seed)
    model = JointModel(cfg.model)
    # under ZeRO-3, transformers builds a pretrained BERT already partitioned (zero.Init)
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    objective = TimedObjective(SupervisedObjective(train_set, cfg.train.batch_size,
                                                   cfg.train.ranking_weight,
                                                   cfg.train.joint_weight))
    tracker = Tracker(out / "run", cfg.tracking, {}, enabled=False)
    engine = Engine(accelerator, model, objective, cfg.train, out / "run", cfg.seed, tracker)
    needed = args.warmup + args.steps + 1
    if engine.steps_per_epoch < needed:
        raise SystemExit(f"{len(rows)} training rows give {engine.steps_per_epoch} steps per "
                         f"epoch; {needed} are needed in one epoch (use more --patients)")
    engine.fit()

    marks = objective.marks[args.warmup:args.warmup + args.steps + 1]
    backend = (torch.distributed.get_backend() if torch.distributed.is_initialized() else "none")
    record = {
        "rank": accelerator.process_index, "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "zero_stage": zero_stage(accelerator), "backend": backend,
        "precision": args.precision, "device": accelerator.device.type,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "batch_size": args.batch_size, "image_size": args.image_size,
        "text_encoder": args.text_encoder,
        "parameters": parameters,
        "step_seconds": [b - a for a, b in zip(marks, marks[1:])],
        "peak_memory_bytes": objective.peak,
        "memory_kind": "cuda max_memory_allocated" if cuda else "max RSS",
    }
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(record, indent=2))
    finish(accelerator)
    return 0


# ----------------------------------------------------------------------------------- driver side

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(args, strategy: str, precision: str, data: Path, work: Path) -> dict | str:
    """Run one configuration; return the per-rank records, or the tail of its output."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled",
               PYTHONUNBUFFERED="1")
    if args.device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
        if strategy == "ddp":
            env["ACCELERATE_USE_CPU"] = "1"  # else the processes never join one group
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(REPO / "configs" / "accelerate" / f"{strategy}.yaml"),
           "--num_processes", str(args.nproc), "--main_process_port", str(_free_port()),
           str(Path(__file__).resolve()), "--worker", "--worker-dir", str(work),
           "--data", str(data), "--device", args.device, "--image-size", str(args.image_size),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--precision", precision,
           "--text-encoder", args.text_encoder, "--num-workers", str(args.num_workers)]
    tic = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=args.timeout)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
        code = f"timeout after {args.timeout} s"
    files = sorted(work.glob("rank*.json"))
    if code != 0 or len(files) != args.nproc:
        return f"exit {code}, {len(files)}/{args.nproc} rank reports\n{output[-6000:]}"
    ranks = [json.loads(f.read_text()) for f in files]
    return {"ranks": ranks, "wall_seconds": time.perf_counter() - tic}


def _row(strategy: str, precision: str, result: dict) -> dict:
    ranks = result["ranks"]
    first = ranks[0]
    # ranks step together; a step lasts as long as the slowest rank's
    step_s = max(statistics.median(r["step_seconds"]) for r in ranks)
    return {
        "strategy": strategy, "precision": precision, "world": first["world_size"],
        "type": first["distributed_type"], "zero": first["zero_stage"],
        "backend": first["backend"], "device": first["device_name"],
        "step_s": step_s, "samples_per_s": first["world_size"] * first["batch_size"] / step_s,
        "peak_mib": [round(r["peak_memory_bytes"] / 2**20) for r in
                     sorted(ranks, key=lambda r: r["rank"])],
        "memory_kind": first["memory_kind"], "steps": len(first["step_seconds"]),
        "wall_s": result["wall_seconds"], "parameters": first["parameters"],
    }


def _print_table(rows: list[dict], args) -> None:
    head = (f"{'strategy':8} {'prec':5} {'world':>5} {'type':10} {'backend':7} {'s/step':>8} "
            f"{'samples/s':>10} {'peak MiB per rank':>20}")
    print()
    print(f"image {args.image_size}px, batch {args.batch_size}/rank, text encoder "
          f"{args.text_encoder}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{args.num_workers} loader workers, device {args.device}")
    print(head)
    print("-" * len(head))
    for row in rows:
        if "error" in row:
            print(f"{row['strategy']:8} {row['precision']:5} FAILED: {row['error']}")
            continue
        peaks = " / ".join(str(p) for p in row["peak_mib"])
        print(f"{row['strategy']:8} {row['precision']:5} {row['world']:>5} {row['type']:10} "
              f"{row['backend']:7} {row['step_s']:>8.3f} {row['samples_per_s']:>10.2f} "
              f"{peaks:>20}")
    kinds = {row["memory_kind"] for row in rows if "memory_kind" in row}
    params = {row["parameters"] for row in rows if "parameters" in row}
    print(f"peak memory: {', '.join(sorted(kinds))}; model parameters: "
          f"{', '.join(f'{p / 1e6:.1f} M' for p in sorted(params))}")


def _make_data(args, root: Path) -> Path:
    from forgetmi.synthetic import generate_dataset
    # ~2 training rows per patient (the rest are test, validation), one epoch must hold all
    # the timed steps
    needed = (args.warmup + args.steps + 1) * args.batch_size * args.nproc
    patients = max(20, math.ceil(needed / 2) + 4)
    tic = time.perf_counter()
    # pydicom's test-file lookup would try a download without pydicom-data (offline machines)
    background = "auto" if importlib.util.find_spec("pydicom_data") else "procedural"
    paths = generate_dataset(root, n_patients=patients, image_size=min(args.image_size, 2048),
                             seed=0, workers=max(1, min(8, os.cpu_count() or 1)),
                             background=background)
    print(f"generated {patients} patients at {min(args.image_size, 2048)} px in "
          f"{time.perf_counter() - tic:.0f} s", flush=True)
    return Path(paths.root)


def run_driver(args: argparse.Namespace) -> int:
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device visible", file=sys.stderr)
            return 2
        args.nproc = args.nproc or torch.cuda.device_count()
    args.nproc = args.nproc or 2
    if args.device == "cpu" and "bf16" in args.precisions and args.image_size < 512:
        print("warning: bf16 on CPU below 512 px hits oneDNN's bad bf16 convolution gradients "
              "(see the module docstring); its numbers are still timings", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    rows, failed = [], False
    try:
        data = Path(args.data) if args.data else _make_data(args, scratch / "data")
        for strategy in args.strategies:
            for precision in args.precisions:
                work = scratch / f"{strategy}-{precision}"
                work.mkdir()
                result = _launch(args, strategy, precision, data, work)
                if isinstance(result, str):
                    failed = True
                    print(f"\n{strategy} {precision} failed:\n{result}", file=sys.stderr)
                    rows.append({"strategy": strategy, "precision": precision,
                                 "error": result.splitlines()[0]})
                else:
                    rows.append(_row(strategy, precision, result))
                    print(f"{strategy} {precision}: {rows[-1]['step_s']:.3f} s/step "
                          f"({rows[-1]['wall_s']:.0f} s launch)", flush=True)
                shutil.rmtree(work / "run", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    _print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--image-size", type=int, help="default: 512 on cpu, 2048 on cuda")
    parser.add_argument("--batch-size", type=int, help="per rank; default 4")
    parser.add_argument("--text-encoder", help="tiny | minilm (the packaged all-MiniLM-L6-v2) "
                        "| a BERT folder such as SciBERT; default: tiny on cpu, minilm on cuda")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--nproc", type=int, help="processes per run; default 2 on cpu, "
                        "the number of visible GPUs on cuda")
    parser.add_argument("--strategies", type=lambda s: s.split(","), default=list(STRATEGIES))
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=list(PRECISIONS))
    parser.add_argument("--data", help="a generated dataset folder (default: generate one)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers per rank; "
                        "default 0 on cpu, 4 on cuda")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    # worker mode (used by the driver through accelerate launch)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cuda = args.device == "cuda"
    args.image_size = args.image_size or (2048 if cuda else 512)
    args.batch_size = args.batch_size or 4
    args.text_encoder = args.text_encoder or ("minilm" if cuda else "tiny")
    args.num_workers = (4 if cuda else 0) if args.num_workers is None else args.num_workers
    for name in args.strategies:
        if name not in STRATEGIES:
            raise SystemExit(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    for name in args.precisions:
        if name not in PRECISIONS:
            raise SystemExit(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    if args.worker:
        return run_worker(args)
    return run_driver(args)


if __name__ == "__main__":
    raise SystemExit(main())
