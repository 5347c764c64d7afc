import os
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._quadra import (
    ArgumentError as ArgumentError,
    Error as Error,
    FormatError as FormatError,
    IoError as IoError,
    Model as Model,
    Session as Session,
    ShapeError as ShapeError,
    __version__ as __version__,
    presets as presets,
)

Size = Union[int, Tuple[int, int]]
PathLike = Union[str, os.PathLike[str]]
Config = Union[str, os.PathLike[str], Mapping[str, Any]]

IMAGENET_MEAN: Tuple[float, float, float]
IMAGENET_STD: Tuple[float, float, float]

def convert(
    weights: Union[PathLike, Mapping[str, Any]],
    config: Config,
    dtype: str = "f32",
    *,
    min_cosine: Optional[float] = None,
    check_input: Optional[npt.ArrayLike] = None,
    input_size: Size = 224,
    meta: Optional[Mapping[str, Any]] = None,
    precision: Optional[str] = None,
) -> Model: ...
def load(model: Union[PathLike, bytes, bytearray, memoryview]) -> Model: ...
def preprocess(
    image: Union[PathLike, bytes, npt.NDArray[np.uint8]],
    size: Size = 224,
    *,
    resize: Optional[int] = None,
    mean: Sequence[float] = ...,
    std: Sequence[float] = ...,
) -> npt.NDArray[np.float32]: ...
def benchmark(
    model: Union[Model, Config],
    *,
    threads: int = 1,
    iters: int = 20,
    warmup: int = 3,
    input_size: Size = 224,
) -> dict[str, Any]: ...
def latency_table(
    model_or_config: Union[Model, Config],
    *,
    input_size: Size = 224,
    threads: int = 1,
    iters: int = 20,
    warmup: int = 3,
    candidates: bool = True,
) -> dict[str, dict[str, Any]]: ...
