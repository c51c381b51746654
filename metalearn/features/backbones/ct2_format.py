"""Reader for CTranslate2's ``model.bin``, and the SHA-256 pinning of weight files.

The layout (``ctranslate2/specs/model_spec.py:_serialize``, ``src/models/model.cc``), little-endian:

    uint32 binary_version
    [version >= 2] string spec_name, uint32 spec_revision
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank],
        [version >= 4] uint8 dtype_id, uint32 n_bytes   (ids: DTYPES below)
        [version <  4] uint8 item_size, uint32 n_items   (4 float32, 2 int16, 1 int8)
        n_bytes of row-major data
    [version >= 3] uint32 n_aliases, then per alias: string alias, string target

where ``string`` is a uint16 length (counting a trailing NUL) followed by the UTF-8 bytes and the NUL.
Quantised weights (``int8``/``int16``) come with a sibling ``<name>_scale``: ``float = int / scale``
(one scale per output row for int8, one for the whole tensor for int16); :func:`dequantize` undoes it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import sha256_file

SUPPORTED_VERSIONS = range(1, 7)
# Order of the DataType enum in include/ctranslate2/types.h; bfloat16 is widened to float32.
DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_LEGACY_ITEM_SIZES = {4: "float32", 2: "int16", 1: "int8"}


class _Cursor:
    """Sequential little-endian reads over a read-only memory map, with clear truncation errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > self.buf.shape[0]:
            raise MetalearnError(f"{self.path}: truncated CTranslate2 file (needed {n} bytes at offset "
                                 f"{self.pos}, size {self.buf.shape[0]})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)).tobytes())

    def string(self) -> str:
        (n,) = self.unpack("H")
        return self.take(n).tobytes().rstrip(b"\0").decode("utf-8")


def _array(raw: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """View ``raw`` bytes as ``dtype`` [shape]; a zero-copy view except for bfloat16 (widened)."""
    if dtype == "bfloat16":
        wide = raw.view(np.uint16).astype(np.uint32) << 16
        return wide.view(np.float32).reshape(shape)
    return raw.view(np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_ct2(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Parse a CTranslate2 ``model.bin``.

    Returns:
        (variables: name -> array (read-only views of a memory map; aliases map to their target's
        array), header: {"binary_version", "spec", "revision", "aliases": {alias: target}})
    """
    path = Path(path)
    cur = _Cursor(path)
    (version,) = cur.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise MetalearnError(f"{path}: CTranslate2 binary version {version} is not supported "
                             f"(known: {SUPPORTED_VERSIONS.start}..{SUPPORTED_VERSIONS.stop - 1})")
    spec, revision = (cur.string(), cur.unpack("I")[0]) if version >= 2 else ("", 1)
    variables: dict[str, np.ndarray] = {}
    for _ in range(cur.unpack("I")[0]):
        name = cur.string()
        (rank,) = cur.unpack("B")
        shape = cur.unpack(f"{rank}I") if rank else ()
        if version >= 4:
            type_id, n_bytes = cur.unpack("BI")
            if type_id >= len(DTYPES):
                raise MetalearnError(f"{path}: variable {name} has unknown dtype id {type_id}")
            dtype = DTYPES[type_id]
        else:
            item_size, n_items = cur.unpack("BI")
            if item_size not in _LEGACY_ITEM_SIZES:
                raise MetalearnError(f"{path}: variable {name} has unknown item size {item_size}")
            dtype, n_bytes = _LEGACY_ITEM_SIZES[item_size], n_items * item_size
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype.replace("bfloat", "float")).itemsize
        if n_bytes != expected:
            raise MetalearnError(f"{path}: variable {name} {dtype}{list(shape)} declares {n_bytes} bytes, "
                                 f"expected {expected}")
        variables[name] = _array(cur.take(n_bytes), dtype, shape)
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(cur.unpack("I")[0]):
            alias = cur.string()
            aliases[alias] = cur.string()
    for alias, target in aliases.items():
        if target not in variables:
            raise MetalearnError(f"{path}: alias {alias} points to a missing variable {target}")
        variables[alias] = variables[target]
    if cur.pos != cur.buf.shape[0]:
        raise MetalearnError(f"{path}: {cur.buf.shape[0] - cur.pos} unexpected bytes after the aliases")
    return variables, {"binary_version": version, "spec": spec, "revision": revision, "aliases": aliases}


def dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float versions of int8/int16 weights that carry a ``<name>_scale``; the scales are dropped.

    int8: ``w [rows, ...] = q / scale[rows]``; int16: ``w = q / scale`` (a scalar).
    """
    out: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        if name.endswith("_scale") and name[: -len("_scale")] in variables:
            continue
        if name.endswith("_zero") and name[: -len("_zero")] in variables:
            raise MetalearnError(f"{name}: zero-point (AWQ-style) quantisation is not supported")
        scale = variables.get(name + "_scale")
        if scale is not None and value.dtype in (np.int8, np.int16):
            scale = np.asarray(scale, dtype=np.float32)
            scale = scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
            value = value.astype(np.float32) / scale
        out[name] = value
    return out


def check_sha256(path: str | os.PathLike, expected: str | None, actual: str | None = None,
                 label: str | None = None) -> str:
    """The SHA-256 of ``path`` (``actual`` when already known); refused unless it is ``expected``.

    ``label`` names the file in the error instead of ``path`` (e.g. the parts it was joined from).
    """
    actual = actual or sha256_file(path)
    if expected is not None and actual.lower() != expected.lower():
        raise MetalearnError(f"{label or path}: SHA-256 mismatch, expected {expected.lower()}, got {actual}")
    return actual
