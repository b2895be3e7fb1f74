"""The training toolkit shared by fine-tuning and pre-training: schedule shapes, optimizer groups,
checkpoint round trip (weights, optimizer, scheduler, RNG, data generator) and log truncation."""
import json
import math

import pytest
import torch

from longrope.errors import LongRopeError
from longrope.train.toolkit import (RunFolder, adamw, load_state, load_weights, lr_at, read_optimizer,
                                    save_checkpoint)


def test_lr_shapes_warm_up_then_decay_linearly_or_by_cosine():
    kw = dict(steps=10, warmup=2, min_ratio=0.1)
    lin = [lr_at(s, 2.0, shape="linear", **kw) for s in range(10)]
    cos = [lr_at(s, 2.0, shape="cosine", **kw) for s in range(10)]
    assert lin[:2] == cos[:2] == [1.0, 2.0]
    assert all(a > b for a, b in zip(lin[2:], lin[3:])) and all(a > b for a, b in zip(cos[2:], cos[3:]))
    assert lr_at(10, 2.0, shape="cosine", **kw) == pytest.approx(0.2)  # min_ratio x peak at the end
    assert cos[6] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert lin[-1] == pytest.approx(2.0 * (0.1 + 0.9 * 1 / 8))
    with pytest.raises(ValueError, match="shape"):
        lr_at(5, 1.0, shape="step", **kw)


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model[1].weight.requires_grad_(False)
    groups = adamw(model, 1e-3, 0.1).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [len(g["params"]) for g in groups] == [1, 2]  # Linear.weight | Linear.bias, LayerNorm.bias


STATE = {"step": 1, "tokens": 8, "seconds": 0.5}


def test_checkpoint_round_trip_restores_everything_a_resume_needs(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = adamw(model, 1e-2, 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    gen = torch.Generator().manual_seed(7)
    ckpt = tmp_path / "work" / "checkpoint"
    save_checkpoint(ckpt, model.state_dict(), STATE, optimizer=opt.state_dict(), scheduler=sched, generator=gen)
    expect = (torch.rand(3), torch.rand(3, generator=gen), model.weight.detach().clone())

    other = torch.nn.Linear(4, 4)
    opt2 = adamw(other, 1e-2, 0.0)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    gen2 = torch.Generator().manual_seed(99)
    load_weights(ckpt, other)
    opt2.load_state_dict(read_optimizer(ckpt))
    load_state(ckpt, scheduler=sched2, generator=gen2)
    assert torch.equal(torch.rand(3), expect[0]) and torch.equal(torch.rand(3, generator=gen2), expect[1])
    assert torch.equal(other.weight, expect[2]) and sched2.last_epoch == 1
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert RunFolder(tmp_path / "out", tmp_path / "work").read_state() == STATE


@pytest.mark.parametrize("text,why", [('{"step": 1}', "missing tokens, seconds"), ("[1]", "not a JSON object"),
                                      ('{"step": 1', "cannot read")])
def test_a_damaged_state_file_is_one_line_before_any_work(tmp_path, text, why):
    run = RunFolder(tmp_path / "out")
    run.checkpoint.mkdir(parents=True)
    (run.checkpoint / "state.json").write_text(text)
    with pytest.raises(LongRopeError, match=why):
        run.check_resume(True)


def test_run_folder_resume_check_and_log_truncation(tmp_path):
    run = RunFolder(tmp_path / "out")
    assert run.work == tmp_path / "out.work" and run.log == run.work / "log.jsonl"
    with pytest.raises(LongRopeError, match="nothing to resume"):
        run.check_resume(True)
    run.check_resume(False)
    run.start(False, 0)
    run.log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)) + "\n")
    run.start(True, 3)  # a resume from step 3: later lines (and blank ones) go
    assert [json.loads(x)["step"] for x in run.log.read_text().splitlines()] == [1, 2, 3]
    run.start(False, 0)  # a fresh run drops the old log
    assert not run.log.exists()


@pytest.mark.parametrize("part", ["optimizer.pt", "scheduler.pt", "rng.pt"])
def test_a_damaged_checkpoint_part_is_one_line(tmp_path, part):
    model = torch.nn.Linear(4, 4)
    opt = adamw(model, 1e-2, 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ckpt = tmp_path / "checkpoint"
    save_checkpoint(ckpt, model.state_dict(), STATE, optimizer=opt.state_dict(), scheduler=sched,
                    generator=torch.Generator())
    data = (ckpt / part).read_bytes()
    (ckpt / part).write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    with pytest.raises(LongRopeError, match=part.replace(".", r"\.")) as e:
        read_optimizer(ckpt)
        load_state(ckpt, scheduler=sched, generator=torch.Generator())
    assert "\n" not in str(e.value)


def test_weights_whose_names_do_not_match_are_refused_in_one_line(tmp_path):
    from safetensors.torch import save_file

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    ckpt = tmp_path / "checkpoint"
    save_checkpoint(ckpt, model.state_dict(), STATE)
    before = model[0].weight.detach().clone()
    prefixed = {"lm." + k: v for k, v in model.state_dict().items()}  # as a wrapper's state dict names them
    save_file({k: v.clone() for k, v in prefixed.items()}, str(ckpt / "model.safetensors"))
    torch.nn.init.zeros_(model[0].weight)
    with pytest.raises(LongRopeError, match="4 missing names, e.g. 0.weight.*4 unexpected names, e.g. lm.0.") as e:
        load_weights(ckpt, model)
    assert "\n" not in str(e.value) and torch.equal(model[0].weight, torch.zeros(4, 4))  # nothing loaded
    partial = {k: v for k, v in model.state_dict().items() if k != "1.bias"}
    save_file({k: v.clone() for k, v in partial.items()}, str(ckpt / "model.safetensors"))
    with pytest.raises(LongRopeError, match="1 missing name, e.g. 1.bias"):
        load_weights(ckpt, model)
    save_file({k: v.clone() for k, v in {**model.state_dict(), "0.weight": torch.ones(3)}.items()},
              str(ckpt / "model.safetensors"))
    with pytest.raises(LongRopeError, match="does not fit the model"):
        load_weights(ckpt, model)
    assert before.shape == (4, 4)


def test_tied_weights_are_stored_once_and_load_back(tmp_path):
    emb, head = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied, as in tie_word_embeddings
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    save_checkpoint(tmp_path / "c", model.state_dict(), STATE)
    from safetensors.torch import load_file
    assert list(load_file(str(tmp_path / "c" / "model.safetensors"))) == ["emb.weight"]
    other = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 3), "head": torch.nn.Linear(3, 5, bias=False)})
    other["head"].weight = other["emb"].weight
    load_weights(tmp_path / "c", other)
    assert torch.equal(other["head"].weight, emb.weight)
