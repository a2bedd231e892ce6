"""Evaluation rows kept as they finish, so a stopped `reproduce` run picks up at the first row it
has not scored (a `small` budget's evaluation takes hours on a CPU, longer than one sitting).

A row is reused only when everything it was computed from is the same: the call's settings (budget,
seed, dataset, ...), the row's own key (method, eps), the model's floating-point state, hashed
(so a retrained or changed model is scored afresh), and the source of the modules that score it
(the caller names them: the attacks and its evaluation), hashed, so a row scored by an older,
perhaps weaker, evaluation is scored again, and an edit elsewhere costs no rescoring. Integer
state, such as a noise stream's position, is left out: evaluation seeds its own draws.
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["ScoredRows", "evaluation_code_digest", "model_digest"]


def evaluation_code_digest(modules: Sequence[ModuleType]) -> str:
    """A hash of the modules' source files, by name (a package: every file under it)."""
    digest = hashlib.blake2b(digest_size=16)
    for module in sorted(modules, key=lambda m: m.__name__):
        source = Path(module.__file__)
        files = sorted(source.parent.rglob("*.py")) if source.name == "__init__.py" else [source]
        for path in files:
            digest.update(path.relative_to(source.parent).as_posix().encode())
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
    """Rows under `directory`, one JSON file per key, valid for one `settings` (a JSON-able dict)
    and the source of `scored_by`, the modules (or packages) that score them."""

    def __init__(self, directory: str | Path, settings: dict, scored_by: Sequence[ModuleType]):
        self.directory = Path(directory)
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.code = evaluation_code_digest(scored_by)

    def _path(self, key: str) -> Path:
        name = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        return self.directory / f"{name}.json"

    def get_or_score(self, key: str, model: torch.nn.Module, score: Callable[[], object]):
        """The stored result of `key` for this model and these settings, else score() (JSON-able),
        stored. Either way the result is what JSON gives back (tuples come back as lists)."""
        path = self._path(key)
        stamp = {"key": key, "settings": self.settings, "model": model_digest(model),
                 "evaluation_code": self.code}  # fmt: skip
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
