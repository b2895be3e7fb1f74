"""`longrope pretrain` on a tiny configuration: output loads with stock transformers, seeds repeat, resume."""
from __future__ import annotations

import json

import pytest

from longrope.cli import main
from tests.data.helpers import write_corpus

TINY = ["--layers", "1", "--hidden", "64", "--heads", "1", "--intermediate", "128", "--vocab-size", "400",
        "--window", "256", "--batch-size", "4", "--lr", "3e-3", "--warmup", "5", "--passkey-share", "0.25",
        "--threads", "1", "--eval-every", "10", "--checkpoint-every", "10", "--no-progress"]


def run(tmp_path, name, *extra, steps=20, seed=0):
    data = tmp_path / "corpus"
    if not data.exists():  # every document long enough for a validation sample (5% are held out)
        write_corpus(data, sizes=(2000, 300, 1500, 800, 900, 1200, 600, 2500))
    out = tmp_path / name
    rc = main(["pretrain", "--data", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
               "--steps", str(steps), "--seed", str(seed), *TINY, *extra])
    assert rc == 0
    return out, [json.loads(line) for line in (tmp_path / f"{name}.work" / "log.jsonl").read_text().splitlines()]


def test_pretrain_output_loads_with_stock_transformers(tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, log = run(tmp_path, "m")
    assert "wrote" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    cfg = model.config
    assert cfg.model_type == "llama" and cfg.max_position_embeddings == 256 and cfg.head_dim == 64
    assert cfg.rope_parameters["rope_theta"] == 10000.0
    assert len(tok) <= cfg.vocab_size and tok.bos_token_id == cfg.bos_token_id == 1
    ids = tok("def main():\n    return 0\n", return_tensors="pt")["input_ids"]
    assert torch.isfinite(model(input_ids=ids).logits).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["steps"] == 20 and prov["seed"] == 0 and prov["tokens_seen"] > 0
    assert prov["corpus"]["train"]["docs"] > 0 and prov["final_val_loss"] > 0
    assert (out / "train_log.jsonl").is_file()
    assert [r["step"] for r in log] == [10, 20] and "val_loss" in log[-1]
    assert log[-1]["loss"] < log[0]["loss"] + 1.0
    assert not list(tmp_path.glob(".m.*"))  # atomic: no temporary folder left behind


def test_same_seed_same_losses_and_resume_continues_exactly(tmp_path):
    _, a = run(tmp_path, "a")
    _, b = run(tmp_path, "b")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    _, c = run(tmp_path, "c", seed=1)
    assert [r["loss"] for r in c] != [r["loss"] for r in a]
    # resume from the step-10 checkpoint of run "a": the rest of the log repeats exactly
    _, resumed = run(tmp_path, "a", "--resume")
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(resumed) == drop(a)


def test_resume_without_checkpoint_and_bad_sizes_exit_2(tmp_path, capsys):
    write_corpus(tmp_path / "corpus")
    rc = main(["pretrain", "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "x"), "--resume", *TINY])
    assert rc == 2 and "nothing to resume" in capsys.readouterr().err
    rc = main(["pretrain", "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "x"), *TINY, "--hidden", "96"])
    err = capsys.readouterr().err
    assert rc == 2 and "--hidden 96 must equal --heads 1 x head size 64" in err and err.count("\n") == 1
    rc = main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x"), *TINY])
    assert rc == 2 and "data not found" in capsys.readouterr().err


def test_weighted_loss_matches_plain_mean_at_weight_1_and_upweights_answers():
    import torch

    from longrope.pretrain import _weighted_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g)
    labels = torch.tensor([[1, 4, 5, 6, -100, -100], [1, 3, 3, 3, 3, 3]])
    answer = torch.tensor([[0, 0, 1, 1, 0, 0], [0] * 6], dtype=torch.bool)
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1),
                                              ignore_index=-100)
    loss, ans = _weighted_loss(logits, labels, answer, 1.0)
    assert torch.allclose(loss, plain)
    nll = torch.nn.functional.cross_entropy(logits[0, 1:3], labels[0, 2:4], reduction="none")
    assert abs(ans - float(nll.mean())) < 1e-6
    heavy, _ = _weighted_loss(logits, labels, answer, 50.0)
    assert abs(float(heavy) - float(nll.mean())) < abs(float(plain) - float(nll.mean()))
    assert _weighted_loss(logits, labels, torch.zeros_like(answer), 5.0)[1] is None


def test_passkey_weight_run_logs_answer_loss(tmp_path):
    _, log = run(tmp_path, "w", "--passkey-weight", "10", steps=10)
    assert all("passkey_answer_loss" in r for r in log)


def test_init_continues_from_a_model_folder(tmp_path):
    from transformers import AutoModelForCausalLM

    first, _ = run(tmp_path, "stage1", steps=10)
    out, log = run(tmp_path, "stage2", "--init", str(first), "--passkey-share", "0.5", steps=10)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["init_from"] == str(first) and prov["init_provenance"]["steps"] == 10
    assert prov["config"]["layers"] == 1 and prov["config"]["passkey_share"] == 0.5
    a = AutoModelForCausalLM.from_pretrained(first, local_files_only=True).model.embed_tokens.weight
    b = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).model.embed_tokens.weight
    assert a.shape == b.shape and not bool((a == b).all())
    assert log[0]["loss"] < 6.0  # starts from trained weights, not from a random init (~ln 400 = 6.0)


def test_shipped_builtin_model_loads_and_meets_its_recorded_targets():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longrope.data.passkey import passkey_prompt
    from longrope.eval.passkey import parse_answer
    from longrope.models import BUILTIN_DIR, load_model, load_tokenizer

    size = sum(f.stat().st_size for f in BUILTIN_DIR.iterdir() if f.is_file())
    assert size <= 12e6
    model, tok = load_model("builtin"), load_tokenizer("builtin")
    stock = AutoModelForCausalLM.from_pretrained(BUILTIN_DIR, local_files_only=True)
    assert AutoTokenizer.from_pretrained(BUILTIN_DIR, local_files_only=True)("x 1")["input_ids"] == tok("x 1")["input_ids"]
    cfg = model.config
    assert (cfg.max_position_embeddings, cfg.head_dim, cfg.rope_parameters["rope_theta"]) == (256, 64, 10000.0)
    assert type(stock).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    for key, depth in ((31337, 0.2), (4242, 0.8), (50000, 0.5)):  # retrieval inside the window
        p = passkey_prompt(tok, 240, depth, key)
        out = model.generate(p.input_ids[None], attention_mask=torch.ones(1, len(p.input_ids), dtype=torch.long),
                             max_new_tokens=7, do_sample=False, pad_token_id=tok.pad_token_id)
        assert parse_answer(tok.decode(out[0, len(p.input_ids):], skip_special_tokens=True)) == key
    m = json.loads((BUILTIN_DIR / "measurements.json").read_text())
    assert m["passkey_window"]["accuracy"] >= 0.95 and m["passkey_window"]["trials"] >= 100
    assert m["long_ppl"]["ratio"] >= 1.5 and m["passkey_long"]["accuracy"] <= 0.5
    prov = json.loads((BUILTIN_DIR / "provenance.json").read_text())
    assert prov["command"].startswith("longrope pretrain") and prov["train_seconds"] <= 30 * 60
    assert "val_ppl_256" in m and (BUILTIN_DIR / "PROVENANCE.md").is_file()


def test_resume_keeps_the_answer_losses_not_yet_logged(tmp_path):
    extra = ("--eval-every", "2", "--checkpoint-every", "2", "--passkey-share", "0.5")
    _, whole = run(tmp_path, "a", *extra, steps=3)
    _, resumed = run(tmp_path, "a", *extra, "--resume", steps=3)  # from the step-2 checkpoint
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert [r["step"] for r in whole] == [2, 3] and "passkey_answer_loss" in whole[-1]
    assert drop(resumed) == drop(whole)  # the step-3 mean still covers steps 1-3


def test_the_command_line_defaults_are_the_dataclass_defaults():
    """Every option of `longrope pretrain` is a PretrainConfig field with its default, written once."""
    import dataclasses

    from longrope.cli import build_parser
    from longrope.commands.pretrain import MAIN, SIZE, TRAINING
    from longrope.pretrain import PretrainConfig

    args = build_parser().parse_args(["pretrain", "--out", "x"])
    fields = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    for name in MAIN + SIZE + TRAINING:
        assert name in fields and (getattr(args, name) == fields[name] or name == "out"), name
