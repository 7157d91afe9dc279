"""Distributed inference: every rank scores its shard, results are gathered in dataset order."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from forgetmi.data.batches import batch_loader, to_device
from forgetmi.utils.progress import progress


@torch.no_grad()
def predict(accelerator, model, dataset: Dataset, batch_size: int = 32,
            num_workers: int = 0, embeddings: bool = False) -> dict[str, np.ndarray]:
    """Logits of each head, labels and split row indices for every item of ``dataset`` (and the
    image and text embeddings with ``embeddings=True``, for the image-text similarity signal).

    Collective under DDP/DeepSpeed: all ranks call it (ZeRO-3 needs every rank in each
    forward). Each rank takes items rank, rank+W, ...; the shard lengths are equalised by
    repeating items, and repeats are removed after the gather.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    n = len(dataset)
    per_rank = -(-n // world)
    mine = [(rank + world * i) % n for i in range(per_rank)]
    if hasattr(dataset, "token_lengths"):
        # Reports of like length batched together: each batch is cut to its longest report, so
        # far less padding is encoded (the order is restored below).
        lengths = dataset.token_lengths()
        mine.sort(key=lambda i: lengths[i])
    loader = batch_loader(dataset, [mine[i:i + batch_size] for i in range(0, per_rank, batch_size)],
                          num_workers)
    was_training = model.training
    model.eval()
    chunks: dict[str, list] = {}
    for batch in progress(loader, desc="predict", leave=False, total=len(loader)):
        batch = to_device(batch, accelerator.device)
        with accelerator.autocast():
            out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        rows = {"index": torch.as_tensor(batch["index"], device=accelerator.device),
                "label": batch["label"]}
        for head in ("image", "text", "joint"):
            rows[f"{head}_logits"] = out[f"{head}_logits"].float()
        if embeddings:
            rows["image_embedding"] = out.image_embedding.float()
            rows["text_embedding"] = out.text_embedding.float()
        for key, value in accelerator.gather(rows).items():
            chunks.setdefault(key, []).append(value.cpu())
    model.train(was_training)
    merged = {k: torch.cat(v).numpy() for k, v in chunks.items()}
    # gather interleaves ranks per batch; restore dataset order and drop the repeats
    _, first = np.unique(merged["index"], return_index=True)
    order = first[np.argsort(merged["index"][first])]
    return {k: v[order] for k, v in merged.items()}
