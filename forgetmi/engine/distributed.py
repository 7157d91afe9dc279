"""Accelerate/DeepSpeed setup shared by every entry point, and a clean distributed exit."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, GradScalerKwargs, InitProcessGroupKwargs

from forgetmi.errors import ForgetMIError

logger = logging.getLogger("forgetmi.engine")


# fp16's loss scale for short runs (Accelerate's GradScaler; configs/deepspeed/*.json say the
# same to DeepSpeed): start at 2^8, the largest this model's gradients allow at 256 px (2^12 at
# 2048², measured), not 2^16, which skipped 10 of a run's first 12 updates; and grow back after
# 100 clean steps, not 1000 (2000 in torch), which a short unlearning never reaches.
FP16_SCALER = {"init_scale": 2.0 ** 8, "growth_interval": 100}


def build_accelerator(precision: str | None = None, grad_accum: int = 1) -> Accelerator:
    """An Accelerator for this process, from ``accelerate launch``'s environment.

    ``precision`` None keeps the launcher's choice ("no" when run directly). On machines
    without CUDA the process group uses gloo: DeepSpeed would otherwise ask for NCCL and then
    trip over its batch-size assertion about the world size.
    """
    _refuse_fp16_without_gpu(precision)
    asked_for_deepspeed = _deepspeed_requested()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = ([InitProcessGroupKwargs(backend="gloo")]
                if distributed and not torch.cuda.is_available() else [])
    handlers.append(GradScalerKwargs(**FP16_SCALER))
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=grad_accum,
                              kwargs_handlers=handlers)
    if asked_for_deepspeed and not is_deepspeed(accelerator):
        raise ForgetMIError(f"DeepSpeed was asked for but Accelerate started "
                            f"{accelerator.distributed_type.value} without it: check the launch "
                            "environment (ACCELERATE_USE_CPU, --cpu) against the Accelerate config")
    _bf16_as_autocast(accelerator)
    return accelerator


def _deepspeed_requested() -> bool:
    """Whether the launcher asked for DeepSpeed; makes its JSON path absolute, or refuses.

    Checked before the Accelerator exists: Accelerate would quietly give a run that asked for
    DeepSpeed plain DDP when ``ACCELERATE_USE_CPU=1`` (the DDP-on-CPU switch) is set too, and
    the run's timing would then say ZeRO stage 0. ``accelerate launch`` hands the JSON path on
    as the config wrote it (the shipped configs: relative to the repository), so it is resolved
    here, where the command was typed or else in the shipped files; a missing one fails in one
    line naming it, not in a traceback per rank.
    """
    from accelerate.utils import parse_flag_from_env

    if not parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        return False
    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        raise ForgetMIError("DeepSpeed was asked for (a DEEPSPEED Accelerate config), but "
                            "ACCELERATE_USE_CPU=1 makes Accelerate run plain DDP instead: unset "
                            "ACCELERATE_USE_CPU and keep DS_ACCELERATOR=cpu to run DeepSpeed on "
                            "the CPU, or launch with configs/accelerate/ddp.yaml for DDP")
    json_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if json_file and json_file.lower() != "none":
        from forgetmi.shipped import resolve

        os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = str(
            resolve(json_file, "DeepSpeed config (the Accelerate config's deepspeed_config_file)"))
    return True


def _refuse_fp16_without_gpu(precision: str | None) -> None:
    """fp16 is a GPU mode here: on a CPU, Accelerate would quietly train in fp32 under DDP or
    one process, and DeepSpeed's fp16 meets fp32 BatchNorm statistics that CPU kernels refuse.

    Checked before the Accelerator exists (its state cannot be re-created in one process).
    """
    chosen = precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if chosen == "fp16" and not torch.cuda.is_available():
        raise ForgetMIError("train.precision: fp16 needs a GPU (on a CPU it would silently run "
                            "in fp32, or fail inside DeepSpeed); use bf16 or no on a CPU")


def _bf16_as_autocast(accelerator: Accelerator) -> None:
    """Under DeepSpeed, run bf16 as torch autocast over fp32 weights, as Accelerate does under DDP.

    DeepSpeed's own bf16 mode casts the weights but not the inputs (float images then meet bf16
    convolutions), and Accelerate does not autocast under DeepSpeed. Done before any model is
    built: under ZeRO-3, transformers builds pretrained BERTs inside ``zero.Init`` with the
    dtype of its copy of this config (refreshed here), and bf16 BERT weights beside fp32 image
    weights break ZeRO-3's flat buffers.

    fp16 (GPU only) keeps DeepSpeed's own mode, half weights and its dynamic loss scaler; the
    model casts its images to its weights' dtype. Its torch-autocast fp16 path is not used: it
    skips an overflowing update without lowering the GradScaler's scale (DeepSpeed 0.19), so
    every later update overflows and is skipped too (measured on CPU: 12 of 12).
    """
    config = deepspeed_config(accelerator)
    if config and config.get("bf16", {}).get("enabled") is True:
        config["bf16"]["enabled"] = False
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
        accelerator.state.deepspeed_plugin.set_deepspeed_weakref()


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def deepspeed_config(accelerator: Accelerator) -> dict | None:
    return accelerator.state.deepspeed_plugin.deepspeed_config if is_deepspeed(accelerator) else None


def zero_stage(accelerator: Accelerator) -> int:
    config = deepspeed_config(accelerator)
    return int(config.get("zero_optimization", {}).get("stage", 0)) if config else 0


def offloads_optimizer(accelerator: Accelerator) -> bool:
    config = deepspeed_config(accelerator)
    if not config:
        return False
    device = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in (None, "none")


def place_buffers(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Under ZeRO-3, put the model's buffers (BatchNorm running statistics) on this process's
    device before DeepSpeed takes the model.

    transformers builds the pretrained BERT inside ``zero.Init``; DeepSpeed then leaves device
    placement to it and moves nothing else, so the image encoder, built outside it, kept its
    buffers on the CPU (its parameters move when they are partitioned) and BatchNorm failed at
    the first forward on a GPU. Buffers are never partitioned: moving them is safe.
    """
    if zero_stage(accelerator) != 3:
        return
    device = accelerator.device
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def broadcast_buffers(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP does this at the start of each forward; DeepSpeed never does, so without it each rank
    would validate with its own statistics and only rank 0's would be saved.
    """
    if accelerator.num_processes > 1:
        for buffer in accelerator.unwrap_model(model).buffers():
            torch.distributed.broadcast(buffer.data, src=0)


def fill_deepspeed_config(accelerator: Accelerator, batch_size: int, grad_accum: int,
                          max_grad_norm: float | None) -> None:
    """Resolve the ``"auto"`` values Accelerate cannot infer without a prepared dataloader.

    Batches come from the engine's own sharded plans, not from a prepared DataLoader, so the
    micro-batch size, accumulation and clipping are written into the DeepSpeed config here.
    """
    config = deepspeed_config(accelerator)
    if config is None:
        return
    config["train_micro_batch_size_per_gpu"] = batch_size
    config["gradient_accumulation_steps"] = grad_accum
    config["train_batch_size"] = batch_size * grad_accum * accelerator.num_processes
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = float(max_grad_norm or 0.0)


def autocast(accelerator: Accelerator):
    """The mixed-precision context of a step: Accelerate's, or under DeepSpeed's torch_autocast
    the same autocast around the loss too, so that it is computed as under DDP (the engine's
    forward alone would hand back bf16 outputs to a bf16 loss)."""
    config = deepspeed_config(accelerator) or {}
    if config.get("torch_autocast", {}).get("enabled"):
        dtype = getattr(torch, config["torch_autocast"].get("dtype", "bfloat16"))
        return torch.autocast(device_type=accelerator.device.type, dtype=dtype)
    return accelerator.autocast()


def finish(accelerator: Accelerator | None = None, exit_code: int = 0,
           then: Callable[[], int] | None = None) -> int:
    """End a distributed worker without gloo's occasional SIGABRT at interpreter exit; returns
    the exit code (a multi-process worker leaves instead).

    Destroying the process group, flushing, and leaving with ``os._exit`` skips the teardown
    race that otherwise fails ~1 run in 5-10 after training has finished. ``then`` runs on the
    main process once the group is gone (the other workers have left): its code is the exit
    code, so work after training (a run scoring itself) never holds a collective open.
    """
    if accelerator is not None:
        accelerator.wait_for_everyone()
        accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if then is not None and int(os.environ.get("RANK", "0")) == 0:
        exit_code = then()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    return exit_code
