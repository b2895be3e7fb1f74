"""Scaling: spec strings, our JSON format, the public factor file, Hugging Face configs, errors."""
import json
import math

import pytest
import torch

from longrope.errors import LongRopeError, LongRopeWarning
from longrope.rope.scaling import FORMAT, Scaling
from longrope.rope.files import load_scaling
from longrope.rope.spec import parse_spec


def test_spec_strings():
    assert parse_spec("pi:8").method == "linear" and parse_spec("pi:8").factor == 8
    assert parse_spec("yarn:4:beta_fast=16").params == {"beta_fast": 16}
    assert parse_spec("pi", default_factor=6).factor == 6
    assert parse_spec("none").method == "none" and parse_spec(None).method == "none"
    for bad, msg in (("pi", "needs a factor"), ("pi:x", "bad scale factor"), ("nope:2", "unknown scaling"),
                     ("pi:-2", "number from 1"), ("yarn:4:gamma=1", "takes no option"), ("longrope", "factor file")):
        with pytest.raises(LongRopeError, match=msg):
            parse_spec(bad)


def test_json_roundtrip_and_spec(tmp_path):
    s = Scaling("longrope", long_factor=[1.0, 2.0, 4.0], short_factor=[1.0, 1.1, 1.2], n_hat=4,
                original_max_position=256, target_length=2048, attention="yarn", provenance={"by": "test"})
    assert s.factor == 8.0
    path = tmp_path / "f.json"
    s.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["version"] == 1
    assert load_scaling(path) == s
    assert parse_spec(f"longrope:{path}:n_hat=8").n_hat == 8


def test_public_factor_file_one_per_line_and_per_layer(tmp_path):
    one = tmp_path / "result_final.csv"
    one.write_text("1.0\n1.5\n4.0\n")
    s = load_scaling(one)  # a whole largest factor may be read as the scale
    assert s.long_factor == [1.0, 1.5, 4.0] and s.factor == 4.0
    assert parse_spec(f"longrope:{one}:factor=3").factor == 3
    rows = tmp_path / "layers.csv"
    rows.write_text("1.0,1.5,2.5\n1.0,1.5,2.5\n")
    assert load_scaling(rows, factor=2).long_factor == [1.0, 1.5, 2.5]
    rows.write_text("1.0,1.5,2.5\n1.0,1.6,2.5\n")
    with pytest.raises(LongRopeError, match="per-layer"):
        load_scaling(rows, factor=2)


def test_public_factor_file_scale_comes_from_the_target_not_the_largest_factor(tmp_path):
    """The public search lets factors reach 1 + s: a file searched at s = 8 may top out at 8.62."""
    path = tmp_path / "result_final.csv"
    path.write_text("\n".join(str(1.0 + 7.62 * i / 31) for i in range(32)) + "\n")
    with pytest.raises(LongRopeError, match="largest factor 8.62 is not a whole number"):
        load_scaling(path)
    assert parse_spec(f"longrope:{path}:factor=8").factor == 8
    by_target = parse_spec(f"longrope:{path}:target_length=2048")
    assert by_target.factor is None and by_target.target_length == 2048
    inv, scale = by_target.inv_freq(dim=64, base=1e4, original=256)  # s = 2048 / 256 from the model window
    assert scale == pytest.approx(math.sqrt(1 + math.log(8) / math.log(256)))
    both = parse_spec(f"longrope:{path}:target_length=4096:original_max_position=512")
    assert both.factor == 8
    path.write_text("1.0\n5.0\n")
    with pytest.warns(LongRopeWarning, match="above 1 \\+ s"):
        parse_spec(f"longrope:{path}:factor=2")


@pytest.mark.parametrize("content,msg", [
    ("1.0\nabc\n", "not a number"), ("", "empty"), ("1.0\n-2\n", "numbers from 0.001"),
    ("1.0\nnan\n", "numbers from 0.001"), ('{"format": "longrope-scaling", "method": "warp"}', "unknown scaling"),
    ("{bad json", "bad JSON"), ('{"model_type": "llama"}', "no rope_scaling"),
])
def test_bad_factor_files(tmp_path, content, msg):
    path = tmp_path / "f.txt"
    path.write_text(content)
    with pytest.raises(LongRopeError, match=msg):
        load_scaling(path)


def test_missing_file():
    with pytest.raises(LongRopeError, match="not found"):
        load_scaling("/nonexistent/factors.json")


def phi3_like_config(tmp_path, with_factor: bool):
    g = torch.Generator().manual_seed(0)
    long = (1 + 30 * torch.rand(48, generator=g)).sort().values.tolist()
    short = (1 + 0.1 * torch.rand(48, generator=g)).sort().values.tolist()
    rope = {"type": "longrope", "long_factor": long, "short_factor": short}
    if with_factor:
        rope["factor"] = 16.0
    cfg = {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "hidden_size": 3072,
           "num_attention_heads": 32, "num_key_value_heads": 32, "num_hidden_layers": 1,
           "intermediate_size": 64, "vocab_size": 64, "max_position_embeddings": 131072,
           "original_max_position_embeddings": 4096, "rope_theta": 10000.0, "rope_scaling": rope}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path / "config.json"


@pytest.mark.parametrize("with_factor", [False, True])
def test_phi3_config_gives_the_stock_rotation(tmp_path, with_factor):
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    path = phi3_like_config(tmp_path, with_factor)
    s = load_scaling(path)
    assert s.factor == (16.0 if with_factor else 32.0) and s.original_max_position == 4096
    cfg = AutoConfig.from_pretrained(tmp_path)
    for seq_len in (None, 5000):
        theirs, their_scale = ROPE_INIT_FUNCTIONS["longrope"](cfg, "cpu", seq_len=seq_len)
        ours, our_scale = s.inv_freq(dim=96, base=10000.0, original=4096, seq_len=seq_len)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
        assert our_scale == pytest.approx(their_scale, rel=1e-9)
    assert s.inv_freq(dim=96, base=1e4, original=4096)[1] == pytest.approx(
        math.sqrt(1 + math.log(s.factor) / math.log(4096)))


def test_scaling_validation():
    with pytest.raises(LongRopeError, match="short_factor has 2"):
        Scaling("longrope", long_factor=[1.0, 2.0, 3.0], short_factor=[1.0, 1.0], factor=3)
    with pytest.raises(LongRopeError, match="n_hat"):
        Scaling("yarn", factor=4, n_hat=4)
    with pytest.raises(LongRopeError, match="attention"):
        Scaling("longrope", long_factor=[1.0], factor=2, attention="loud")
    with pytest.raises(LongRopeError, match="short_attention needs"):
        Scaling("longrope", long_factor=[1.0], factor=2, short_attention=1.0)
    with pytest.raises(LongRopeError, match="positive"):
        Scaling("longrope", long_factor=[1.0], short_factor=[1.0], factor=2, short_attention=-1)
