"""Read an offline W&B run file (``run-*.wandb``) back into its protobuf records.

The file is a LevelDB-style log: a 7-byte header (b":W&B", magic 0xBEE1 little-endian, version 0), then 32 KiB
blocks of chunks, each with a 7-byte header (CRC-32C: 4 bytes, length: 2, type: 1 — FULL 1, FIRST 2, MIDDLE 3,
LAST 4); a block tail shorter than a header is padding. Each reassembled record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32768
HEADER = b":W&B\xe1\xbe\x00"


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    raw = Path(path).read_bytes()
    assert raw[:7] == HEADER, f"{path} is not a W&B run file (header {raw[:7]!r})"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        chunk, pos = raw[pos : pos + length], pos + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
            pending = b""
    out = []
    for data in records:
        rec = pb.Record()
        rec.ParseFromString(data)
        out.append(rec)
    return out


def history_and_summary(path: Path) -> tuple[list[dict[str, str]], dict[str, str], int | None]:
    """(history rows, last summary value of each key, exit code) of an offline run file."""
    history, summary, exit_code = [], {}, None
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): item.value_json for item in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                summary[item.key or "/".join(item.nested_key)] = item.value_json
        elif kind == "exit":
            exit_code = rec.exit.exit_code
    return history, summary, exit_code


def run_identity(path: Path) -> tuple[str, str]:
    """(run id, group) recorded in an offline run file."""
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "run":
            return rec.run.run_id, rec.run.run_group
    raise AssertionError(f"{path} holds no run record")
