"""The engine `longrope finetune` runs is the one asked for, or a one-line refusal: accelerate's silent CPU
fallbacks (DeepSpeed, context parallelism, FSDP1 -> DDP) are caught; the shipped DeepSpeed config
builds accelerate's DeepSpeedPlugin through `accelerate launch` (no GPU needed for that)."""
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from longrope import cli

from tests.helpers import cli_env, run_group
from tests.train.common import ft_args

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "longrope" / "recipes" / "accelerate"


@pytest.mark.parametrize("env, extra, message", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, [], "asks for DeepSpeed, which runs on GPUs only"),
    ({"PARALLELISM_CONFIG_CP_SIZE": "2"}, [], r"context parallelism \(cp_size 2\) runs only on CUDA"),
    ({"PARALLELISM_CONFIG_SP_SIZE": "2"}, [], "pass --sequence-parallel N instead"),
    ({"ACCELERATE_USE_FSDP": "true"}, [], "FSDP shards over several processes"),
    ({}, ["--fsdp"], "FSDP shards over several processes"),
])
def test_an_engine_that_would_fall_back_is_refused_in_one_line(assets, tmp_path, monkeypatch, capsys, env, extra,
                                                                message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    model, texts, cache = assets
    assert cli.main(ft_args(model, texts, cache, tmp_path / "o", *extra, steps=2)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "o" / "finetune.json").exists()


def test_a_plain_run_records_the_single_engine(assets, tmp_path):
    model, texts, cache = assets
    assert cli.main(ft_args(model, texts, cache, tmp_path / "o", steps=2)) == 0
    info = json.loads((tmp_path / "o" / "finetune.json").read_text())
    assert (info["engine"], info["engine_via"], info["processes"]) == ("single", "accelerate", 1)
    assert info["parameters_per_process"] == [info["parameters"]]


SCRIPT = """
import json, os
from accelerate.utils import DeepSpeedPlugin
from accelerate.utils.environment import parse_choice_from_env
plugin = DeepSpeedPlugin()  # what Accelerator() builds from the launcher's variables
steps = int(parse_choice_from_env("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", 1))  # as Accelerator.__init__ reads it
print(json.dumps({"config": plugin.deepspeed_config, "steps": steps, "stage": plugin.zero_stage}, default=str))
"""


def test_the_shipped_deepspeed_config_builds_accelerates_plugin(tmp_path):
    pytest.importorskip("deepspeed")  # accelerate launch refuses a DeepSpeed config without it
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate not installed")
    (tmp_path / "probe.py").write_text(SCRIPT)
    proc = run_group([accelerate, "launch", "--config_file", str(CONFIGS / "deepspeed_zero3.yaml"),
                      "--num_processes", "1", str(tmp_path / "probe.py")], env=cli_env(1), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    ds = out["config"]
    assert out["stage"] == 3 == ds["zero_optimization"]["stage"] and out["steps"] == 1
    assert isinstance(ds["gradient_accumulation_steps"], int)  # 'auto' there crashes Accelerator()
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # checkpoints gather
    assert ds["gradient_clipping"] == 1.0
