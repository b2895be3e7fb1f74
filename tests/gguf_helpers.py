"""Tiny GGUF files written in the test with `gguf.GGUFWriter` (no download): a tiny Llama whose
tensors are the ones of an in-memory transformers model, laid out the way llama.cpp's converter
writes them (q/k rows permuted per head), with a byte-level BPE vocabulary (256 bytes + 4 specials)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
VOCAB = len(SPECIALS) + 256


def byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes 0..255 (GPT-2's table), in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def gguf_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k rows from transformers' half-split rotary layout to GGUF's interleaved one."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama_model(seed: int = 0, window: int = 32):
    from tests.helpers import make_tiny

    return make_tiny("llama", seed=seed, vocab=VOCAB, window=window)


def write_tiny_gguf(path: Path, model=None, *, arch: str = "llama", qtype=None, window: int = 32) -> Path:
    """Write `model` (default: a tiny random Llama) as a GGUF file. `qtype` (a GGMLQuantizationType)
    stores the first attention weight as that type (raw zero bytes), to test unsupported types."""
    import gguf

    model = model if model is not None else tiny_llama_model(window=window)
    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-test")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    if arch == "llama":
        w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
        w.add_rope_dimension_count(cfg.head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(SPECIALS + byte_chars())
    w.add_token_types([3] * len(SPECIALS) + [1] * 256)
    w.add_token_scores([0.0] * VOCAB)
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        q = gguf_rows(sd[p + "self_attn.q_proj.weight"], heads)
        if qtype is not None and i == 0:
            size = gguf.GGML_QUANT_SIZES[qtype]
            raw = np.zeros((q.shape[0], q.shape[1] // size[0] * size[1]), dtype=np.uint8)
            w.add_tensor(f"blk.{i}.attn_q.weight", raw, raw_dtype=qtype)
        else:
            w.add_tensor(f"blk.{i}.attn_q.weight", q)
        w.add_tensor(f"blk.{i}.attn_k.weight", gguf_rows(sd[p + "self_attn.k_proj.weight"], kv))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read_back(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(keys, tensors) of a GGUF: every key's value and every tensor as a numpy array."""
    import gguf

    reader = gguf.GGUFReader(path)
    keys = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    return keys, {t.name: np.array(t.data) for t in reader.tensors}
