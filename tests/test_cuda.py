"""Real-CUDA checks (they skip without a GPU; `make gpu-check` runs them on one): the CUDA/bfloat16
paths give the CPU's figures within bfloat16's precision."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_rotary_tables_on_cuda_equal_the_cpu_ones():
    import longrope
    from longrope.models import load_model

    cpu, gpu = load_model("builtin"), load_model("builtin", device="cuda", dtype="bfloat16")
    for m in (cpu, gpu):
        longrope.apply(m, "yarn:8")
    ids = torch.randint(3, cpu.config.vocab_size, (1, 2048), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = cpu(ids).logits.float()
        b = gpu(ids.cuda()).logits.float().cpu()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.95  # bfloat16 moves a few near-ties


def test_perplexity_on_cuda_in_bfloat16_is_the_cpu_figure_within_two_percent():
    import longrope
    from longrope.data import load_tokenized
    from longrope.eval.compare import make_samples
    from longrope.eval.perplexity import perplexity
    from longrope.models import load_model, load_tokenizer

    tok = load_tokenizer("builtin")
    samples = make_samples(load_tokenized(tok, None, "test").ids, tok, 2048, 2).tensors
    figures = []
    for device, dtype in (("cpu", "float32"), ("cuda", "bfloat16")):
        m = longrope.apply(load_model("builtin", device=device, dtype=dtype), "yarn:8")
        figures.append(perplexity(m, samples).ppl)
    assert abs(figures[1] / figures[0] - 1) < 0.02, figures
