"""What wandb wrote offline, read back from its files: the run records of ``RUN/wandb/``.

wandb 0.31 has no reader of its own for the ``.wandb`` file (its ``datastore`` module is gone),
and writes neither ``wandb-metadata.json`` nor ``config.yaml`` offline. The file is a LevelDB-style
log after a 7-byte header: 32 KiB blocks of records (CRC, length, type), each a protobuf
``Record``, split across blocks by FIRST/MIDDLE/LAST pieces.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7                        # CRC32 (4), length (2), type (1); and the file's own header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    folder: Path                  # RUN/wandb/offline-run-<time>-<id>
    id: str
    name: str
    group: str
    job_type: str
    project: str


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb run file"
    pos, pieces = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:        # a block's tail too short for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:
            break
        piece = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        pieces = piece if kind in (FULL, FIRST) else pieces + piece
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pieces)
            yield record


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """Every offline wandb run started in ``run_dir`` (one per start: a resumed run adds one),
    oldest first."""
    runs = []
    for folder in sorted(Path(run_dir).glob("wandb/offline-run-*")):
        (file,) = folder.glob("run-*.wandb")
        run = next(r.run for r in records(file) if r.WhichOneof("record_type") == "run")
        runs.append(OfflineRun(folder, run.run_id, run.display_name, run.run_group, run.job_type,
                               run.project))
    return runs


def summary(folder: Path) -> dict:
    """The summary one offline run start wrote (``RUN/wandb/offline-run-*``), its updates in
    order: key -> value."""
    import json
    (file,) = Path(folder).glob("run-*.wandb")
    out = {}
    for record in records(file):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                out[key] = json.loads(item.value_json)
    return out
