"""`torchrun --nproc-per-node 2 -m longrope extend` (gloo on CPU): one process group for the whole recipe
(search -> finetune -> search -> short -> export -> compare), rank 0 writing, the others waiting; the
outputs equal a single-process run's, and `--resume` under the launcher finishes an interrupted run."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from longrope import cli

from tests.helpers import cli_env, run_group, save_tiny, torch_threads, write_texts

SEARCH = "docs: 2, population: 4, iterations: 1, parents: 2, mutations: 1, crossovers: 1, screen_docs: 0, patience: 0"
RECIPE = f"""name: tiny-launched
stages:
  - search: {{target_length: 64, {SEARCH}}}
  - finetune: {{length: 64, steps: 2, batch_size: 2, lr: 1.0e-3, checkpoint_every: 1}}
  - search: {{target_length: 96, seed_from: previous, {SEARCH}}}
  - short: {{{SEARCH}}}
  - export: {{drop_n_hat: true}}
  - compare: {{lengths: [32, 96], methods: [none, yarn], docs: 2, passkey_trials: 0, plots: false}}
"""
FACTORS = ("01-search/factors.json", "03-search/factors.json", "04-short/factors.json")


def _ppl(out: Path) -> dict:
    return json.loads((out / "06-compare" / "results.json").read_text())["ppl"]


def _torchrun() -> str:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    return torchrun


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_extend_under_torchrun_gives_the_single_process_outputs_and_resumes(tmp_path):
    from safetensors.torch import load_file

    torchrun = _torchrun()
    model, data = save_tiny(tmp_path / "m"), write_texts(tmp_path / "docs", n=8, words=400)
    (tmp_path / "r.yaml").write_text(RECIPE)
    common = ["extend", "--recipe", str(tmp_path / "r.yaml"), "--model", str(model), "--data", str(data)]
    two = tmp_path / "two"
    launch = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "longrope", *common, "--out", str(two)]
    proc = run_group(launch, env=cli_env(1), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1 and proc.stderr.count("[06-compare] finished") == 1  # rank 0 reports
    with torch_threads(1):
        assert cli.main([*common, "--out", str(tmp_path / "one")]) == 0
    one = tmp_path / "one"
    for name in FACTORS:  # the searches split candidates over the processes: the same factors
        assert (two / name).read_text().replace(str(two), str(one)) == (one / name).read_text(), name
    assert json.loads((two / "02-finetune" / "model" / "finetune.json").read_text())["processes"] == 2
    w1, w2 = (load_file(str(d / "02-finetune" / "model" / "model.safetensors")) for d in (one, two))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)
    exported = [(d / "05-export" / "model" / "config.json").read_text().replace(str(d), "DIR") for d in (one, two)]
    assert exported[0] == exported[1]
    assert _ppl(two).keys() == _ppl(one).keys() == {"none", "yarn", "longrope"}  # the export dropped nothing: longrope
    for method, by_length in _ppl(one).items():
        for length, value in by_length.items():
            assert _ppl(two)[method][length] == pytest.approx(value, rel=1e-4)
    # interrupted after the short search: its marker, the export and the compare gone
    (two / "04-short" / "done.json").unlink()
    shutil.rmtree(two / "05-export")
    shutil.rmtree(two / "06-compare")
    before = (two / "04-short" / "factors.json").read_bytes()
    proc = run_group(launch + ["--resume"], env=cli_env(1), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("done earlier, skipped") == 3 and proc.stdout.count("done:") == 1
    assert (two / "04-short" / "factors.json").read_bytes() == before and (two / "06-compare" / "done.json").is_file()
    assert _ppl(two).keys() == _ppl(one).keys()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_a_folder_held_by_another_run_stops_every_rank_at_once(tmp_path):
    """Only rank 0 takes the folder's lock; the others take its refusal instead of waiting for it."""
    from longrope.io import RunLock

    model, data = save_tiny(tmp_path / "m"), write_texts(tmp_path / "docs", n=4, words=200)
    (tmp_path / "r.yaml").write_text(f"name: held\nstages:\n  - search: {{target_length: 64, {SEARCH}}}\n")
    out = tmp_path / "held"
    out.mkdir()
    lock = RunLock(out)  # another run holds the folder
    try:
        proc = run_group([_torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "longrope", "extend",
                          "--recipe", str(tmp_path / "r.yaml"), "--model", str(model), "--data", str(data),
                          "--out", str(out)], env=cli_env(1), timeout=300)
    finally:
        lock.release()
    assert proc.returncode != 0
    assert proc.stderr.count("is in use by another longrope run") == 2, proc.stderr[-3000:]  # both ranks
    assert sorted(p.name for p in out.iterdir()) == [".longrope.lock"]  # nothing written
