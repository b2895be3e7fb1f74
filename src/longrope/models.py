"""Find and load a causal LM and its tokenizer: `builtin` (shipped with the package) or a local folder.

Nothing is ever fetched from a hub: a name that is not `builtin` must be an existing folder.
Weights load from safetensors only; `trust_remote_code` is off unless the caller asks for it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import LongRopeError

BUILTIN = "builtin"
BUILTIN_DIR = Path(__file__).parent / "assets" / "builtin"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def text_config(cfg):
    """The language-model part of a (possibly multimodal) config."""
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def rope_config(cfg) -> tuple[int, float | None, int]:
    """(rotary_dim, rope_theta or None, original window) read from a transformers config: the window
    is original_max_position_embeddings (top level or in the rope entry) else max_position_embeddings."""
    cfg = text_config(cfg)
    rope = getattr(cfg, "rope_parameters", None) or {}
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    base = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    original = (getattr(cfg, "original_max_position_embeddings", None)
                or rope.get("original_max_position_embeddings") or getattr(cfg, "max_position_embeddings", None))
    if not original:
        raise LongRopeError(f"{type(cfg).__name__} gives no max_position_embeddings")
    return int(head * rope.get("partial_rotary_factor", 1.0)), base, int(original)


def resolve(model: str | Path | None) -> Path:
    """The folder behind a model name: `builtin`/None -> the shipped model, else an existing path."""
    if model is None or str(model) == BUILTIN:
        if not (BUILTIN_DIR / "config.json").is_file():
            raise LongRopeError(f"the built-in model is missing from this installation ({BUILTIN_DIR}); "
                                "pass --model PATH or reinstall longrope")
        return BUILTIN_DIR
    path = Path(model).expanduser()
    if not path.exists():
        raise LongRopeError(f"model folder not found: {path} (models are loaded from local folders only)")
    if not (path / "config.json").is_file():
        raise LongRopeError(f"not a model folder (no config.json): {path}")
    return path


def check_device(name: str | torch.device) -> torch.device:
    """The torch device `name`, checked to exist on this machine (one line otherwise)."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise LongRopeError(f"unknown device {str(name)!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LongRopeError(f"device {str(name)!r}: no CUDA GPU is usable here (this torch build "
                                f"{torch.__version__} sees none); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LongRopeError(f"device {str(name)!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise LongRopeError(f"device {str(name)!r}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise LongRopeError(f"device {str(name)!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def torch_dtype(name: str | torch.dtype) -> torch.dtype | str:
    if isinstance(name, torch.dtype) or name == "auto":
        return name
    try:
        return _DTYPES[name]
    except KeyError:
        raise LongRopeError(f"unknown dtype {name!r}; choose one of {', '.join(_DTYPES)}") from None


def load_model(model: str | Path | None = BUILTIN, *, dtype: str | torch.dtype = "float32",
               device: str | torch.device = "cpu", trust_remote_code: bool = False,
               attn_implementation: str = "sdpa"):
    """Load a causal LM from a local folder in eval mode (safetensors only, no downloads)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    path = resolve(model)
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError) as e:
        raise LongRopeError(f"cannot load model from {path}: {str(e).splitlines()[0]}") from None
    except SafetensorError as e:  # a truncated or corrupt weights file
        files = ", ".join(p.name for p in sorted(path.glob("*.safetensors"))) or "its safetensors files"
        raise LongRopeError(f"cannot read the weights of {path} ({files}): {str(e).splitlines()[0]}; "
                            "the file is truncated or corrupt") from None
    return lm.to(device).eval()


def load_tokenizer(model: str | Path | None = BUILTIN, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve(model)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise LongRopeError(f"cannot load tokenizer from {path}: {str(e).splitlines()[0]}") from None
