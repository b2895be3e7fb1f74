"""A real `longrope search` process killed with SIGKILL mid-run, then `--resume`: it must end with
exactly the factors, scores and history of an uninterrupted run with the same seed.

Only the killed run is a subprocess (it has to be killable); the uninterrupted run and the resume go
through the same CLI entry point in this process, which saves two interpreter start-ups."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from longrope import cli

from tests.helpers import cli_env, save_tiny, spawn, torch_threads, write_texts

ARGS = ["--target-length", "256", "--docs", "3", "--population", "12", "--parents", "6",
        "--mutations", "6", "--crossovers", "6", "--iterations", "10", "--patience", "0",
        "--screen-docs", "1", "--promote", "0.5", "--seed", "3"]


def search(*argv):
    """`longrope search` as a process in its own session; its group is killed on leaving the block."""
    return spawn([sys.executable, "-m", "longrope", "search", *argv], env=cli_env(),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def generation(out):
    try:
        return json.loads((out / "state.json").read_text())["evolution"]["generation"]
    except (OSError, ValueError, KeyError):
        return -1


def comparable(out):
    state = json.loads((out / "state.json").read_text())
    state.pop("seconds")
    state.pop("scored_here")
    return (json.loads((out / "factors.json").read_text()), (out / "history.jsonl").read_text(), state)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    model, texts = save_tiny(tmp_path / "model"), write_texts(tmp_path / "texts", n=4, words=400)
    common = ["--model", model, "--data", texts, *ARGS]
    killed_out = tmp_path / "killed"
    with search(*common, "--out", killed_out) as victim:
        deadline = time.time() + 120
        while generation(killed_out) < 3 and victim.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # somewhere inside the next generation
        assert victim.poll() is None, "the run finished before it could be killed: make it longer"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    killed_at = generation(killed_out)
    assert 3 <= killed_at < 10 and not json.loads((killed_out / "state.json").read_text())["done"]
    with torch_threads(1):
        assert cli.main(["search", "--out", str(killed_out), "--resume"]) == 0
        assert cli.main(["search", *map(str, common), "--out", str(tmp_path / "whole")]) == 0
    a, b = comparable(tmp_path / "whole"), comparable(killed_out)
    assert a[0]["long_factor"] == b[0]["long_factor"] and a[0]["n_hat"] == b[0]["n_hat"]
    assert a[0] == b[0]  # including the best ppl and the baselines in the provenance
    assert a[1] == b[1]  # every evaluation, same order, same scores
    assert a[2] == b[2]
