"""`finetune --distill`: KL(frozen start || student) on original-window pieces with the original
rotation. The term's value and gradient (chunked, checkpointed) against a direct computation, zero when
the student is the teacher, pulling a perturbed student back, the pieces seeded by the batch plan, exact
resume after a real SIGKILL in one and in two processes, and one-line errors."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import longrope
from longrope import cli
from longrope.train.distill import DistillLoss, frozen_copy, pick_pieces
from tests.train.common import ft_args
from tests.helpers import cli_env, losses, make_tiny, run_group, save_tiny, spawn, torch_threads, write_texts


def args(model, texts, cache, out, *extra, **kw):
    return ft_args(model, texts, cache, out, "--distill", "1", "--distill-share", "0.5", *extra, **kw)


def _student_and_teacher(noise: float = 0.0):
    lm = make_tiny("llama")
    teacher = frozen_copy(lm)
    if noise:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(5)
            for p in lm.parameters():
                p.add_(noise * torch.randn(p.shape, generator=gen))
    lm.train()
    lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    longrope.apply(lm, "yarn:4")
    return lm, teacher


def _direct_kl(lm, teacher, ids):
    """The same KL without chunks, checkpointing or the module: both models unpatched, full logits."""
    scaling = longrope.patch.current(lm)
    longrope.remove(lm)
    try:
        s = F.log_softmax(lm(ids).logits.float(), -1)
    finally:
        if scaling is not None:  # apply(model, None) is refused: nothing to put back
            longrope.apply(lm, scaling)
    with torch.no_grad():
        t = F.log_softmax(teacher(ids).logits.float(), -1)
    return (t.exp() * (t - s)).sum()


@pytest.mark.parametrize("chunk", [0, 7])
def test_kl_term_matches_a_direct_computation_and_keeps_the_scaling(chunk):
    lm, teacher = _student_and_teacher(noise=0.02)
    ids = torch.randint(4, 128, (3, 32), generator=torch.Generator().manual_seed(1))
    loss = DistillLoss(lm, chunk, teacher)
    kl = loss.short_kl(ids)
    kl.backward()
    got = {n: p.grad.clone() for n, p in lm.named_parameters()}
    assert longrope.patch.current(lm).describe() == "yarn:4"  # the long rotation is back after the pass
    lm.zero_grad()
    ref = _direct_kl(lm, teacher, ids)
    ref.backward()
    assert kl.item() > 1e-3
    torch.testing.assert_close(kl, ref, rtol=1e-5, atol=1e-6)
    for n, p in lm.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-7, msg=n)
    assert all(p.grad is None for p in teacher.parameters())


def test_kl_is_zero_when_the_student_is_the_teacher():
    lm, teacher = _student_and_teacher()
    ids = torch.randint(4, 128, (2, 32), generator=torch.Generator().manual_seed(2))
    nll, count, kl, n = DistillLoss(lm, 16, teacher)(ids[:, :20], short_ids=ids)
    assert abs(kl.item()) < 1e-6 and n.item() == 64 and count.item() == 2 * 19 and nll.item() > 0


def test_the_term_pulls_a_perturbed_student_back_to_the_teacher():
    lm, teacher = _student_and_teacher(noise=0.05)
    ids = torch.randint(4, 128, (4, 32), generator=torch.Generator().manual_seed(3))
    loss = DistillLoss(lm, 16, teacher)
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    values = []
    for _ in range(8):
        kl = loss.short_kl(ids) / ids.numel()
        values.append(kl.item())
        opt.zero_grad()
        kl.backward()
        opt.step()
    assert values[-1] < 0.3 * values[0], values


def test_pieces_are_seeded_by_step_and_micro_batch():
    x = torch.arange(2 * 100).reshape(2, 100)
    a = pick_pieces(x, 16, 0.25, seed=0, step=3, micro=1)
    assert a.shape == (3, 16)  # 2 rows x 6 whole pieces, a quarter of them
    assert all(any(torch.equal(p, x.reshape(-1)[s:s + 16]) for s in range(0, 200, 1)) for p in a)
    assert torch.equal(a, pick_pieces(x, 16, 0.25, seed=0, step=3, micro=1))
    others = [pick_pieces(x, 16, 0.25, seed=0, step=s, micro=m) for s, m in ((4, 1), (3, 2), (5, 0))]
    assert any(not torch.equal(a, o) for o in others)
    assert pick_pieces(x, 16, 0.01, seed=0, step=0, micro=0).shape == (1, 16)  # at least one piece
    assert pick_pieces(x, 16, 1.0, seed=0, step=0, micro=0).shape == (12, 16)


def test_distill_keeps_the_short_window_closer_to_the_start(assets, tmp_path):
    """The same fine-tune with and without the term: with it, the tuned model's original-window
    logits stay closer to the starting model's."""
    from longrope.models import load_model

    model, texts, cache = assets
    plain = [a for a in args(model, texts, cache, tmp_path / "plain", steps=10, length=128)]
    i = plain.index("--distill")
    plain[i + 1] = "0"
    assert cli.main(plain) == 0
    assert cli.main(args(model, texts, cache, tmp_path / "kl", "--distill", "4", steps=10, length=128)) == 0
    rows = [json.loads(line) for line in (tmp_path / "kl.work" / "log.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5) and max(r["kl"] for r in rows) > 0
    assert json.loads((tmp_path / "kl" / "finetune.json").read_text())["config"]["distill"] == 4.0
    base = load_model(model)
    ids = torch.randint(4, 100, (4, 32), generator=torch.Generator().manual_seed(4))

    def drift(folder):
        return _direct_kl(load_model(folder), base, ids).item()

    assert drift(tmp_path / "kl") < 0.7 * drift(tmp_path / "plain")


def test_resume_with_distill_repeats_the_uninterrupted_run(assets, tmp_path):
    from safetensors.torch import load_file

    model, texts, cache = assets
    run = args(model, texts, cache, tmp_path / "out", "--checkpoint-every", "3", steps=6)
    assert cli.main(run) == 0
    full = [json.loads(line) for line in (tmp_path / "out.work" / "log.jsonl").read_text().splitlines()]
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert cli.main(run + ["--resume"]) == 0
    again = [json.loads(line) for line in (tmp_path / "out.work" / "log.jsonl").read_text().splitlines()]
    assert [(r["loss"], r["kl"]) for r in again] == [(r["loss"], r["kl"]) for r in full]
    resumed = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)


def _kill_after_first_checkpoint(cmd, work: Path, timeout: float = 180):
    with spawn(cmd, env=cli_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        deadline = time.time() + timeout
        while not (work / "checkpoint" / "state.json").is_file():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, f"no checkpoint within {timeout} s"
            time.sleep(0.02)
    # leaving `spawn` SIGKILLs the whole process group (torchrun and its workers included)
    return json.loads((work / "checkpoint" / "state.json").read_text())["step"]


def test_killed_distill_finetune_resumes_to_the_same_weights(assets, tmp_path):
    from safetensors.torch import load_file

    model, texts, cache = assets
    out, work = tmp_path / "out", tmp_path / "out.work"
    run = args(model, texts, cache, out, "--checkpoint-every", "5", steps=30)
    cmd = [sys.executable, "-m", "longrope", *run]
    at_kill = _kill_after_first_checkpoint(cmd, work)
    assert 5 <= at_kill < 30 and not (out / "config.json").exists()
    done = run_group(cmd + ["--resume"], env=cli_env(1), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch_threads(1):
        assert cli.main(args(model, texts, cache, tmp_path / "ref", "--checkpoint-every", "0", steps=30)) == 0
    assert losses(work / "log.jsonl") == losses(tmp_path / "ref.work" / "log.jsonl")
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_killed_and_resumed_give_the_single_process_run(tmp_path):
    """About 60 s: two torchrun launches."""
    from safetensors.torch import load_file

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    model, texts, cache = save_tiny(tmp_path / "model", bos=False), write_texts(tmp_path / "texts"), tmp_path / "c"
    common = args(model, texts, cache, tmp_path / "two", "--checkpoint-every", "4", "--batch-size", "4",
                  steps=12)[1:]
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "longrope", "finetune", *common]
    at_kill = _kill_after_first_checkpoint(cmd, tmp_path / "two.work", timeout=240)
    assert 4 <= at_kill < 12
    done = run_group(cmd + ["--resume"], env=cli_env(1), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = [a if a != str(tmp_path / "two") else str(tmp_path / "one") for a in common]
    with torch_threads(1):
        assert cli.main(["finetune", *one]) == 0
    rows = [[json.loads(line) for line in (tmp_path / f"{n}.work" / "log.jsonl").read_text().splitlines()]
            for n in ("one", "two")]
    assert [r["step"] for r in rows[1]] == list(range(1, 13))
    for key in ("loss", "kl"):
        torch.testing.assert_close(torch.tensor([r[key] for r in rows[1]]), torch.tensor([r[key] for r in rows[0]]),
                                   atol=1e-5, rtol=0)
    w1, w2 = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("one", "two"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)


def test_the_ablation_recipes_differ_only_in_their_lever():
    """src/longrope/recipes/ablation: every arm loads, and apart from the lever (mixed_window, distill,
    a short stage) the arms are the same run."""
    from longrope.recipe import load_recipe

    folder = Path(longrope.__file__).parent / "recipes" / "ablation"
    arms = {p.stem: load_recipe(str(p)) for p in sorted(folder.glob("short-*.yaml")) if p.stem != "short-base"}
    assert {"short-plain", "short-mixed", "short-short", "short-distill", "short-distill-short"} <= set(arms)
    levers = ("mixed_window", "distill", "distill_share")

    def common(recipe):
        stages = [(s.kind, {k: v for k, v in s.options.items() if k not in levers}) for s in recipe.stages
                  if s.kind != "short"]
        return recipe.model, recipe.data, recipe.seed, stages

    plain = common(arms["short-plain"])
    assert all(common(r) == plain for r in arms.values())
    assert arms["short-distill"].stages[0].options["distill"] > 0
    assert [s.kind for s in arms["short-distill-short"].stages] == ["finetune", "search", "short", "compare"]


def test_distill_with_mixed_windows_scores_the_pieces_with_the_original_rotation(assets, tmp_path, monkeypatch):
    """Both levers at once: the KL pass runs unscaled after long and after short micro-batches alike."""
    seen = []  # (rotary module before the KL pass, during it, after it)
    real = DistillLoss.short_kl

    def spy(self, ids, pos=None):
        decoder, during = self.lm.get_decoder(), []
        before = type(decoder.rotary_emb).__name__
        hook = decoder.register_forward_pre_hook(lambda m, a: during.append(type(m.rotary_emb).__name__))
        try:
            kl = real(self, ids, pos)
        finally:
            hook.remove()
        seen.append((before, *during, type(decoder.rotary_emb).__name__))
        return kl

    monkeypatch.setattr(DistillLoss, "short_kl", spy)
    model, texts, cache = assets
    assert cli.main(args(model, texts, cache, tmp_path / "o", "--mixed-window", "0.5", steps=4)) == 0
    rows = [json.loads(line) for line in (tmp_path / "o.work" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["kl"] >= 0 for r in rows) and rows[-1]["kl"] > 0
    assert len(seen) == 2 * 4 and {s[1] for s in seen} == {"LlamaRotaryEmbedding"}  # the original rotation
    assert all(s[0] == s[2] for s in seen)  # the micro-batch's own rotation is back afterwards
    assert {s[0] for s in seen} == {"ScaledRotaryEmbedding", "LlamaRotaryEmbedding"}  # long and short ones
