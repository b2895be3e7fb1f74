"""`finetune --lora-rank R`: peft adapters on a frozen base; the loss goes down, the output is a plain
merged model equal to base + adapter, the adapter folder loads merged, resume is exact, and LoRA works
with distillation and mixed windows."""
import json

import pytest
import torch

from longrope import cli
from tests.helpers import losses
from tests.train.common import ft_args as args

pytest.importorskip("peft")


def test_lora_loss_decreases_only_adapters_train_and_export_is_plain(assets, tmp_path):
    from transformers import AutoModelForCausalLM

    from longrope.models import load_model

    model, texts, cache = assets
    out = tmp_path / "out"
    assert cli.main(args(model, texts, cache, out, "--lora-rank", "8", "--lr", "1e-2", steps=12)) == 0
    log = losses(tmp_path / "out.work" / "log.jsonl")
    assert sum(log[-3:]) / 3 < log[0] - 0.3, log
    summary = json.loads((out / "finetune.json").read_text())
    lora = summary["lora"]
    assert 0 < lora["trainable"] < lora["total"] / 5  # the adapters only
    # the output is a plain model (no peft layers, no adapter keys) and differs from the base
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "adapter"} <= files
    adapter = out / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in adapter.iterdir()}
    # stock transformers loads the export without peft; its logits equal base + adapter (peft)
    spec = f"longrope:{out / 'longrope_scaling.json'}"
    assert cli.main(["export", "--model", str(out), "--scaling", spec, "--out", str(tmp_path / "stock")]) == 0
    assert cli.main(["export", "--model", str(adapter), "--scaling", spec, "--out", str(tmp_path / "stock2")]) == 0
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "stock", dtype=torch.float32).eval()
    assert not any("lora" in n for n, _ in stock.named_parameters())
    import peft

    base = load_model(model)
    with_adapter = peft.PeftModel.from_pretrained(base, str(adapter)).eval()
    import longrope
    longrope.apply(with_adapter.base_model.model, "yarn:2")
    ids = torch.randint(3, 100, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = with_adapter(ids).logits
        torch.testing.assert_close(stock(ids).logits, ref, rtol=1e-5, atol=1e-5)
        stock2 = AutoModelForCausalLM.from_pretrained(tmp_path / "stock2", dtype=torch.float32).eval()
        torch.testing.assert_close(stock2(ids).logits, ref, rtol=1e-5, atol=1e-5)
        assert (ref - longrope.apply(load_model(model), "yarn:2")(ids).logits).abs().max() > 1e-3  # trained


def test_lora_resume_repeats_the_uninterrupted_run(assets, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    model, texts, cache = assets
    out = tmp_path / "out"
    run = args(model, texts, cache, out, "--lora-rank", "4", "--lora-targets", "q_proj,v_proj",
               "--checkpoint-every", "3", steps=6)
    assert cli.main(run) == 0
    full = losses(tmp_path / "out.work" / "log.jsonl")
    weights = load_file(str(out / "model.safetensors"))
    ckpt = tmp_path / "out.work" / "checkpoint"
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)  # the checkpoint holds the adapters alone
    assert (ckpt / "optimizer.pt").is_file()
    assert cli.main(run + ["--resume"]) == 0
    assert losses(tmp_path / "out.work" / "log.jsonl") == full
    again = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_lora_with_distillation_and_mixed_windows(assets, tmp_path):
    model, texts, cache = assets
    out = tmp_path / "out"
    assert cli.main(args(model, texts, cache, out, "--lora-rank", "4", "--distill", "0.5",
                         "--mixed-window", "0.5", steps=3)) == 0
    log = [json.loads(line) for line in (tmp_path / "out.work" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(r["kl"] >= 0 for r in log) and any(r["kl"] > 0 for r in log)


@pytest.mark.parametrize("change,message", [
    (["--lora-rank", "-1"], "--lora-rank must be >= 0"),
    (["--lora-rank", "4", "--lora-alpha", "0"], "--lora-alpha must be positive"),
    (["--lora-rank", "4", "--lora-targets", "nope_proj"], "--lora-targets nope_proj"),
])
def test_lora_bad_input_is_one_line(assets, tmp_path, capsys, change, message):
    model, texts, cache = assets
    assert cli.main(args(model, texts, cache, tmp_path / "o", *change, steps=2)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_lora_without_peft_names_the_extra(assets, tmp_path, capsys, monkeypatch):
    from tests.helpers import without_module

    model, texts, cache = assets
    with without_module(monkeypatch, "peft"):
        assert cli.main(args(model, texts, cache, tmp_path / "o", "--lora-rank", "4", steps=2)) == 2
    assert "longrope[lora]" in capsys.readouterr().err
