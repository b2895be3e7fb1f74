"""Sequence parallelism on 2 CPU processes (gloo has all_to_all): DeepSpeed's Ulysses attention, driven by
`longrope.train.sequence`. On the built-in model a sequence split over the processes gives the unsplit
hidden states, loss and gradients; `finetune --sequence-parallel 2` with --distill and --mixed-window
(the teacher and the original-window pieces on the same split) gives the single-process losses and
weights. What needs GPUs (flash attention inside the exchange, NCCL, speed, memory) is not shown here."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from longrope import cli

from tests.helpers import cli_env, losses, run_group, save_tiny, torch_threads, write_texts

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
WORKER = Path(__file__).with_name("sequence_worker.py")


def _torchrun() -> str:
    pytest.importorskip("deepspeed")
    path = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip("torchrun not installed")
    return path


def test_a_split_sequence_gives_the_unsplit_attention_loss_and_gradients(tmp_path):
    env = cli_env(1)
    env["PYTHONPATH"] += ":" + str(Path(__file__).resolve().parents[2])
    proc = run_group([_torchrun(), "--standalone", "--nproc-per-node", "2", str(WORKER), str(tmp_path), "512"],
                     env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert {r["rank"] for r in ranks} == {0, 1} and {r["attn"] for r in ranks} == {"longrope_ulysses"}
    for r in ranks:
        assert r["hidden_err"] <= 1e-4 * r["hidden_scale"]  # each slice attended over the whole sequence
        assert r["count"] == r["count_whole"] == 2 * 511
        assert abs(r["loss_split"] - r["loss_whole"]) <= 1e-5 * r["loss_whole"]
        assert r["grad_rel_err"] <= 1e-4


def test_finetune_with_a_sequence_split_distill_and_mixed_windows_matches_one_process(tmp_path):
    from safetensors.torch import load_file

    model, texts = save_tiny(tmp_path / "model", bos=False), write_texts(tmp_path / "texts")
    common = ["--model", str(model), "--data", str(texts), "--cache-dir", str(tmp_path / "cache"),
              "--scaling", "yarn:2", "--length", "64", "--steps", "4", "--batch-size", "2", "--lr", "1e-3",
              "--warmup", "1", "--loss-chunk", "16", "--distill", "0.5", "--mixed-window", "0.5", "--no-progress"]
    proc = run_group([_torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "longrope", "finetune", *common,
                      "--sequence-parallel", "2", "--out", str(tmp_path / "two")], env=cli_env(1), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch_threads(1):
        assert cli.main(["finetune", *common, "--out", str(tmp_path / "one")]) == 0
    info = json.loads((tmp_path / "two" / "finetune.json").read_text())
    assert (info["engine"], info["sequence_parallel"], info["processes"]) == ("ddp+sp2", 2, 2)
    rows = {n: [json.loads(x) for x in (tmp_path / f"{n}.work" / "log.jsonl").read_text().splitlines()]
            for n in ("one", "two")}
    assert rows["one"][-1]["kl"] > 0 and [r["tokens"] for r in rows["two"]] == [r["tokens"] for r in rows["one"]]
    for key in ("loss", "kl"):
        torch.testing.assert_close(torch.tensor([r[key] for r in rows["two"]]),
                                   torch.tensor([r[key] for r in rows["one"]]), atol=1e-5, rtol=1e-4)
    assert losses(tmp_path / "one.work" / "log.jsonl")[-1] < losses(tmp_path / "one.work" / "log.jsonl")[0]
    w1, w2 = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)
