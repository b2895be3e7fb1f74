"""`longrope finetune` on a tiny Llama: chunked loss, loss going down, exact resume (in-process and
after a real SIGKILL), the output folder, mixed-window training and one-line user errors."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from longrope import cli, patch
from longrope.train.config import FinetuneConfig, lr_factor
from longrope.train.data import BatchPlan, short_pieces
from longrope.train.loss import CausalLMLoss
from tests.train.common import ft_args as args
from tests.helpers import cli_env, losses, make_tiny, run_group, spawn, torch_threads


@pytest.mark.parametrize("scaling", ["none", "yarn:4"])
@pytest.mark.parametrize("chunk", [0, 7, 64])
def test_chunked_loss_matches_the_model_loss_and_gradients(scaling, chunk):
    import longrope

    lm = longrope.apply(make_tiny("llama", window=16), scaling).train()
    ids = torch.randint(0, 128, (2, 45), generator=torch.Generator().manual_seed(3))
    ref = lm(input_ids=ids, labels=ids).loss
    ref.backward()
    ref_grads = [p.grad.clone() for p in lm.parameters()]
    lm.zero_grad(set_to_none=True)
    nll, count = CausalLMLoss(lm, chunk)(ids)
    loss = nll / count
    loss.backward()
    assert int(count) == 2 * 44
    assert abs(loss.item() - ref.item()) < 1e-5
    for p, g in zip(lm.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_lr_schedule_warms_up_then_decays_linearly():
    cfg = FinetuneConfig(out="x", steps=10, warmup=2, lr=2e-5)
    f = [lr_factor(s, cfg) for s in range(10)]
    assert f[:3] == [0.5, 1.0, 1.0] and all(a > b for a, b in zip(f[2:], f[3:])) and f[-1] == pytest.approx(0.125)
    assert FinetuneConfig(out="x", steps=500).warmup_steps == 20 and FinetuneConfig(out="x", steps=50).warmup_steps == 5


def test_process_shares_make_up_the_single_process_batch():
    samples = torch.arange(10 * 4).reshape(10, 4)
    cfg = FinetuneConfig(out="x", length=4, steps=7, batch_size=4, micro_batch=1, seed=5)
    one = BatchPlan(samples, cfg, 0, 1)
    two = [BatchPlan(samples, cfg, r, 2) for r in range(2)]
    seen = []
    for step in range(7):  # 28 samples from 10: three epochs, each a different seeded order
        single = torch.cat([x for x, _ in one.micro_batches(step)])
        shared = torch.cat([x for r in two for x, _ in r.micro_batches(step)])
        assert torch.equal(single, shared)
        seen.append(single[:, 0] // 4)
    order = torch.cat(seen)
    assert sorted(order[:10].tolist()) == list(range(10)) and not torch.equal(order[:10], order[10:20])
    with pytest.raises(Exception, match="cannot be split over 3 processes"):
        BatchPlan(samples, cfg, 0, 3)


def test_loss_decreases_and_the_output_folder_is_complete(assets, tmp_path, capsys):
    from longrope.models import load_model
    from longrope.rope.files import load_scaling

    model, texts, cache = assets
    out = tmp_path / "out"
    assert cli.main(args(model, texts, cache, out, steps=12)) == 0
    assert "wrote" in capsys.readouterr().out
    log = losses(tmp_path / "out.work" / "log.jsonl")
    assert len(log) == 12
    assert sum(log[-3:]) / 3 < log[0] - 0.3, log
    assert losses(out / "finetune_log.jsonl") == log
    scaling = load_scaling(out / "longrope_scaling.json")
    assert scaling.describe() == "yarn:2" and scaling.provenance["finetuned"]["length"] == 64
    assert scaling.provenance["finetuned"]["passkey_share"] == 0.0
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["steps"] == 12 and summary["tokens_seen"] == 12 * 2 * 63 and summary["processes"] == 1
    # it names the training documents it used (all from the train split), with their token counts
    names = {d["name"] for d in summary["documents"]}
    assert names and all(d["tokens"] > 0 for d in summary["documents"])
    from longrope.data import load_documents
    assert names <= {d.name for d in load_documents(str(texts), "train")}
    assert not names & {d.name for d in load_documents(str(texts), "test")}
    tuned, base = load_model(out), load_model(model)
    assert not torch.equal(tuned.lm_head.weight, base.lm_head.weight)
    assert (out / "tokenizer.json").is_file()
    # the folder is a plain model: loading it does not apply the scaling; `longrope export` makes it stock
    assert cli.main(["export", "--model", str(out), "--scaling", f"longrope:{out / 'longrope_scaling.json'}",
                     "--out", str(tmp_path / "stock")]) == 0
    cfg = json.loads((tmp_path / "stock" / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_type"] == "yarn" and cfg["rope_parameters"]["factor"] == 2.0


def test_resume_from_a_checkpoint_repeats_the_uninterrupted_run(assets, tmp_path):
    from safetensors.torch import load_file

    model, texts, cache = assets
    out = tmp_path / "out"
    run = args(model, texts, cache, out, "--checkpoint-every", "3", "--micro-batch", "1", steps=6)
    assert cli.main(run) == 0
    full = losses(tmp_path / "out.work" / "log.jsonl")
    weights = load_file(str(out / "model.safetensors"))
    state = json.loads((tmp_path / "out.work" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3  # the last checkpoint before the end; steps 4..6 are redone below
    assert cli.main(run + ["--resume"]) == 0
    resumed = losses(tmp_path / "out.work" / "log.jsonl")
    assert resumed == full  # bit-identical: steps 1-3 kept, 4-6 recomputed from the checkpoint
    again = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_resume_refuses_changed_settings_and_a_missing_checkpoint(assets, tmp_path, capsys):
    model, texts, cache = assets
    out = tmp_path / "out"
    assert cli.main(args(model, texts, cache, out, "--checkpoint-every", "2", steps=3)) == 0
    capsys.readouterr()
    assert cli.main(args(model, texts, cache, out, "--checkpoint-every", "2", "--resume", steps=3,
                         length=48)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("longrope finetune: error: cannot resume") and "length" in err and "\n" not in err
    assert cli.main(args(model, texts, cache, tmp_path / "new", "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_killed_finetune_resumes_and_finishes(assets, tmp_path):
    model, texts, cache = assets
    out, work = tmp_path / "out", tmp_path / "out.work"
    run = args(model, texts, cache, out, "--checkpoint-every", "10", steps=80)
    cmd = [sys.executable, "-m", "longrope", *run]
    with spawn(cmd, env=cli_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        deadline = time.time() + 120
        while not (work / "checkpoint" / "state.json").is_file():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "config.json").exists()
    assert json.loads((out / ".longrope-run.json").read_text())["finished"] is False  # says it is unfinished
    at_kill = json.loads((work / "checkpoint" / "state.json").read_text())["step"]
    assert 10 <= at_kill < 80
    done = run_group(cmd + ["--resume"], env=cli_env(1), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 81))
    assert json.loads((out / "finetune.json").read_text())["steps"] == 80
    assert json.loads((out / ".longrope-run.json").read_text())["finished"] is True
    # the same run without the kill, in this process on one thread, gives the same losses
    with torch_threads(1):
        ref = tmp_path / "ref"
        assert cli.main(args(model, texts, cache, ref, "--checkpoint-every", "0", steps=80)) == 0
    torch.testing.assert_close(torch.tensor([r["loss"] for r in rows]),
                               torch.tensor(losses(tmp_path / "ref.work" / "log.jsonl")), atol=1e-6, rtol=0)


def test_mixed_window_trains_short_pieces_with_the_original_rotation(assets, tmp_path, monkeypatch):
    x = torch.arange(2 * 70).reshape(2, 70)
    assert torch.equal(short_pieces(x, 32), torch.cat([x[:, :32], x[:, 32:64]], dim=1).reshape(4, 32))
    cfg = FinetuneConfig(out="x", steps=50, batch_size=8, mixed_window=0.25, seed=1)
    flags = [f for s in range(50) for f in BatchPlan(torch.zeros(8, 4), cfg, 0, 1).short_flags(s)]
    assert 0.15 < sum(flags) / len(flags) < 0.35
    seen, modules = [], set()  # (rotation in force, sequence length) of every forward pass; patch modules
    real, real_apply, applied = CausalLMLoss.forward, patch.apply, []

    def spy(self, input_ids, *a, **k):
        rotary = self.lm.get_decoder().rotary_emb  # the patch's module, or the model's own swapped in
        seen.append((rotary.scaling.describe() if hasattr(rotary, "scaling") else "original", input_ids.shape[1]))
        if hasattr(rotary, "scaling"):
            modules.add(id(rotary))
        return real(self, input_ids, *a, **k)

    monkeypatch.setattr(CausalLMLoss, "forward", spy)
    monkeypatch.setattr(patch, "apply", lambda *a, **k: applied.append(1) or real_apply(*a, **k))
    model, texts, cache = assets
    assert cli.main(args(model, texts, cache, tmp_path / "o", "--mixed-window", "0.5", steps=4)) == 0
    assert set(seen) == {("original", 32), ("yarn:2", 64)}, seen
    # the patch is applied once: a short micro-batch swaps the model's own module in and back, and
    # every long pass runs the same patch module (its tables are not rebuilt)
    assert len(applied) == 1 and len(modules) == 1


@pytest.mark.parametrize("change, message", [
    (["--model", "MISSING"], "model folder not found"),
    (["--steps", "0"], "--steps must be positive"),
    (["--length", "20000"], "tokens to join into 20,000-token samples"),
    (["--batch-size", "8", "--length", "3000"], "fewer than one batch of 8"),
    (["--batch-size", "3", "--micro-batch", "2"], "not a multiple of --micro-batch"),
    (["--scaling", "warp:2"], "warp"),
    (["--passkey-share", "1.5"], "--passkey-share must be in [0, 1)"),
    (["--passkey-share", "0.5"], "64-token sample cannot hold a passkey prompt"),
    (["--distill", "-1"], "--distill must be a number >= 0"),
    (["--distill", "nan"], "--distill must be a number >= 0"),
    (["--distill", "1", "--distill-share", "0"], "--distill-share must be in (0, 1]"),
    (["--distill", "1", "--distill-share", "1.5"], "--distill-share must be in (0, 1]"),
])
def test_bad_input_is_one_line_and_exit_2(assets, tmp_path, capsys, change, message):
    model, texts, cache = assets
    argv = args(model, texts, cache, tmp_path / "o")
    for i in range(0, len(change), 2):
        if change[i] in argv:
            argv[argv.index(change[i]) + 1] = change[i + 1]
        else:
            argv += change[i:i + 2]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("longrope finetune: error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "o").exists()


def test_bf16_autocast_trains_close_to_float32(assets, tmp_path):
    model, texts, cache = assets
    assert cli.main(args(model, texts, cache, tmp_path / "f32", steps=3)) == 0
    assert cli.main(args(model, texts, cache, tmp_path / "b16", "--bf16", steps=3)) == 0
    f32, b16 = losses(tmp_path / "f32.work" / "log.jsonl"), losses(tmp_path / "b16.work" / "log.jsonl")
    assert b16 != f32  # autocast really ran in bfloat16 ...
    torch.testing.assert_close(torch.tensor(b16), torch.tensor(f32), atol=0.05, rtol=0)  # ... and trains the same


def test_passkey_share_puts_answered_prompts_into_the_training_samples(assets, tmp_path):
    from longrope.data.passkey import QUESTION
    from longrope.models import load_tokenizer
    from longrope.train.data import training_samples

    model, texts, cache = assets
    tok = load_tokenizer(str(model))
    cfg = FinetuneConfig(out=str(tmp_path / "o"), model=str(model), data=str(texts), cache_dir=str(cache),
                         length=600, steps=4, batch_size=2, passkey_share=0.5)
    plain, _ = training_samples(FinetuneConfig(**{**cfg.__dict__, "passkey_share": 0.0}), tok)
    mixed, _ = training_samples(cfg, tok)
    assert mixed.shape == plain.shape == (8, 600)
    texts_out = [tok.decode(r) for r in mixed]
    with_key = [t for t in texts_out if QUESTION in t]
    assert len(with_key) == 4
    assert all(t.split(QUESTION, 1)[1].startswith(" " + t.split("The pass key is ", 1)[1].split(".")[0] + ".")
               for t in with_key)  # the answer follows the question
    assert torch.equal(training_samples(cfg, tok)[0], mixed)
    # the share is part of the trajectory: a resume with another share is refused
    assert "passkey_share" in cfg.fingerprint()


def test_a_resume_without_optimizer_state_notes_it_through_the_log_callback(assets, tmp_path, capsys):
    from longrope.train.finetune import finetune

    model, texts, cache = assets

    def cfg():
        return FinetuneConfig(out=str(tmp_path / "o"), model=str(model), data=str(texts), cache_dir=str(cache),
                              scaling="yarn:2", length=64, steps=2, batch_size=2, lr=1e-3, warmup=1,
                              checkpoint_every=1)

    notes = []
    with torch_threads(1):
        finetune(cfg(), progress=False)
        (tmp_path / "o.work" / "checkpoint" / "optimizer.pt").unlink()  # as a sharded engine saves it
        capsys.readouterr()
        summary = finetune(cfg(), resume=True, progress=False, log=notes.append)
    assert summary["steps"] == 2 and len(notes) == 1 and "AdamW moments restart" in notes[0]
    assert "AdamW" not in capsys.readouterr().err  # the library itself prints nothing
