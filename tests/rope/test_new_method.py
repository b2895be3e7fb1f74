"""A RoPE method added in this file alone -- its function and its stock mapping, registered -- works
everywhere without another file changing: applied to a model, exported as a folder stock
transformers loads (or refused in one line where its mapping has no spelling), written to GGUF or
refused, and named in the `--help` texts. DESIGN.md's "a RoPE method: 2 files" is this test."""
import math

import pytest
import torch

from longrope import cli
from longrope.rope import registry
from longrope.rope.basis import base_inv_freq
from longrope.rope.stock import GgufRope, StockMapping, scale, window

from tests.helpers import make_tiny, torch_threads
from tests.test_gguf import fake_converter  # noqa: F401 (the stand-in llama.cpp converter fixture)


def sqrt_pi(dim, base, original, *, factor, seq_len=None):
    """Position interpolation by sqrt(s) instead of s."""
    return base_inv_freq(dim, base) / math.sqrt(factor), 1.0


class SqrtPi(StockMapping):
    """Stock runtimes spell it as their `linear` type with factor sqrt(s)."""
    hf_type = "linear"

    def rope_parameters(self, scaling, *, dim, base, original):
        return {"rope_type": "linear", "rope_theta": base, "factor": math.sqrt(scale(scaling, original))}

    def max_position(self, scaling, original):
        return window(scaling, original)

    def gguf(self, scaling, *, dim, base, original):
        return GgufRope(keys={"rope.scaling.type": "linear",
                              "rope.scaling.factor": math.sqrt(scale(scaling, original))})


def twist(dim, base, original, *, factor, seq_len=None):
    """A method no stock runtime has a spelling for (the base mapping: "cannot express")."""
    inv = base_inv_freq(dim, base)
    return torch.where(torch.arange(dim // 2) % 2 == 0, inv, inv / factor), 1.0


@pytest.fixture
def new_methods():
    saved = dict(registry.METHODS), dict(registry.ALIASES)
    registry.register("sqrt_pi", stock=SqrtPi(), params=("factor",))(sqrt_pi)
    registry.register("twist", stock=StockMapping(), params=("factor",))(twist)
    try:
        yield
    finally:
        registry.METHODS.clear(), registry.METHODS.update(saved[0])
        registry.ALIASES.clear(), registry.ALIASES.update(saved[1])


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def run_cli(argv, capsys):
    capsys.readouterr()
    rc = cli.main(list(map(str, argv)))
    return rc, capsys.readouterr().err.strip()


def test_applied_and_exported_as_a_folder_stock_transformers_loads(new_methods, tmp_path, capsys):
    import longrope
    from transformers import AutoModelForCausalLM

    src = tmp_path / "src"
    make_tiny("llama", seed=3).save_pretrained(src)
    ids = torch.randint(3, 128, (1, 80), generator=torch.Generator().manual_seed(0))  # > the 32-token window
    with torch_threads(1):
        ours = logits(longrope.apply(make_tiny("llama", seed=3), "sqrt_pi:4"), ids)
        pi2 = logits(longrope.apply(make_tiny("llama", seed=3), "pi:2"), ids)
        assert torch.equal(ours, pi2)  # sqrt(4) = 2: the method is what it claims
        assert run_cli(["export", "--model", src, "--scaling", "sqrt_pi:4", "--out", tmp_path / "out"], capsys)[0] == 0
        stock = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
        assert stock.config.rope_parameters["rope_type"] == "linear"
        torch.testing.assert_close(logits(stock, ids), ours, rtol=1e-5, atol=1e-5)
    rc, err = run_cli(["export", "--model", src, "--scaling", "twist:4", "--out", tmp_path / "no"], capsys)
    assert rc == 2 and "no spelling for twist scaling" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "no").exists()


def test_written_to_gguf_or_refused(new_methods, tmp_path, capsys, fake_converter):  # noqa: F811
    from tests import gguf_helpers

    src = tmp_path / "src"
    make_tiny("llama", seed=3).save_pretrained(src)
    base = ["export", "--format", "gguf", "--model", src, "--pre-tokenizer", "gpt2"]
    assert run_cli([*base, "--scaling", "sqrt_pi:9", "--out", tmp_path / "s.gguf"], capsys)[0] == 0
    keys, _ = gguf_helpers.read_back(tmp_path / "s.gguf")
    assert keys["llama.rope.scaling.type"] == "linear" and keys["llama.rope.scaling.factor"] == 3.0
    rc, err = run_cli([*base, "--scaling", "twist:4", "--out", tmp_path / "t.gguf"], capsys)
    assert rc == 2 and "twist" in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.glob("t.gguf*"))


@pytest.mark.parametrize("command", [["inspect"], ["eval", "ppl"], ["compare"]])
def test_listed_in_the_help_texts(new_methods, capsys, command):
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "sqrt_pi:8" in text and "twist:8" in text and "longrope:PATH" in text
