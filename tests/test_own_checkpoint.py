"""A new user's path on their own checkpoint (issue 29): a tiny random Llama with a 4,096-token window
and a `.jsonl` of long documents, through the CLI exactly as docs/own-checkpoint.md writes it.

The fast test runs the documented commands with the recipe copied and its budgets cut (what the
guide tells a user to do for a first try); the slow one runs `--recipe builtin-8x` unedited (8x =
32,768 tokens). Both check that the report's `shipped` row is stock transformers on the exported
folder: the same perplexity, computed here without longrope."""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest
import yaml

from longrope.cli import main
from tests.helpers import save_tiny, torch_threads

WINDOW = 4096
CUT = {  # the budgets the fast test writes into the copied recipe (docs/own-checkpoint.md, "a first try")
    "search": {"target_length": "2x", "docs": 1, "population": 3, "parents": 1, "mutations": 1, "crossovers": 1,
               "iterations": 1, "descent_steps": 0, "screen_docs": 0},
    "short": {"docs": 1, "population": 2, "parents": 1, "mutations": 1, "crossovers": 0, "iterations": 0},
    "compare": {"lengths": ["1x", "2x"], "methods": ["none", "yarn"], "docs": 1, "passkey_trials": 1,
                "depths": [0.5], "plots": False},
}


def _workspace(tmp_path: Path, n: int = 20, words: int = 1800) -> tuple[Path, Path]:
    """A tiny Llama (window 4,096, 1 layer, 2 heads of 8) and `n` documents of `words` words (about
    6 characters, so tokens, each) as JSON Lines."""
    import random

    model = save_tiny(tmp_path / "llama", window=WINDOW, layers=1, heads=2, kv_heads=1, head_dim=8)
    rng = random.Random(0)
    vocab = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "seven", "blue"]
    data = tmp_path / "long-docs.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(rng.choice(vocab) for _ in range(words))}) + "\n"
                            for _ in range(n)))
    return model, data


def _cli(line: str, capsys) -> str:
    rc = main(shlex.split(line))
    out, err = capsys.readouterr()
    assert rc == 0, (line, err[-2000:])
    return out


def _stock_ppl(folder: Path, data: Path, lengths: list[int], docs: int, seed: int = 0) -> dict[int, float]:
    """Perplexity of `folder` in plain transformers (no longrope patch) on the samples compare uses."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longrope.data import load_tokenized
    from longrope.eval.compare import make_samples

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    base = make_samples(load_tokenized(tok, str(data), "test").ids, tok, max(lengths), docs, seed=seed)
    out = {}
    for n in lengths:
        nll, count = 0.0, 0
        for t in base.tensors:
            ids = t[:n][None]
            with torch.no_grad():
                logits = model(ids).logits.float()
            nll += torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
            count += n - 1
        out[n] = math.exp(nll / count)
    return out


def _check_report(out_dir: Path, data: Path, docs: int) -> dict:
    compare = next(out_dir.glob("*-compare"))
    results = json.loads((compare / "results.json").read_text())
    exported = next(out_dir.glob("*-export")) / "model"
    shipped = {int(n): v for n, v in results["ppl"]["shipped"].items()}
    stock = _stock_ppl(exported, data, sorted(shipped), docs)
    for n in shipped:
        assert shipped[n] == pytest.approx(stock[n], rel=1e-5), (n, shipped[n], stock[n])
    record = json.loads((exported / "longrope_scaling.json").read_text())
    assert record["n_hat"] == 0 and record["short_attention"] is None  # what the exported config computes
    # builtin-8x searches a short attention scale, which the stock format cannot hold
    assert "short_attention" in record["dropped"] and set(record["dropped"]) <= {"n_hat", "short_attention"}
    assert record["full"]["short_attention"] == record["dropped"]["short_attention"]["value"]
    report = (compare / "report.md").read_text()
    assert "What was shipped: `shipped`" in report and all(f"{k} = " in report for k in record["dropped"])
    assert "Perplexity of `shipped` against `longrope`" in report
    return results


def test_own_checkpoint_first_try(tmp_path, capsys, monkeypatch):
    """The documented commands on a 4,096-window model: list, show and copy the recipe, cut its budgets,
    dry-run, run; the report scores the export exactly as stock transformers runs it."""
    model, data = _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert "builtin-8x" in _cli("recipes list", capsys)
    assert "target_length: 8x" in _cli("recipes show builtin-8x", capsys)
    _cli("recipes copy builtin-8x my-8x.yaml", capsys)
    doc = yaml.safe_load(Path("my-8x.yaml").read_text())
    for stage in doc["stages"]:
        (kind, opts), = stage.items()
        opts.update(CUT.get(kind, {}))
    Path("my-8x.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = _cli(f"extend --recipe builtin-8x --model {model} --data {data} --out runs/mine --dry-run", capsys)
    assert "window 4096" in plan and "32768 tokens (s = 8)" in plan  # the unedited recipe follows the window
    plan = _cli(f"extend --recipe my-8x.yaml --model {model} --data {data} --out runs/mine --dry-run", capsys)
    assert "8192 tokens (s = 2)" in plan and not Path("runs/mine").exists()
    with torch_threads(1):
        _cli(f"extend --recipe my-8x.yaml --model {model} --data {data} --out runs/mine", capsys)
    results = _check_report(Path("runs/mine"), data, docs=1)
    assert set(results["ppl"]) == {"none", "yarn", "longrope", "shipped"}
    assert set(results["ppl"]["longrope"]) == {"4096", "8192"}
    # the run folder is finished and marked; a second run into it is refused, a resume skips everything
    assert json.loads(Path("runs/mine/.longrope-run.json").read_text())["finished"] is True
    assert main(shlex.split(f"extend --recipe my-8x.yaml --model {model} --data {data} --out runs/mine")) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_own_checkpoint_builtin_8x_verbatim(tmp_path, capsys, monkeypatch):
    """`--recipe builtin-8x` unedited on the 4,096-window model: search at 32,768 tokens (minutes). The
    test split (5% of 400 documents) holds the 8 x 32,768 tokens the comparison joins."""
    model, data = _workspace(tmp_path, n=400, words=2500)
    monkeypatch.chdir(tmp_path)
    _cli(f"extend --recipe builtin-8x --model {model} --data {data} --out runs/mine --dry-run", capsys)
    with torch_threads(2):
        _cli(f"extend --recipe builtin-8x --model {model} --data {data} --out runs/mine", capsys)
    results = _check_report(Path("runs/mine"), data, docs=8)
    assert set(results["ppl"]["shipped"]) == {"4096", "8192", "16384", "32768"}
