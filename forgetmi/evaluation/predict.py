"""Distributed inference: every rank scores its shard, results are gathered in dataset order."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from forgetmi.data.dataset import trim_padding
from forgetmi.utils.progress import progress


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in trim_padding(batch).items()}


@torch.no_grad()
def predict(accelerator, model, dataset: Dataset, batch_size: int = 32,
            num_workers: int = 0) -> dict[str, np.ndarray]:
    """Logits of each head, labels and split row indices for every item of ``dataset``.

    Collective under DDP/DeepSpeed: all ranks call it (ZeRO-3 needs every rank in each
    forward). Each rank takes items rank, rank+W, ...; the shard lengths are equalised by
    repeating items, and repeats are removed after the gather.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    n = len(dataset)
    per_rank = -(-n // world)
    mine = [(rank + world * i) % n for i in range(per_rank)]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=mine, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))  # leave the global RNG alone
    was_training = model.training
    model.eval()
    chunks: dict[str, list] = {}
    for batch in progress(loader, desc="predict", leave=False):
        batch = _to_device(batch, accelerator.device)
        with accelerator.autocast():
            out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        rows = {"index": torch.as_tensor(batch["index"], device=accelerator.device),
                "label": batch["label"]}
        for head in ("image", "text", "joint"):
            rows[f"{head}_logits"] = out[f"{head}_logits"].float()
        for key, value in accelerator.gather(rows).items():
            chunks.setdefault(key, []).append(value.cpu())
    model.train(was_training)
    merged = {k: torch.cat(v).numpy() for k, v in chunks.items()}
    # gather interleaves ranks per batch; restore dataset order and drop the repeats
    _, first = np.unique(merged["index"], return_index=True)
    order = first[np.argsort(merged["index"][first])]
    return {k: v[order] for k, v in merged.items()}
