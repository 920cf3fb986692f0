"""entangle: machine learning on atoms and molecules with tensor networks."""

from entangle._version import __version__
from entangle.errors import ConfigError, DataError, EntangleError, ModelFileError, ShapeError

__all__ = ["__version__", "EntangleError", "DataError", "ShapeError", "ModelFileError", "ConfigError"]
