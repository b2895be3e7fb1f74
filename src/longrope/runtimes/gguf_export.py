"""`longrope export --format gguf`: a GGUF that stock llama.cpp runs with our scaling.

Built on llama.cpp's own converter (converter.py) run on our Hugging Face export, then patched with
the `gguf` package (gguf_file.py) with what the converter leaves out. For a longrope scaling the
converter writes only `{arch}.rope.scaling.type = longrope` for the llama architecture, and llama.cpp
then runs plain RoPE without a warning; we add what llama.cpp's runtime reads:

- tensors `rope_factors_long.weight` and `rope_factors_short.weight` (F32, [rotary_dim / 2]);
- `{arch}.rope.scaling.attn_factor` and `{arch}.rope.scaling.original_context_length`;
- and no `{arch}.rope.scaling.factor` (it would add linear scaling on top of the factors).

The keys and tensors come from each method's stock mapping (rope/stock.py). What GGUF cannot
express (n_hat, dynamic NTK, a separate short attention scale) is refused unless dropped.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import LongRopeError
from ..exporter import export, stock_form
from ..io import atomic_path
from ..models import BUILTIN_DIR, resolve, rope_config
from ..rope.scaling import Scaling
from ..rope.spec import parse_spec
from . import gguf_file
from .converter import find_converter, run_converter

# Hugging Face architecture -> llama.cpp architecture the converter writes
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                 "Qwen3ForCausalLM": "qwen3", "Phi3ForCausalLM": "phi3"}
# llama.cpp graphs that read per-pair frequency factors (rope_factors_* / rope_freqs tensors)
READS_FACTORS = {"llama", "phi3"}
# the built-in tokenizer: single digits + the GPT-2 regex, which llama.cpp calls `starcoder`
BUILTIN_PRE_TOKENIZER = "starcoder"


def export_gguf(model: str | Path, scaling: Scaling | str, out: str | Path, *, drop_n_hat: bool = False,
                drop_short_attention: bool = False, drop_dynamic: bool = False, portable: bool = False,
                converter: str | Path | None = None, pre_tokenizer: str | None = None, outtype: str = "auto",
                trust_remote_code: bool = False, overwrite: bool = False, dtype: str = "auto",
                device: str = "cpu") -> Path:
    """Write `out` (a .gguf file, atomically) holding `model` with `scaling`. Returns `out`. An
    existing file at `out` is replaced only with `overwrite`; a folder or a symlink never."""
    scaling = parse_spec(scaling)
    _check_out(Path(out).expanduser(), overwrite)  # before the work
    stock = stock_form(scaling, drop_n_hat, drop_short_attention, portable)
    if drop_dynamic and stock.stock().plain_in_window:
        stock = Scaling("none")
    src = resolve(model)
    arch, (dim, base, original) = _check_model(src)
    rope = stock.stock().gguf(stock, dim=dim, base=base, original=original)
    if rope.tensors and arch not in READS_FACTORS:
        raise LongRopeError(f"llama.cpp's {arch} graph reads no per-pair rope factors, so a {stock.method} "
                            f"GGUF would run plain RoPE; GGUF {stock.method} export supports "
                            f"{', '.join(sorted(READS_FACTORS))} architectures")
    script = find_converter(converter)
    if pre_tokenizer is None and src == BUILTIN_DIR:
        pre_tokenizer = BUILTIN_PRE_TOKENIZER
    out = Path(out).expanduser()
    with tempfile.TemporaryDirectory(prefix="longrope-gguf-") as tmp:
        hf = export(src, stock, Path(tmp) / "hf", trust_remote_code=trust_remote_code, dtype=dtype, device=device)
        converted = Path(tmp) / "converted.gguf"
        run_converter(script, hf, converted, outtype=outtype, pre_tokenizer=pre_tokenizer)
        _check_out(out, overwrite)  # again: it may have appeared during the work
        with atomic_path(out) as dst:
            add_rope(converted, dst, rope)
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_symlink() or out.is_dir():
        raise LongRopeError(f"{out} is a {'symlink' if out.is_symlink() else 'folder'}; a GGUF export "
                            "writes a file: choose another --out")
    if out.exists() and not overwrite:
        raise LongRopeError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it, "
                            "or choose another --out")


def add_rope(converted: Path, dst: Path, rope) -> None:
    """Copy the converter's GGUF to `dst` with the scaling's keys (under the file's architecture),
    tensors and absent keys (a stock.GgufRope) applied."""
    arch = gguf_file.architecture(converted)
    gguf_file.rewrite(converted, dst, keys={f"{arch}.{k}": v for k, v in rope.keys.items()},
                      tensors=rope.tensors, remove=tuple(f"{arch}.{k}" for k in rope.absent))


def _check_model(src: Path) -> tuple[str, tuple[int, float, int]]:
    """(llama.cpp architecture, (rotary dim, base, original window)); one-line error for a model
    without RoPE or of an architecture this export does not support."""
    try:
        cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LongRopeError(f"cannot read {src / 'config.json'}: {e}") from None
    names = cfg.get("architectures") or [cfg.get("model_type", "?")]
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if "rope_theta" not in cfg and "rope_theta" not in rope:
        raise LongRopeError(f"{names[0]} has no rotary position embeddings (no rope_theta): GGUF export "
                            "with a RoPE scaling applies to RoPE models only")
    if names[0] not in ARCHITECTURES:
        raise LongRopeError(f"GGUF export does not support {names[0]}; supported: {', '.join(ARCHITECTURES)}")
    from transformers import AutoConfig
    dim, base, original = rope_config(AutoConfig.from_pretrained(src))
    return ARCHITECTURES[names[0]], (dim, float(base), original)
