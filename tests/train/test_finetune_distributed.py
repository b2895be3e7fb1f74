"""`torchrun --nproc-per-node 2 longrope finetune` (accelerate, gloo on CPU): each process trains on its
share of every global batch, and the losses and weights are those of the single-process run."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from longrope import cli

from tests.helpers import cli_env, losses, run_group, save_tiny, torch_threads, write_texts


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_give_the_single_process_losses(tmp_path):
    from safetensors.torch import load_file

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    model, texts = save_tiny(tmp_path / "model", bos=False), write_texts(tmp_path / "texts")
    common = ["--model", str(model), "--data", str(texts), "--cache-dir", str(tmp_path / "cache"),
              "--scaling", "yarn:2", "--length", "64", "--steps", "5", "--batch-size", "4", "--lr", "1e-3",
              "--warmup", "1", "--checkpoint-every", "2", "--loss-chunk", "16", "--no-progress"]
    proc = run_group([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "longrope", "finetune",
                      *common, "--out", str(tmp_path / "two")], env=cli_env(1), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote") == 1  # only the main process reports and writes
    with torch_threads(1):
        assert cli.main(["finetune", *common, "--out", str(tmp_path / "one")]) == 0
    one, two = losses(tmp_path / "one.work" / "log.jsonl"), losses(tmp_path / "two.work" / "log.jsonl")
    assert len(one) == len(two) == 5 and one[-1] < one[0] - 0.2
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "two" / "finetune.json").read_text())["processes"] == 2
    w1, w2 = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)
    # the checkpoint the two processes wrote resumes in a single process to the same end
    assert cli.main(["finetune", *common, "--out", str(tmp_path / "two"), "--resume"]) == 0
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "two.work" / "log.jsonl")), torch.tensor(one),
                               atol=1e-5, rtol=0)
