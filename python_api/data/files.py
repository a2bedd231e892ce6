"""Locating dataset files under a user's `--data-dir`; nothing is ever downloaded."""

from collections.abc import Sequence
from pathlib import Path

__all__ = ["MissingDataError", "find_dataset_dir"]


class MissingDataError(FileNotFoundError):
    """A dataset's files are not where the reader looks; the message names every expected file."""


def find_dataset_dir(
    data_dir: str | Path | None, folder: str, required: Sequence[str], dataset: str, source: str
) -> Path:
    """The directory holding `required` (paths relative to it): `data_dir/folder` or `data_dir` itself.

    Raises MissingDataError naming the expected files and where they come from when
    neither place has all of them.
    """
    expected = "\n".join(f"  {folder}/{name}" for name in required)
    if data_dir is None:
        raise MissingDataError(
            f"{dataset} needs a data directory (--data-dir / data_dir=) containing\n{expected}\n"
            f"(from {source}); robustkernels never downloads data"
        )
    root = Path(data_dir).expanduser()
    for candidate in (root / folder, root):
        if all((candidate / name).exists() for name in required):
            return candidate
    raise MissingDataError(
        f"{dataset} files not found under {str(root)!r}: expected\n{expected}\n"
        f"(from {source}; the folder {folder!r} may also be --data-dir itself); "
        "robustkernels never downloads data"
    )
