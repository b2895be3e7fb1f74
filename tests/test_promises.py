"""The README's "What longrope promises", proven through the CLI (issue 29): single-file outputs never
replace a file unless --overwrite (and never a symbolic link or a folder), `extend` locks its folder
while it runs, and every command that loads a model takes the same model flags."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pytest

from longrope.cli import build_parser, main
from tests.helpers import cli_env, save_tiny, spawn, write_texts


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("promises")
    save_tiny(ws / "model")
    write_texts(ws / "texts", n=8, words=200)
    return ws


def _user_file(path: Path, text: str = '{"mine": true}\n') -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", ["eval", "inspect", "recipes"])
def test_single_file_outputs_need_overwrite(ws, tmp_path, capsys, kind):
    target = _user_file(tmp_path / ("mine.png" if kind == "inspect" else "mine.json"))
    argv = {"eval": ["eval", "ppl", "--model", str(ws / "model"), "--data", str(ws / "texts"), "--lengths", "32",
                     "--docs", "1", "--out", str(target)],
            "inspect": ["inspect", "yarn:4", "--head-dim", "16", "--plot", str(target)],
            "recipes": ["recipes", "copy", "builtin-8x", str(target)]}[kind]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "exists; pass --overwrite" in err and err.count("\n") == 1 and out == ""
    assert target.read_text() == '{"mine": true}\n'  # untouched, and nothing was computed
    assert main(argv + ["--overwrite"]) == 0
    assert target.read_bytes() != b'{"mine": true}\n'


def test_a_symbolic_link_is_never_replaced(ws, tmp_path, capsys):
    real = _user_file(tmp_path / "real.json")
    (tmp_path / "link.json").symlink_to(real)
    argv = ["eval", "ppl", "--model", str(ws / "model"), "--data", str(ws / "texts"), "--lengths", "32",
            "--docs", "1", "--out", str(tmp_path / "link.json"), "--overwrite"]
    assert main(argv) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert (tmp_path / "link.json").is_symlink() and real.read_text() == '{"mine": true}\n'


RECIPE = """name: slow
stages:
  - search: {target_length: 64, docs: 2, population: 8, parents: 4, mutations: 4, crossovers: 4, iterations: 50,
             screen_docs: 0, patience: 0, descent_steps: 0}
  - export: {drop_n_hat: true}
"""


def test_extend_locks_its_folder(ws, tmp_path, capsys):
    """While `extend --out X` runs, a second `extend --out X --resume` is refused in one line."""
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    argv = ["extend", "--recipe", str(recipe), "--model", str(ws / "model"), "--data", str(ws / "texts"),
            "--out", str(out)]
    with spawn([sys.executable, "-m", "longrope", *argv], env=cli_env(), stdout=open(tmp_path / "o", "w"),
               stderr=open(tmp_path / "e", "w")) as proc:
        deadline = time.time() + 120
        while not (out / "01-search" / "history.jsonl").is_file():  # the first run is inside its search
            assert proc.poll() is None, (tmp_path / "e").read_text()
            assert time.time() < deadline
            time.sleep(0.2)
        assert main(argv + ["--resume"]) == 2
        err = capsys.readouterr().err
        assert "in use by another longrope run" in err and f"pid {proc.pid}" in err and err.count("\n") == 1
        assert proc.poll() is None  # the first run goes on
    marker = json.loads((out / ".longrope-run.json").read_text())
    assert marker["kind"] == "extend" and marker["finished"] is False


MODEL_COMMANDS = [["extend"], ["finetune"], ["export"], ["inspect"], ["data", "stats"], ["data", "samples"],
                  ["search"], ["compare"], ["eval", "ppl"], ["eval", "passkey"], ["eval", "tasks"]]


def _subparser(parser: argparse.ArgumentParser, path: list[str]) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", MODEL_COMMANDS, ids=" ".join)
def test_every_command_that_loads_a_model_has_the_model_flags(path):
    options = {o for a in _subparser(build_parser(), path)._actions for o in a.option_strings}
    assert {"--model", "--dtype", "--device", "--trust-remote-code"} <= options


def test_the_model_flags_are_checked_and_used(ws, tmp_path, capsys):
    import torch
    from safetensors import safe_open

    if not torch.cuda.is_available():  # a device this machine lacks: one line, before any work
        for argv in (["inspect", "yarn:2", "--model", str(ws / "model"), "--device", "cuda"],
                     ["data", "stats", "--data", str(ws / "texts"), "--model", str(ws / "model"), "--device", "cuda"],
                     ["export", "--model", str(ws / "model"), "--scaling", "yarn:2", "--device", "cuda",
                      "--out", str(tmp_path / "x")]):
            assert main(argv) == 2
            assert "CUDA" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["export", "--model", str(ws / "model"), "--scaling", "yarn:2", "--dtype", "bfloat16",
                 "--device", "cpu", "--out", str(tmp_path / "bf16")]) == 0
    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert main(["export", "--model", str(ws / "model"), "--scaling", "yarn:2", "--dtype", "int3",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "unknown dtype" in capsys.readouterr().err
