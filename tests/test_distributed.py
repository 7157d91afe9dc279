"""Two-process training on CPU (gloo) through ``accelerate launch`` with the shipped configs.

DDP, DeepSpeed ZeRO-2 and ZeRO-3 on the same data and seed (the launch matrix's train runs,
launched once per session): world size, both ranks at work, the final model, weights identical
across ranks, optimizer state (and, for ZeRO-3, parameters) really sharded, and the three
strategies training the same model. Then ZeRO-2 with the optimizer offloaded to the CPU, ZeRO-3
in bf16 with the pretrained BERT, and a ZeRO-2 run stopped mid-run and resumed. Finally
unlearning: SCRUB's two phases across ZeRO-2 ranks with the frozen original beside the
DeepSpeed-wrapped student, and a DDP Forget-MI run resumed inside its first epoch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.launching import ARGS, UPDATES, accelerate_launch, config_path

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[1]
# The first DeepSpeed launch on a machine JIT-compiles its shared-memory op (20-45 s on 2
# cores) and the first offloaded one DeepSpeedCPUAdam (30-75 s); both are cached afterwards.
TIMEOUT_S = 420


def launch(strategy: str, data, out: Path, *extra: str, expect_rc: int | None = 0,
           deepspeed_config: Path | None = None, script: str = "launch/train.py") -> str:
    """``accelerate launch --config_file configs/accelerate/<strategy>.yaml``, two processes."""
    return accelerate_launch(config_path(strategy), script,
                             [f"--data.root={data.root}", f"--output_dir={out}", *ARGS, *extra],
                             expect_rc=expect_rc, timeout=TIMEOUT_S,
                             deepspeed_config=deepspeed_config)


def timing(out: Path) -> dict:
    return json.loads((out / "timing.json").read_text())


def train_records(out: Path) -> list[dict]:
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def adam_moment_bytes(path: Path) -> int:
    """Bytes of Adam's exp_avg / exp_avg_sq tensors in an optimizer state file, wherever nested."""
    def walk(node) -> int:
        if isinstance(node, dict):
            return sum(v.numel() * v.element_size() if k in ("exp_avg", "exp_avg_sq")
                       and torch.is_tensor(v) else walk(v) for k, v in node.items())
        if isinstance(node, (list, tuple)):
            return sum(walk(v) for v in node)
        return 0
    # Files this test's own runs wrote; DeepSpeed's shards hold its config objects.
    return walk(torch.load(path, map_location="cpu", weights_only=False))


def zero_shards(out: Path, kind: str) -> list[Path]:
    folder = out / "checkpoints" / "latest" / "pytorch_model"
    return sorted(folder.glob(f"zero_pp_rank_*_mp_rank_00_{kind}_states.pt"))


def assert_two_ranks_finished(out: Path, distributed_type: str, stage: int,
                              updates: int = UPDATES) -> dict:
    info = timing(out)
    assert info["world_size"] == 2, info
    assert info["distributed_type"] == f"DistributedType.{distributed_type}", info
    assert info["zero_stage"] == stage and info["updates"] == updates, info
    latest = out / "checkpoints" / "latest"
    # each rank saves its own RNG state: both processes reached the final checkpoint
    assert sorted(p.name for p in latest.glob("random_states_*.pkl")) == \
        ["random_states_0.pkl", "random_states_1.pkl"]
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["done"] and state["updates"] == updates
    assert [r["step"] for r in train_records(out)] == list(range(1, updates + 1))
    return info


def assert_model_loads(out: Path) -> None:
    from forgetmi.models import JointModel
    model = JointModel.from_pretrained(out / "model").eval()
    with torch.no_grad():
        result = model(torch.rand(2, 1, 64, 64), torch.randint(0, 100, (2, 12)),
                       torch.ones(2, 12, dtype=torch.long))
    assert result.image_logits.shape == (2, 4) and result.joint_embedding.shape == (2, 768)
    assert all(torch.isfinite(v).all() for v in weights(out).values())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("distributed")


# The launch matrix's train runs (test_launch_matrix.py): same arguments as every launch here.
@pytest.fixture(scope="module")
def ddp_run(matrix_runs):
    return matrix_runs("ddp") / "train"


@pytest.fixture(scope="module")
def zero2_run(matrix_runs):
    return matrix_runs("zero2") / "train"


@pytest.fixture(scope="module")
def zero3_run(matrix_runs):
    return matrix_runs("zero3") / "train"


def test_ddp_two_processes(ddp_run):
    info = assert_two_ranks_finished(ddp_run, "MULTI_CPU", 0)
    assert info["ranks_agree"] is True
    assert (ddp_run / "checkpoints/latest/optimizer.bin").is_file()
    assert_model_loads(ddp_run)


def test_zero2_shards_the_optimizer_state(zero2_run, ddp_run):
    info = assert_two_ranks_finished(zero2_run, "DEEPSPEED", 2)
    assert info["ranks_agree"] is True
    assert_model_loads(zero2_run)
    shards = zero_shards(zero2_run, "optim")
    assert [p.name for p in shards] == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
                                        for r in (0, 1)]
    full = adam_moment_bytes(ddp_run / "checkpoints/latest/optimizer.bin")
    parts = [adam_moment_bytes(p) for p in shards]
    # each rank holds half of Adam's moments (DeepSpeed pads its partitions a little)
    assert all(0.49 * full <= part <= 0.51 * full for part in parts), (full, parts)
    assert abs(sum(parts) - full) <= 0.005 * full, (full, parts)
    # and the replicated model weights exist once, not per rank
    assert len(list((zero2_run / "checkpoints/latest/pytorch_model").glob("*model_states.pt"))) == 1


def test_zero3_shards_parameters_and_optimizer_state(zero3_run, ddp_run):
    info = assert_two_ranks_finished(zero3_run, "DEEPSPEED", 3)
    assert info["ranks_agree"] is None  # parameters are sharded: nothing replicated to compare
    assert_model_loads(zero3_run)  # gathered from both ranks into one full set of weights
    full = adam_moment_bytes(ddp_run / "checkpoints/latest/optimizer.bin")
    parts = [adam_moment_bytes(p) for p in zero_shards(zero3_run, "optim")]
    assert len(parts) == 2 and all(0.49 * full <= p <= 0.51 * full for p in parts), (full, parts)
    # per-rank model files hold only buffers and metadata; the parameters live in the shards
    model_bytes = (zero3_run / "model" / "model.safetensors").stat().st_size
    sizes = [p.stat().st_size for p in zero_shards(zero3_run, "model")]
    assert len(sizes) == 2 and all(s < 0.05 * model_bytes for s in sizes), (model_bytes, sizes)


def test_strategies_train_the_same_model(ddp_run, zero2_run, zero3_run):
    """Same seed, data and batch plan: DDP and both ZeRO stages start from the same weights,
    average gradients the same way, and follow the same loss curve.

    ZeRO-2 matches DDP to float precision over every update. ZeRO-3 reduces gradients in
    another order; Adam turns the last-bit differences of near-zero gradient coordinates into
    lr-sized steps, and with gradient norms in the hundreds the curves drift apart after a few
    updates (measured: 3e-6 relative at update 2, 1e-5 at 3, ~1e-2 at 6), so only its first
    two updates are compared closely.
    """
    curves = {name: train_records(out) for name, out in
              (("ddp", ddp_run), ("zero2", zero2_run), ("zero3", zero3_run))}
    first = curves["ddp"][0]
    for name, records in curves.items():
        assert records[0]["train/loss"] == pytest.approx(first["train/loss"], rel=1e-6), name
        # a sum instead of a mean over ranks would double the norm
        assert records[0]["train/grad_norm"] == pytest.approx(first["train/grad_norm"],
                                                              rel=1e-5), name
    for name, compared in (("zero2", UPDATES), ("zero3", 2)):
        for a, b in zip(curves["ddp"][:compared], curves[name]):
            assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-4), (name, a, b)


def test_zero2_with_optimizer_offload(demo_data, runs, zero2_run):
    config = json.loads((REPO / "configs/deepspeed/zero2.json").read_text())
    config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    config_path = runs / "zero2_offload.json"
    config_path.write_text(json.dumps(config))
    out = runs / "zero2-offload"
    launch("zero2", demo_data, out, deepspeed_config=config_path)
    info = assert_two_ranks_finished(out, "DEEPSPEED", 2)
    assert info["ranks_agree"] is True
    assert_model_loads(out)
    shards = zero_shards(out, "optim")
    assert len(shards) == 2
    state = torch.load(shards[0], map_location="cpu", weights_only=False)
    assert state["ds_config"]["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    # DeepSpeedCPUAdam ran (its param groups carry bias_correction; torch's AdamW's do not)
    groups = state["optimizer_state_dict"]["base_optimizer_state"]["param_groups"]
    assert all("bias_correction" in g for g in groups)
    # same start as the on-device optimizer: same first loss and gradient norm
    ours, plain = train_records(out)[0], train_records(zero2_run)[0]
    assert ours["train/loss"] == pytest.approx(plain["train/loss"], rel=1e-5)
    assert ours["train/grad_norm"] == pytest.approx(plain["train/grad_norm"], rel=1e-4)


def test_zero3_bf16_with_the_pretrained_bert(demo_data, runs):
    """bf16 under DeepSpeed runs as torch autocast over fp32 weights, as under DDP.

    ZeRO-3 with the packaged (pretrained) MiniLM: transformers builds it inside ``zero.Init``,
    which must see fp32 too, or its bf16 weights beside the fp32 image encoder break ZeRO-3.
    512 px: below that the image encoder's last stages see 1x1 maps, where oneDNN's bf16
    convolution weight gradients (torch 2.14, CPU) come back as garbage.
    """
    out = runs / "zero3-bf16"
    output = launch("zero3", demo_data, out, "--precision=bf16", "--image_size=512",
                    "--batch_size=2", "--text_encoder=none", "--max_steps=3")
    assert_two_ranks_finished(out, "DEEPSPEED", 3, updates=3)
    assert "OVERFLOW" not in output  # DeepSpeed skips steps whose gradients are not finite
    assert all(r["train/grad_norm"] is not None for r in train_records(out))
    state = torch.load(zero_shards(out, "optim")[0], map_location="cpu", weights_only=False)
    assert state["ds_config"]["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert state["ds_config"]["bf16"]["enabled"] is False
    saved = weights(out)
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float32}
    assert saved["text_model.bert.embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert_model_loads(out)


def test_zero2_resumes_mid_run(demo_data, runs, zero2_run):
    out = runs / "zero2-resumed"
    # stop after update 5 without saving: the latest checkpoint is update 3, mid-epoch
    output = launch("zero2", demo_data, out, "--stop_after=5", "--checkpoint_every=3",
                    expect_rc=None)
    # torchrun's failure summary lists every rank with its exit code
    stopped = re.findall(r"rank\s*:\s*(\d) \(local_rank: \d\)\s*exitcode\s*:\s*3\b", output)
    assert sorted(stopped) == ["0", "1"], "both ranks should exit with code 3"
    assert output.count("stopped on purpose after 5 updates") == 2
    latest = out / "checkpoints" / "latest"
    state = json.loads((latest / "trainer_state.json").read_text())
    assert (state["updates"], state["step"], state["done"]) == (3, 3, False)
    assert len(zero_shards(out, "optim")) == 2

    output = launch("zero2", demo_data, out, "--checkpoint_every=3")
    assert "resumed from" in output and "(epoch 0, step 3)" in output
    info = timing(out)
    assert info["world_size"] == 2 and info["updates"] == UPDATES and info["ranks_agree"] is True
    steps = [r["step"] for r in train_records(out)]
    assert steps == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]  # updates 4-5 redone after the resume
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["done"] and state["updates"] == UPDATES

    # Same batches (pure function of seed and step), restored RNG and optimizer partitions,
    # deterministic single-threaded CPU kernels: the resumed run matches the straight one.
    straight, resumed = weights(zero2_run), weights(out)
    assert straight.keys() == resumed.keys()
    worst = max(float((straight[k].double() - resumed[k].double()).abs().max()) for k in straight)
    assert worst <= 1e-6, worst
    replayed = {r["step"]: r["train/loss"] for r in train_records(out)}
    for record in train_records(zero2_run):
        assert replayed[record["step"]] == pytest.approx(record["train/loss"], rel=1e-6)


# Forget-MI (and every other method) runs under ZeRO-2 in the launch matrix
# (test_launch_matrix.py); SCRUB is run here longer, for its two phases across ranks.
@pytest.mark.parametrize("method", ["scrub"])
def test_zero2_unlearning_with_a_frozen_teacher(demo_data, runs, zero2_run, method):
    out = runs / f"unlearn-{method}"
    launch("zero2", demo_data, out, f"--original={zero2_run / 'model'}", f"--method={method}",
           "--epochs=3", "--scrub.max_epochs=1", script="launch/unlearn.py")
    info = assert_two_ranks_finished(out, "DEEPSPEED", 2)
    assert info["ranks_agree"] is True
    assert len(zero_shards(out, "optim")) == 2
    before, after = weights(zero2_run), weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    records = train_records(out)
    if method == "forgetmi":
        assert info["rows"]["noisy_forget"] == info["rows"]["forget"]
        assert all(r["train/uu"] > 0 and r["train/ur"] >= 0 for r in records)
    else:
        # one pass of max-steps over the forget rows (22 rows, 2 × 4 per step), then min-steps
        phases = ["max" if "train/forget_kl" in r else "min" for r in records]
        assert phases == ["max"] * 3 + ["min"] * (UPDATES - 3), phases
    assert_model_loads(out)


def test_ddp_resume_in_the_first_epoch_keeps_each_ranks_loss_sums(demo_data, runs):
    """Forget-MI's retention caps come from the first epoch's mean losses over both ranks; a
    crash inside that epoch must not hand rank 0's partial sums to rank 1 on resume."""
    from forgetmi.jobs.train import main as train_main
    original = runs / "cap-original"
    assert train_main([f"--data.root={demo_data.root}", f"--output_dir={original}", *ARGS,
                       "--max_steps=1"]) == 0
    # 22 forget rows, 2 × 4 a step: 3 updates an epoch; checkpoint at 1, crash after 2
    args = [f"--original={original / 'model'}", "--method=forgetmi", "--epochs=2",
            "--max_steps=0", "--checkpoint_every=1", "--retention_cap=0.05"]
    launch("ddp", demo_data, runs / "cap-straight", *args, script="launch/unlearn.py")
    out = runs / "cap-resumed"
    launch("ddp", demo_data, out, *args, "--stop_after=2", expect_rc=None,
           script="launch/unlearn.py")
    state = json.loads((out / "checkpoints/latest/trainer_state.json").read_text())
    assert (state["epoch"], state["step"]) == (0, 1)
    launch("ddp", demo_data, out, *args, script="launch/unlearn.py")

    def caps(run: Path) -> dict:
        return json.loads((run / "checkpoints/latest/trainer_state.json")
                          .read_text())["objective"]["caps"]

    straight, resumed = caps(runs / "cap-straight"), caps(out)
    assert resumed == pytest.approx(straight, rel=1e-6, abs=0), (straight, resumed)
