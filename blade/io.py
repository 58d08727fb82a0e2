"""Atomic file writes: write to a temporary file in the target folder, then rename it over the target,
so an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    # os.umask can only be read by setting it, so set it back at once.
    current = os.umask(0)
    os.umask(current)
    return current


def apply_default_permissions(path: str | os.PathLike) -> None:
    """Give `path`, and everything beneath it if it is a folder, the modes `open` or `mkdir` would give.

    Files get 0666 minus the umask and folders 0777 minus the umask. safetensors writes its files as
    0600 and `tempfile.mkdtemp` creates 0700 folders, which other users of a shared folder cannot read.
    """
    path = Path(path)
    umask = _umask()
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    for entry in entries:
        os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~umask)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *, suffix: str = ".tmp") -> Path:
    """Create `path` atomically: `write(temporary_path)` fills a temporary file, which then replaces it.

    The temporary file sits in the target's folder, so the rename stays on one file system. It keeps
    `suffix` for writers that choose a format from the extension. It is flushed to disk before the
    rename and gets the permissions a plain `open(path, "w")` would give (0666 minus the umask)
    rather than mkstemp's private 0600. It is removed if `write` raises.

    Args:
        path: the file to create or replace; parent folders are created.
        write: a function that writes the whole file to the path it is given.
        suffix: ending of the temporary file's name.

    Returns:
        the target path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        write(temporary)
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        apply_default_permissions(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically, creating parent folders; return the path."""
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data) -> Path:
    """Write `data` as indented JSON to `path` atomically; return the path."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Save a dict of tensors with safetensors, atomically; return the path."""
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    return atomic_write(path, lambda temporary: save_file(contiguous, str(temporary), metadata=metadata))


def read_settings_file(path: str | os.PathLike, *, missing_hint: str) -> dict:
    """Read a YAML (.yaml, .yml) or JSON (.json) file that contains a mapping of settings.

    Args:
        path: the file.
        missing_hint: the message of the FileNotFoundError raised when the file does not exist.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: another suffix, or the file does not contain a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_hint)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config file must end in .yaml, .yml or .json, got {path.name!r}")
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping of settings, got {type(data).__name__}")
    return data
