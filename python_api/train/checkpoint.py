"""Checkpoints: tensors as safetensors plus a JSON record, each written atomically.

A checkpoint in directory D is
    D/checkpoint-<step>.safetensors   model weights ("model.*") and optimizer state ("optimizer.*")
    D/checkpoint.json                 step, settings, model description, which weights file
Both are written to a temporary file, flushed to disk and renamed into place; the JSON
record is renamed last and is what makes a checkpoint current. A process killed at any
point therefore leaves either the previous checkpoint or the new one, never a mix:
the previous weights file is deleted only after the new record is in place.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..optional import require

__all__ = ["RECORD_NAME", "Checkpoint", "load_checkpoint", "save_checkpoint"]

RECORD_NAME = "checkpoint.json"
_FORMAT = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the JSON record and the tensors, split by owner."""

    record: dict
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict | None
    path: Path


def _write_atomically(path: Path, payload: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; checkpoints are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's state_dict as flat tensors plus JSON (tensor entries replaced by their key)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict] = {}
    for index, entries in state["state"].items():
        per_param[str(index)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                name = f"optimizer.{index}.{key}"
                tensors[name] = value.detach().cpu().contiguous()
                per_param[str(index)][key] = {"tensor": name}
            else:
                per_param[str(index)][key] = {"value": value}
    return tensors, {"state": per_param, "param_groups": state["param_groups"]}


def _optimizer_state(record: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {
        int(index): {
            key: tensors[entry["tensor"]] if "tensor" in entry else entry["value"]
            for key, entry in entries.items()
        }
        for index, entries in record["state"].items()
    }
    return {"state": state, "param_groups": record["param_groups"]}


def save_checkpoint(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, record: dict
) -> Path:
    """Writes model (and optimizer) state with the JSON-serialisable `record` (which must hold
    an int "step") into `directory` atomically; returns the record's path."""
    safetensors_torch = require("safetensors.torch", "writing checkpoints", "safetensors")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = int(record["step"])
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    full_record = {"format": _FORMAT, **record}
    if optimizer is not None:
        optimizer_tensors, full_record["optimizer"] = _optimizer_tensors(optimizer)
        tensors.update(optimizer_tensors)
    weights = f"checkpoint-{step:09d}.safetensors"
    full_record["weights"] = weights
    # clone: safetensors refuses tensors that share storage (e.g. tied weights).
    tensors = {k: v.clone() for k, v in tensors.items()}
    _write_atomically(directory / weights, safetensors_torch.save(tensors, metadata={"step": str(step)}))
    record_path = directory / RECORD_NAME
    _write_atomically(record_path, json.dumps(full_record, indent=1, sort_keys=True).encode())
    for stale in directory.glob("checkpoint-*.safetensors"):
        if stale.name != weights:
            stale.unlink(missing_ok=True)
    for leftover in directory.glob(".checkpoint*.tmp"):
        leftover.unlink(missing_ok=True)
    return record_path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint in directory `path` (or whose record is the file `path`), tensors on the CPU.

    Raises FileNotFoundError naming the missing file, ValueError for an unreadable record.
    """
    safetensors_torch = require("safetensors.torch", "reading checkpoints", "safetensors")
    path = Path(path)
    record_path = path / RECORD_NAME if path.is_dir() else path
    if not record_path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {str(path)!r}: expected a run directory holding {RECORD_NAME} "
            "(written by `robustkernels train --out DIR`) or the path of that file"
        )
    try:
        record = json.loads(record_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{record_path} is not a checkpoint record: {error}") from error
    if not isinstance(record, dict) or record.get("format") != _FORMAT or "weights" not in record:
        raise ValueError(f"{record_path} is not a robustkernels checkpoint record (format {_FORMAT})")
    weights_path = record_path.parent / record["weights"]
    if not weights_path.is_file():
        raise FileNotFoundError(f"{record_path} refers to {weights_path}, which does not exist")
    tensors = safetensors_torch.load_file(weights_path)
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_state = _optimizer_state(record["optimizer"], tensors) if "optimizer" in record else None
    return Checkpoint(
        record=record, model_state=model_state, optimizer_state=optimizer_state, path=record_path
    )
