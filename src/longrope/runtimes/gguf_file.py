"""Rewrite a GGUF file with keys set or removed and global tensors added, using the `gguf` package.

GGUF has no in-place edit for new tensors, so the file is copied: every key (but the ones replaced
or removed), every tensor's info and data, then the new F32 tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LongRopeError


def _value_type(value: Any):
    from gguf import GGUFValueType
    if isinstance(value, bool):
        return GGUFValueType.BOOL
    if isinstance(value, (int, np.integer)):
        return GGUFValueType.UINT32
    if isinstance(value, (float, np.floating)):
        return GGUFValueType.FLOAT32
    if isinstance(value, str):
        return GGUFValueType.STRING
    raise LongRopeError(f"cannot write a GGUF key of type {type(value).__name__}")


def architecture(path: str | Path) -> str:
    from gguf import GGUFReader
    field = GGUFReader(path).fields.get("general.architecture")
    if field is None:
        raise LongRopeError(f"{path} has no general.architecture key")
    return field.contents()


def rewrite(src: str | Path, dst: str | Path, *, keys: dict[str, Any], tensors: dict[str, np.ndarray],
            remove: tuple[str, ...] = ()) -> None:
    """Copy GGUF `src` to `dst` with `keys` set (full names), `remove` keys dropped and `tensors`
    (global F32 arrays) added or replaced."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    pending = dict(keys)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.") or field.name in remove:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = pending.pop(field.name, field.contents())
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for name, value in pending.items():
        writer.add_key_value(name, value, _value_type(value))
    kept = [t for t in reader.tensors if t.name not in tensors]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    extra = {name: np.ascontiguousarray(arr, dtype=np.float32) for name, arr in tensors.items()}
    for name, arr in extra.items():
        writer.add_tensor_info(name, arr.shape, arr.dtype, arr.nbytes, gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in kept:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    for arr in extra.values():
        writer.write_tensor_data(arr)
    writer.close()
