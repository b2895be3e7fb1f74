"""FSDP2 that really shards, on 2 CPU processes (gloo): `accelerate launch` with the shipped fsdp.yaml
(accelerate itself would drop FSDP on CPU; longrope then calls fully_shard) and `torchrun ... --fsdp`.
The losses and final weights equal a single-process run within 1e-5, each process holds half the
parameters, and a run killed after a checkpoint resumes, under FSDP, to the uninterrupted run's end
(the optimizer state included: the checkpoint holds full state dicts)."""
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from longrope import cli

from tests.helpers import cli_env, losses, run_group, save_tiny, spawn, torch_threads, write_texts

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
CONFIG = Path(__file__).resolve().parents[2] / "src" / "longrope" / "recipes" / "accelerate" / "fsdp.yaml"
TOL = dict(atol=1e-5, rtol=1e-4)


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """A single-process run (6 steps, checkpoints every 2) and the command line it came from."""
    root = tmp_path_factory.mktemp("fsdp")
    model, texts = save_tiny(root / "model", bos=False), write_texts(root / "texts")
    common = ["--model", str(model), "--data", str(texts), "--cache-dir", str(root / "cache"),
              "--scaling", "yarn:2", "--length", "64", "--steps", "6", "--batch-size", "4", "--lr", "1e-3",
              "--warmup", "1", "--checkpoint-every", "2", "--loss-chunk", "16", "--no-progress"]
    with torch_threads(1):
        assert cli.main(["finetune", *common, "--out", str(root / "one")]) == 0
    return root, common


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(folder / "model.safetensors"))


def _same_run(out: Path, ref_out: Path) -> None:
    torch.testing.assert_close(torch.tensor(losses(out.with_name(out.name + ".work") / "log.jsonl")),
                               torch.tensor(losses(ref_out.with_name(ref_out.name + ".work") / "log.jsonl")),
                               atol=1e-5, rtol=0)
    w, w_ref = _weights(out), _weights(ref_out)
    assert sorted(w) == sorted(w_ref)
    for k in w_ref:
        torch.testing.assert_close(w[k], w_ref[k], **TOL)


def test_accelerate_fsdp_config_on_cpu_shards_with_fully_shard(ref, tmp_path):
    root, common = ref
    out = tmp_path / "two"
    proc = run_group([_tool("accelerate"), "launch", "--config_file", str(CONFIG), "--num_processes", "2",
                      "-m", "longrope", "finetune", *common, "--out", str(out)],
                     env=cli_env(1), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "finetune.json").read_text())
    assert (info["engine"], info["engine_via"], info["processes"]) == ("fsdp2", "torch", 2)
    held, total = info["parameters_per_process"], info["parameters"]
    assert sum(held) == total and all(abs(n - total / 2) <= 0.02 * total for n in held)  # each half
    _same_run(out, root / "one")
    # the sharded run's step-4 checkpoint (full state dicts) resumes in one process to the same end
    with torch_threads(1):
        assert cli.main(["finetune", *common, "--out", str(out), "--resume"]) == 0
    _same_run(out, root / "one")
    assert json.loads((out / "finetune.json").read_text())["engine"] == "single"


def test_fsdp_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_end(ref, tmp_path):
    root, common = ref
    out, state = tmp_path / "two", tmp_path / "two.work" / "checkpoint" / "state.json"
    cmd = [_tool("torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "longrope", "finetune", *common,
           "--fsdp", "--out", str(out)]
    with open(tmp_path / "err", "w") as err, spawn(cmd, env=cli_env(1), stdout=err, stderr=err) as proc:
        deadline = time.time() + 240
        while not state.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
    assert state.is_file(), (tmp_path / "err").read_text()[-3000:]  # killed (leaving spawn) once it exists
    step = json.loads(state.read_text())["step"]
    assert step in (2, 4) and not (out / "finetune.json").exists()
    proc = run_group(cmd + ["--resume"], env=cli_env(1), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "finetune.json").read_text())["engine"] == "fsdp2"
    _same_run(out, root / "one")
