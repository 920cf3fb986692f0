"""Model files: weights in safetensors, the model's config and provenance in JSON beside them.

``save(model, "run/model")`` writes ``run/model.safetensors`` and ``run/model.json``;
``load("run/model")`` (or ``load("run")``, meaning ``run/model``) rebuilds the module. Nothing is
ever unpickled: the JSON names a registered model class and holds its config, and the JSON
records the SHA-256 of the weights so a tampered or mismatched pair is refused.

A model is saveable when its class is decorated with :func:`register_model` and it has a
``config`` attribute (a dataclass, serialised by its ``to_dict()`` if it has one, else by
``dataclasses.asdict``) from which ``cls.from_config(config_dict)`` rebuilds it (or, without
``from_config``, ``cls(**config_dict)``). Parameters whose shapes changed after
construction (bond dimensions grown or truncated by sweeps) are resized on load.

All writes are atomic: a file is written under a temporary name in the same directory and
moved into place, so an interrupted save never leaves a half-written model behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from entangle._version import __version__
from entangle.errors import ModelFileError

__all__ = ["DTYPES", "save", "load", "register_model", "atomic_write_bytes", "atomic_write_text", "model_paths", "read_header",
           "FORMAT_VERSION"]

# the dtype names model configs store in their JSON
DTYPES = {"float64": torch.float64, "float32": torch.float32}
FORMAT = "entangle-model"
FORMAT_VERSION = 1
_REGISTRY: dict[str, type[torch.nn.Module]] = {}


def register_model(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """Class decorator: allow ``load`` to rebuild this model class by name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_NEW_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (read once: umask races)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory + rename).

    The file gets the permissions ``open`` would give it (those of the file it replaces, else
    0666 less the umask), not the owner-only 0600 of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, json)`` paths for a model stem, a directory (meaning ``DIR/model``) or either file."""
    path = Path(path)
    if path.is_dir():
        path = path / "model"
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _config_dict(model: torch.nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise ModelFileError(f"{type(model).__name__} has no dataclass `config`; it cannot be saved")
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def save(model: torch.nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Save ``model`` to ``PATH.safetensors`` + ``PATH.json``; returns both paths.

    ``metadata`` (JSON-serialisable) is stored alongside, e.g. training metrics or units.
    """
    name = type(model).__name__
    if _REGISTRY.get(name) is not type(model):
        raise ModelFileError(f"{name} is not registered with entangle.io.register_model")
    weights_path, json_path = model_paths(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    blob = safetensors_save(state)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "entangle_version": __version__,
        "model_class": name,
        "config": _config_dict(model),
        "weights_file": weights_path.name,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "metadata": metadata or {},
    }
    text = json.dumps(header, indent=2, sort_keys=True)  # fails early on non-serialisable metadata
    atomic_write_bytes(weights_path, blob)
    atomic_write_text(json_path, text)
    return weights_path, json_path


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the JSON half of a model file."""
    _, json_path = model_paths(path)
    try:
        header = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{json_path}: model file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{json_path}: not valid JSON ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{json_path}: not an entangle model file")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{json_path}: format version {version!r} is newer than this entangle "
                             f"({__version__}, format {FORMAT_VERSION}); upgrade entangle to read it")
    for key in ("model_class", "config", "weights_sha256"):
        if key not in header:
            raise ModelFileError(f"{json_path}: missing field {key!r}")
    return header


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a model saved by :func:`save`. Raises :class:`ModelFileError` for a missing,
    tampered (hash mismatch), unknown-class or newer-format file."""
    weights_path, json_path = model_paths(path)
    header = read_header(path)
    try:
        blob = weights_path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{weights_path}: weights file not found") from None
    if hashlib.sha256(blob).hexdigest() != header["weights_sha256"]:
        raise ModelFileError(f"{weights_path}: SHA-256 does not match {json_path.name}; "
                             "the weights were modified or belong to another model")
    cls = _REGISTRY.get(header["model_class"]) or _import_models().get(header["model_class"])
    if cls is None:
        raise ModelFileError(f"{json_path}: unknown model class {header['model_class']!r} "
                             f"(known: {', '.join(sorted(_REGISTRY)) or 'none'})")
    config = header["config"]
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)
    try:
        state = safetensors_load(blob)
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ModelFileError(f"{weights_path}: unreadable safetensors data ({err})") from None
    _resize_to(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFileError(f"{weights_path}: weights do not fit {cls.__name__}: {err}") from None
    model.metadata = header.get("metadata", {})
    return model.to(map_location)


def _import_models() -> dict[str, type[torch.nn.Module]]:
    """Import entangle's model modules so that their classes register themselves."""
    import importlib

    for name in ("tnn", "descriptor_tn", "baselines", "nnmpo", "etn"):
        try:
            importlib.import_module(f"entangle.models.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"entangle.models.{name}":
                raise
    return _REGISTRY


def _resize_to(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give parameters/buffers the stored shapes (bond dimensions may differ from the config's)."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, tensor in state.items():
        target = own.get(name)
        if target is not None and target.shape != tensor.shape:
            target.data = torch.empty(tensor.shape, dtype=target.dtype, device=target.device)
