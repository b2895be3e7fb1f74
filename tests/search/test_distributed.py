"""`torchrun --nproc-per-node 2 longrope search` (gloo on CPU): candidates are shared between two
processes and the result is identical to a single-process run with the same seed. Both ranks append
to one score cache; a third run with that warm cache ends the same without a forward pass."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from longrope import cli

from tests.helpers import cli_env, run_group, save_tiny, torch_threads, write_texts

ARGS = ["--target-length", "128", "--docs", "3", "--population", "10", "--parents", "5",
        "--mutations", "4", "--crossovers", "4", "--iterations", "4", "--seed", "11"]


def outputs(out: Path):
    state = json.loads((out / "state.json").read_text())
    state.pop("seconds")
    scored = state.pop("scored_here")
    state.pop("forward_passes"), state.pop("cache_hits")
    world = state["info"].pop("world")
    return json.loads((out / "factors.json").read_text()), (out / "history.jsonl").read_text(), state, world, scored


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_give_the_single_process_result(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    model, texts = save_tiny(tmp_path / "model"), write_texts(tmp_path / "texts", n=4)
    common = ["--model", str(model), "--data", str(texts), *ARGS]
    proc = run_group([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "longrope", "search",
                      *common, "--out", str(tmp_path / "two"), "--cache", str(tmp_path / "c")],
                     env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best ppl") == 1  # only rank 0 reports (and writes)
    with torch_threads(1):
        assert cli.main(["search", *common, "--out", str(tmp_path / "one"), "--no-cache"]) == 0
        assert cli.main(["search", *common, "--out", str(tmp_path / "warm"), "--cache", str(tmp_path / "c")]) == 0
    two, one = outputs(tmp_path / "two"), outputs(tmp_path / "one")
    assert two[3] == 2 and one[3] == 1
    assert one[4] <= two[4] <= 1.1 * one[4]  # every process counted (each keeps its own sample cache)
    assert two[0] == one[0] and two[1] == one[1] and two[2] == one[2]
    warm = outputs(tmp_path / "warm")
    assert warm[4] == 0 and warm[0] == one[0] and warm[1] == one[1] and warm[2] == one[2]
    hits = json.loads((tmp_path / "warm" / "state.json").read_text())["cache_hits"]
    lines = [json.loads(x) for x in next((tmp_path / "c").glob("*.jsonl")).read_text().splitlines()]
    assert hits == len({(e["k"], e["s"]) for e in lines}) > 0  # every score came from the cache
