"""Exceptions raised by entangle.

Every error a user can trigger with bad input is an :class:`EntangleError`, which is also a
:class:`ValueError` so that generic ``except ValueError`` handlers keep working.
"""

from __future__ import annotations

__all__ = ["EntangleError", "DataError", "ShapeError", "ModelFileError", "ConfigError",
           "check_keys"]


class EntangleError(ValueError):
    """Base class of all errors raised by entangle for bad input."""


class DataError(EntangleError):
    """Malformed or physically invalid input data.

    The message names the file, the structure index and the field at fault, e.g.
    ``"train.xyz: structure 12: positions: atoms 3 and 7 are 0.02 Å apart (< 0.1 Å)"``.
    """

    def __init__(self, message: str, *, source: str | None = None, index: int | None = None,
                 field: str | None = None):
        parts = [p for p in (source, None if index is None else f"structure {index}", field) if p]
        super().__init__(": ".join(parts + [message]))
        self.source, self.index, self.field = source, index, field


class ShapeError(EntangleError):
    """A tensor or array has the wrong shape, or sizes cannot be matched."""


class ModelFileError(EntangleError):
    """A model file is missing, tampered with, or written by a newer entangle."""


class ConfigError(EntangleError):
    """An invalid configuration value (unknown name, out-of-range hyperparameter)."""


def check_keys(section: object, allowed: set[str], where: str) -> None:
    """Raise :class:`ConfigError` unless ``section`` is a mapping with keys from ``allowed``
    (config typos are caught before any data is loaded)."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(section).__name__}")
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
