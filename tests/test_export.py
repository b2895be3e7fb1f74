"""Export: a folder stock transformers loads, in a process that never imports longrope."""
import json
import sys
from dataclasses import replace

import pytest
import torch

import longrope
from longrope.cli import main
from longrope.rope.scaling import Scaling
from tests.helpers import make_tiny, run_group

LONG = [1.0 + 0.5 * i for i in range(8)]
SHORT = [1.0 + 0.02 * i for i in range(8)]

STOCK_LOAD = """
import sys, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
batch = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    torch.save({k: m(ids).logits for k, ids in batch.items()}, sys.argv[3])
assert "longrope" not in sys.modules
"""


@pytest.mark.parametrize("family", ["llama", "phi3"])
@pytest.mark.parametrize("attention", ["su", "yarn"])
def test_exported_model_loads_stock_and_matches_apply(tmp_path, family, attention):
    src = tmp_path / "src"
    make_tiny(family, seed=2).save_pretrained(src)
    scaling = Scaling("longrope", long_factor=LONG, short_factor=SHORT, factor=4.0, attention=attention)
    out = longrope.export(src, scaling, tmp_path / "out")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"]["rope_type"] == "longrope" and cfg["max_position_embeddings"] == 128
    assert ("attention_factor" in cfg["rope_parameters"]) == (attention != "su")
    ours = longrope.apply(make_tiny(family, seed=2), scaling)
    batch = {f"len{n}": torch.randint(3, 128, (1, n), generator=torch.Generator().manual_seed(n))
             for n in (20, 90)}  # inside and beyond the original window (32)
    torch.save(batch, tmp_path / "ids.pt")
    r = run_group([sys.executable, "-c", STOCK_LOAD, str(out), str(tmp_path / "ids.pt"),
                   str(tmp_path / "logits.pt")], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    stock = torch.load(tmp_path / "logits.pt", weights_only=True)
    with torch.no_grad():
        for key, ids in batch.items():
            torch.testing.assert_close(stock[key], ours(ids).logits, rtol=1e-5, atol=1e-5)


def test_export_refuses_n_hat_unless_told(tmp_path, capsys):
    src = tmp_path / "src"
    make_tiny("llama").save_pretrained(src)
    factors = tmp_path / "f.json"
    Scaling("longrope", long_factor=LONG, factor=4.0, n_hat=4).save(factors)
    capsys.readouterr()
    rc = main(["export", "--model", str(src), "--scaling", f"longrope:{factors}", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "n_hat=4" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    rc = main(["export", "--model", str(src), "--scaling", f"longrope:{factors}", "--out", str(tmp_path / "o"),
               "--drop-n-hat"])
    assert rc == 0
    record = json.loads((tmp_path / "o" / "longrope_scaling.json").read_text())
    assert record["provenance"]["dropped_n_hat"] == 4


def test_export_refuses_a_short_attention_scale_unless_told(tmp_path, capsys):
    src = tmp_path / "src"
    make_tiny("llama").save_pretrained(src)
    factors = tmp_path / "f.json"
    Scaling("longrope", long_factor=LONG, short_factor=SHORT, factor=4.0, short_attention=1.0).save(factors)
    capsys.readouterr()
    argv = ["export", "--model", str(src), "--scaling", f"longrope:{factors}", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "short_attention=1.0" in err and len(err.strip().splitlines()) == 1
    assert main(argv + ["--drop-short-attention"]) == 0
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert "attention_factor" not in cfg["rope_parameters"]  # the long policy (su) everywhere


def test_export_of_baselines_uses_stock_types(tmp_path):
    src = tmp_path / "src"
    make_tiny("llama").save_pretrained(src)
    for spec, kind in (("yarn:4", "yarn"), ("pi:4", "linear"), ("ntk:4", "default")):
        out = longrope.export(src, spec, tmp_path / kind)
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["rope_parameters"]["rope_type"] == kind
    ntk = json.loads((tmp_path / "default" / "config.json").read_text())
    assert ntk["rope_parameters"]["rope_theta"] == pytest.approx(10000 * 4 ** (16 / 14))


def test_export_writes_the_keys_each_runtime_reads(tmp_path):
    """vLLM multiplies max_position_embeddings by factor for linear/dynamic, ignores attention_factor
    (it reads short_mscale/long_mscale) and derives its default scale from max_position / original."""
    src = tmp_path / "src"
    make_tiny("llama").save_pretrained(src)
    pi = json.loads((longrope.export(src, "pi:4", tmp_path / "pi") / "config.json").read_text())
    assert pi["max_position_embeddings"] == 32 and pi["rope_scaling"]["factor"] == 4  # vLLM: 32 * 4
    yarn = json.loads((longrope.export(src, "yarn:4", tmp_path / "yarn") / "config.json").read_text())
    assert yarn["max_position_embeddings"] == 128 and yarn["rope_scaling"]["original_max_position_embeddings"] == 32
    scaling = Scaling("longrope", long_factor=LONG, short_factor=SHORT, factor=4.0, attention=1.3)
    out = longrope.export(src, scaling, tmp_path / "lr")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["max_position_embeddings"] == 128
    for entry in (cfg["rope_scaling"], cfg["rope_parameters"]):
        assert entry["short_mscale"] == entry["long_mscale"] == entry["attention_factor"] == 1.3
    su = json.loads((longrope.export(src, replace(scaling, attention="su"), tmp_path / "su") / "config.json").read_text())
    assert "short_mscale" not in su["rope_scaling"]  # vLLM's default sqrt(1 + ln(128/32) / ln 32) is ours
    record = json.loads((out / "longrope_scaling.json").read_text())
    runtimes = record["stock"]["runtimes"]
    assert set(runtimes) == {"transformers", "vllm", "llama.cpp"}
    assert "n_ctx > 32" in runtimes["llama.cpp"]["below_window"]
    assert record["stock"]["vllm_keys"] == {"short_mscale": 1.3, "long_mscale": 1.3}


def test_portable_export_has_one_set_of_factors(tmp_path):
    src = tmp_path / "src"
    make_tiny("llama").save_pretrained(src)
    scaling = Scaling("longrope", long_factor=LONG, short_factor=SHORT, factor=4.0, short_attention=1.0)
    out = longrope.export(src, scaling, tmp_path / "p", portable=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_parameters"]["short_factor"] == cfg["rope_parameters"]["long_factor"] == LONG
    record = json.loads((out / "longrope_scaling.json").read_text())
    assert record["provenance"]["portable"] and record["short_factor"] is None  # what the export computes
    assert record["full"]["short_factor"] == SHORT and "short_factor" in record["dropped"]  # the full scaling kept
    assert "at every length" in record["stock"]["runtimes"]["vllm"]["below_window"]
