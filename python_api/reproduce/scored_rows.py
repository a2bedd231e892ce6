"""Evaluation rows kept as they finish, so a stopped `reproduce` run picks up at the first row it
has not scored (a `small` budget's evaluation takes hours on a CPU, longer than one sitting).

A row is reused only when everything it was computed from is the same: the call's settings (budget,
seed, dataset, ...), the row's own key (method, eps), the model's floating-point state, hashed
(so a retrained or changed model is scored afresh), and the source of the attack and evaluation
packages, hashed (so a row scored by an older, perhaps weaker, evaluation is scored again). Integer
state, such as a noise stream's position, is left out: evaluation seeds its own draws.
"""

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["ScoredRows", "evaluation_code_digest", "model_digest"]

_EVALUATION_PACKAGES = ("attacks", "evaluate")


@functools.cache
def evaluation_code_digest() -> str:
    """A hash of the attack and evaluation packages' source files, by path."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.blake2b(digest_size=16)
    for package in _EVALUATION_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def model_digest(model: torch.nn.Module) -> str:
    """A hash of the model's floating-point parameters and buffers, by name."""
    digest = hashlib.blake2b(digest_size=16)
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            digest.update(name.encode())
            digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ScoredRows:
    """Rows under `directory`, one JSON file per key, valid for one `settings` (a JSON-able dict)."""

    def __init__(self, directory: str | Path, settings: dict):
        self.directory = Path(directory)
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))

    def _path(self, key: str) -> Path:
        name = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        return self.directory / f"{name}.json"

    def get_or_score(self, key: str, model: torch.nn.Module, score: Callable[[], object]):
        """The stored result of `key` for this model and these settings, else score() (JSON-able),
        stored. Either way the result is what JSON gives back (tuples come back as lists)."""
        path = self._path(key)
        stamp = {"key": key, "settings": self.settings, "model": model_digest(model),
                 "evaluation_code": evaluation_code_digest()}  # fmt: skip
        stored = _read(path)
        if stored is not None and stored.get("stamp") == stamp:
            return stored["result"]
        result = score()
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"stamp": stamp, "result": result}))
        partial.replace(path)
        return json.loads(path.read_text())["result"]


def _read(path: Path) -> dict | None:
    """The stored row at `path`; None when there is none or it cannot be read (rescored then)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
