"""Type stubs of the Rust extension (quadra._quadra); the public names are re-exported
by the quadra package."""

import os
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

Size = Union[int, Tuple[int, int]]

__version__: str
presets: list[str]

class Error(Exception):
    """Every error quadra raises is a subclass of this."""

class FormatError(Error):
    """Weights, a config, a model file or an image that cannot be read or do not fit."""

class ShapeError(Error):
    """An input array whose shape, channels or size does not fit the model or session."""

class ArgumentError(Error):
    """An argument quadra cannot use."""

class IoError(Error):
    """A file that could not be read or written."""

class Session:
    """One input size and batch; buffers allocated once; threads of its own."""

    def run(
        self,
        x: npt.ArrayLike,
        *,
        out: Optional[npt.NDArray[np.float32]] = None,
        layout: str = "nchw",
    ) -> npt.NDArray[np.float32]: ...
    def describe(self) -> str: ...
    @property
    def input_size(self) -> Tuple[int, int]: ...
    @property
    def batch(self) -> int: ...
    @property
    def threads(self) -> int: ...

class Model:
    """A QuadraNet model, converted in memory or loaded from a .qnet file."""

    def run(
        self, x: npt.ArrayLike, *, threads: Optional[int] = None, layout: str = "nchw"
    ) -> npt.NDArray[np.float32]: ...
    def session(
        self, h: int, w: int, *, batch: int = 1, threads: Optional[int] = None
    ) -> Session: ...
    def save(self, path: Union[str, os.PathLike[str]]) -> None: ...
    def to_bytes(self) -> bytes: ...
    def emit_rust(
        self, dir: Union[str, os.PathLike[str]], *, input_size: Optional[Size] = None
    ) -> None: ...
    @property
    def architecture(self) -> dict[str, Any]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def parameters(self) -> int: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def report(self) -> Optional[dict[str, Any]]: ...
    def flops(self, input_size: Optional[Size] = None) -> int: ...
    def arena_bytes(self, input_size: Optional[Size] = None, *, threads: int = 1) -> int: ...
    def describe(self, *, threads: Optional[int] = None) -> str: ...
