"""Write a model folder that stock runtimes (transformers, vLLM, llama.cpp) load without longrope.

The config carries the standard `longrope` entry (short and long factors, original window,
factor, attention factor when it is not the default) under `rope_parameters` (transformers 5)
and `rope_scaling` (the key older runtimes read). Two things have no stock spelling: `n_hat > 0`
and a separate short-mode attention scale. Export refuses them unless the caller accepts
dropping them (the exported model then uses the scaled rotation from position 0, and the long
attention scale at short lengths too). Each method's stock spelling (keys, `max_position_embeddings`,
vLLM's `short_mscale`/`long_mscale`) comes from its mapping in rope/stock.py. `longrope_scaling.json`
holds the scaling in effect in the exported config (what `Scaling.from_dict` reads back), `dropped`
(each part of the given scaling the export left out, with its value), `full` (the given scaling,
when something was dropped) and what each runtime does below and above the window.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from .errors import LongRopeError
from .io import atomic_dir, write_json
from .models import load_model, load_tokenizer, resolve
from .patch import rope_dims
from .rope.scaling import Scaling
from .rope.spec import parse_spec


def stock_form(scaling: Scaling, drop_n_hat: bool = False, drop_short_attention: bool = False,
               portable: bool = False) -> Scaling:
    """`scaling` without what stock runtimes cannot express, if the caller accepts dropping it.
    `portable`: short factors = long factors, one attention scale, so the result does not depend
    on whether a runtime picks the short or the long factors (vLLM and llama.cpp choose once)."""
    if scaling.n_hat and not drop_n_hat:
        raise LongRopeError(f"the stock config format cannot express n_hat={scaling.n_hat} (un-interpolated "
                            "start positions); pass drop_n_hat=True (CLI: --drop-n-hat) to export without it, "
                            "accepting that "
                            "positions below it are rotated with the scaled factors")
    if scaling.short_attention is not None and not drop_short_attention and not portable:
        raise LongRopeError(f"the stock config format has one attention scale for short and long factors; "
                            f"short_attention={scaling.short_attention} cannot be expressed: pass "
                            "drop_short_attention=True (CLI: --drop-short-attention) to export with the long "
                            "one at every length")
    return replace(scaling, n_hat=0, short_attention=None, **({"short_factor": None} if portable else {}))


def dropped_parts(scaling: Scaling, portable: bool = False) -> dict:
    """{part: its value} of what the stock form of `scaling` leaves out (empty: nothing)."""
    out = {}
    if scaling.n_hat:
        out["n_hat"] = scaling.n_hat
    if scaling.short_attention is not None:
        out["short_attention"] = scaling.short_attention
    if portable and scaling.method == "longrope" and scaling.short_factor is not None:
        out["short_factor"] = "replaced by the long factors (--portable)"
    return out


DROPPED_MEANS = {  # what a dropped part costs the exported model, in words (reports, longrope_scaling.json)
    "n_hat": "positions below n_hat are rotated with the scaled factors instead of the original rotation",
    "short_attention": "the long attention scale applies at short lengths too",
    "short_factor": "the long factors apply at every length",
}


def stock_rope_parameters(model, scaling: Scaling) -> tuple[dict, int | None]:
    """(rope_parameters, new max_position_embeddings or None) expressing `scaling` (in stock form)."""
    dim, base, original = rope_dims(model)
    scaling.check_pairs(dim // 2)
    rope = scaling.to_hf(dim=dim, base=base, original=original)
    old = getattr(model.config, "rope_parameters", None) or {}
    if "partial_rotary_factor" in old:
        rope["partial_rotary_factor"] = old["partial_rotary_factor"]
    return rope, scaling.stock().max_position(scaling, original)


def export(model: str | Path, scaling: Scaling | str, out: str | Path, *, drop_n_hat: bool = False,
           drop_short_attention: bool = False, portable: bool = False, trust_remote_code: bool = False,
           dtype: str = "auto", device: str = "cpu") -> Path:
    """Load `model` (a model folder, .gguf file or name; `dtype` auto keeps its own), write it to `out`
    (atomically) with `scaling` in its config. Returns `out`."""
    if not isinstance(model, (str, Path)):
        raise LongRopeError(f"export takes the model's folder, .gguf file or name (it reloads the weights "
                            f"and tokenizer from there), not a {type(model).__name__} object")
    if not isinstance(out, (str, Path)) or not str(out).strip():
        raise LongRopeError(f"export needs an output folder, got {out!r}")
    scaling = parse_spec(scaling)
    stock = stock_form(scaling, drop_n_hat, drop_short_attention, portable)
    src = resolve(model)
    lm = load_model(src, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    dim, base, original = rope_dims(lm)
    scaling.check_pairs(dim // 2, original)  # the given scaling, dropped parts included, fits the model
    rope, max_pos = stock_rope_parameters(lm, stock)
    cfg = lm.config
    if max_pos:
        cfg.max_position_embeddings = max_pos
    vllm = stock.stock().vllm_keys(stock, dim=dim, base=base, original=original,
                                   max_position=cfg.max_position_embeddings)
    cfg.rope_parameters = {**rope, **vllm}
    orig_window = rope.get("original_max_position_embeddings")
    if orig_window and hasattr(cfg, "original_max_position_embeddings"):
        cfg.original_max_position_embeddings = orig_window  # Phi-3 reads it outside rope_parameters
    out = Path(out)
    with atomic_dir(out, "export") as tmp:
        lm.save_pretrained(tmp)
        try:
            load_tokenizer(src, trust_remote_code=trust_remote_code).save_pretrained(tmp)
        except LongRopeError:
            pass  # a model folder without a tokenizer exports without one
        _keep_sentencepiece(src, tmp)
        _add_legacy_rope_scaling(tmp / "config.json", {**rope, **vllm})
        write_json(tmp / "longrope_scaling.json", _record(scaling, stock, src, original, portable,
                                                           cfg.max_position_embeddings, vllm))
    return out


def _keep_sentencepiece(src: Path, dest: Path) -> None:
    """Copy the source's sentencepiece `tokenizer.model` when the tokenizer's save did not write one
    (transformers 5 saves tokenizer.json only): llama.cpp's converter reads it for Phi-3 and Llama-2."""
    spm = Path(src) / "tokenizer.model"
    if spm.is_file() and not (dest / "tokenizer.model").exists():
        shutil.copyfile(spm, dest / "tokenizer.model")


def _record(scaling: Scaling, stock: Scaling, src: Path, original: int, portable: bool,
            max_position: int, vllm: dict) -> dict:
    """longrope_scaling.json: the scaling in effect, what was dropped (and the full scaling then), and
    what each runtime will do."""
    record = stock.to_dict()
    dropped = dropped_parts(scaling, portable)
    record["dropped"] = {k: {"value": v, "effect": DROPPED_MEANS[k]} for k, v in dropped.items()}
    record["full"] = scaling.to_dict() if dropped else None
    record["provenance"] = {**scaling.provenance, "exported_from": str(src), "dropped_n_hat": scaling.n_hat,
                            "dropped_short_attention": scaling.short_attention, "portable": portable}
    record["stock"] = {"max_position_embeddings": max_position, "vllm_keys": vllm,
                       "runtimes": stock.stock().runtimes(stock, original)}
    return record


def _add_legacy_rope_scaling(config_path: Path, rope: dict) -> None:
    """Older runtimes (vLLM, llama.cpp converters) read `rope_scaling` and a top-level rope_theta."""
    cfg = json.loads(config_path.read_text())
    if rope.get("rope_type") != "default":
        legacy = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
        legacy["type"] = legacy["rope_type"]
        cfg["rope_scaling"] = legacy
    cfg.setdefault("rope_theta", rope["rope_theta"])
    config_path.write_text(json.dumps(cfg, indent=2) + "\n")
