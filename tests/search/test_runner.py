"""`longrope search` end to end on a tiny model: outputs, their meaning, errors, LongRoPE2 modes."""
import json
import math

import numpy as np
import pytest

from longrope import cli
from longrope.errors import LongRopeError
from longrope.search.config import SearchConfig
from longrope.search.runner import run_search
from longrope.search.setup import load_samples

from tests.helpers import save_tiny, torch_threads, write_texts

SMALL = dict(population=8, parents=4, mutations=3, crossovers=3, iterations=3, docs=3)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    return save_tiny(root / "model"), write_texts(root / "texts")


def cfg(files, **kw):
    model, texts = files
    return SearchConfig(**{"model": str(model), "data": str(texts), "target_length": 128, **SMALL, **kw})


def test_outputs_are_complete_and_factors_reproduce_the_reported_ppl(files, tmp_path):
    from longrope import patch
    from longrope.eval.perplexity import perplexity
    from longrope.models import load_model, load_tokenizer
    from longrope.rope.files import load_scaling

    out = tmp_path / "out"
    c = cfg(files)
    s = run_search(c, out, progress=False)
    assert {p.name for p in out.iterdir()} == {"factors.json", "history.jsonl", "state.json", "search.png"}
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sc = load_scaling(out / "factors.json")
    assert sc.method == "longrope" and len(sc.long_factor) == 8 and sc.factor == 4.0
    assert sc.n_hat == s["best"]["n_hat"] and sc.long_factor == s["best"]["factors"]
    assert all(a <= b for a, b in zip(sc.long_factor, sc.long_factor[1:]))
    assert all(1.0 <= x <= 5.0 for x in sc.long_factor)
    # the fitness is what it claims: the ppl of these factors on the validation samples
    model, tok = load_model(str(files[0])), load_tokenizer(str(files[0]))
    samples, _, _ = load_samples(c.resolved(), tok, model, c.docs)
    patch.apply(model, sc)
    assert perplexity(model, samples).ppl == pytest.approx(s["ppl"], rel=1e-6)
    # history: every evaluation once, the best full score is the reported one
    lines = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert len(lines) == s["evaluations"] + s["screened"]
    full = [x["ppl"] for x in lines if x["fidelity"] == "full"]
    assert min(full) == s["ppl"] and all(x["docs"] == 3 for x in lines if x["fidelity"] == "full")
    keys = [(x["fidelity"], tuple(x["factors"]), x["n_hat"]) for x in lines]
    assert len(keys) == len(set(keys))
    state = json.loads((out / "state.json").read_text())
    assert state["done"] and set(state["baselines"]) == {"pi", "ntk", "yarn"}
    # the state names the documents the samples hold: validation documents, with their token counts
    from longrope.data import load_tokenized
    validation = load_tokenized(tok, str(files[1]), "validation")
    counts = dict(zip(validation.names, map(len, validation.ids)))
    cited = state["info"]["documents"]
    assert cited and all(counts[d["name"]] == d["tokens"] for d in cited)


def test_paper_preset_scores_every_candidate_on_all_documents(files, tmp_path):
    s = run_search(cfg(files, preset="paper"), tmp_path / "o", progress=False)
    assert s["screened"] == 0 and s["evaluations"] == 8 + 3 * 6 and not s["stopped_early"]


def test_critical_dim_ntk_fixes_low_pairs_to_ntk_and_searches_the_rest(files, tmp_path):
    from longrope.rope.files import load_scaling
    from longrope.search.objective import seed_factors

    s = run_search(cfg(files, critical_dim="auto", critical_low="ntk"), tmp_path / "o", progress=False)
    # d 16, b 1e4, L 32: 2*ceil(8 * log_1e4(32 / 2pi)) = 2*ceil(1.41) = 4
    assert s["critical_dim"] == 4
    f = load_scaling(tmp_path / "o" / "factors.json").long_factor
    ntk = seed_factors(16, 10000.0, 32, 4.0)["ntk"]
    assert f[:2] == ntk[:2].tolist() and all(4.0 <= x <= 8.0 for x in f[2:])
    # a state saved before the LongRoPE2 options existed resumes as the NTK-fixed search it was
    from longrope.search.state import load_state
    path = tmp_path / "o" / "state.json"
    doc = json.loads(path.read_text())
    for k in ("critical_low", "critical_seeds", "needle_weight"):
        del doc["config"][k]
    path.write_text(json.dumps(doc))
    assert load_state(tmp_path / "o")["config"]["critical_low"] == "ntk"


def ramp_ok(f, cd, step=0.01):
    """the low pairs are lambda_cd ** (i / cd) up to the grid step"""
    return all(abs(f[i] - f[cd] ** (i / cd)) <= step / 2 + 1e-9 for i in range(cd)) and f[0] == 1.0


def test_cli_critical_dim_auto_puts_the_low_pairs_on_the_critical_factors_ramp(files, tmp_path, capsys):
    """Issue 26's acceptance: `longrope search --critical-dim auto` gives low pairs equal to
    lambda_cd^(i/cd) up to the grid step (LongRoPE2's code), the rest searched in [s, 2s]."""
    from longrope.rope.files import load_scaling

    model, texts = files
    out = tmp_path / "o"
    small = ["--population", 8, "--parents", 4, "--mutations", 3, "--crossovers", 3, "--iterations", 3,
             "--docs", 3, "--descent-steps", 3, "--no-cache"]
    rc, err = run_cli(["--model", model, "--data", texts, "--target-length", 128, "--critical-dim", "auto",
                       "--critical-seeds", "wide", "--out", out, *small], capsys)
    assert rc == 0, err
    f = load_scaling(out / "factors.json").long_factor
    assert ramp_ok(f, 2) and 4.0 <= f[2] and all(a <= b for a, b in zip(f, f[1:]))
    state = json.loads((out / "state.json").read_text())
    assert state["info"]["critical_dim"] == 4 and set(state["baselines"]) == {"pi", "ntk", "yarn"}
    assert sum(k.startswith("ntk-ramp:") for k in state["seeds"]) == 8
    # every candidate the search scored, not only the winner, is on the ramp
    for line in (out / "history.jsonl").read_text().splitlines():
        assert ramp_ok(json.loads(line)["factors"], 2)
    assert state["info"]["descent"]["held_pairs"] == 0 and ramp_ok(state["info"]["descent"]["factors"], 2, 1e-6)


def test_cli_critical_dim_sweep_searches_each_value_in_one_run_and_keeps_the_best(files, tmp_path, capsys):
    from longrope.rope.files import load_scaling

    model, texts = files
    out = tmp_path / "sw"
    base = ["--model", model, "--data", texts, "--target-length", 128, "--out", out, "--population", 6,
            "--parents", 3, "--mutations", 2, "--crossovers", 2, "--iterations", 2, "--docs", 2,
            "--descent-steps", 0, "--no-cache"]
    rc, err = run_cli([*base, "--critical-dim", "sweep"], capsys)
    assert rc == 0, err
    sweep = json.loads((out / "sweep.json").read_text())
    assert [r["critical_dim"] for r in sweep["values"]] == [4, 8] and sweep["done"]  # d_tcd = 4 first
    for r in sweep["values"]:
        sub = out / r["out"]
        f = load_scaling(sub / "factors.json").long_factor
        assert ramp_ok(f, r["critical_dim"] // 2)
        assert json.loads((sub / "state.json").read_text())["info"]["critical_dim"] == r["critical_dim"]
    best = min(sweep["values"], key=lambda r: r["ppl"])
    top = load_scaling(out / "factors.json")
    assert sweep["best"] == best["critical_dim"]
    assert top.long_factor == load_scaling(out / best["out"] / "factors.json").long_factor
    assert top.provenance["sweep_best"] == best["critical_dim"]
    # a resumed finished sweep ends with the same result
    rc, err = run_cli(["--out", out, "--resume", "--no-cache"], capsys)
    assert rc == 0, err
    again = json.loads((out / "sweep.json").read_text())["values"]
    assert [(r["critical_dim"], r["ppl"]) for r in again] == [(r["critical_dim"], r["ppl"]) for r in sweep["values"]]
    # a list names the values itself; a repeated one is a one-line error before any work
    rc, err = run_cli(["--model", model, "--data", texts, "--target-length", 128, "--critical-dim", "6,6",
                       "--out", tmp_path / "bad"], capsys)
    assert rc == 2 and "distinct even" in err and "\n" not in err and not (tmp_path / "bad").exists()


def test_needle_objective_and_attention_scale_search(files, tmp_path):
    from longrope.rope.files import load_scaling

    s = run_search(cfg(files, objective="needle", search_attention_scale=True, target_length=160),
                   tmp_path / "o", progress=False)
    assert math.isfinite(s["ppl"])
    sc = load_scaling(tmp_path / "o" / "factors.json")
    assert isinstance(sc.attention, float) and 1.0 <= sc.attention <= 1.5
    state = json.loads((tmp_path / "o" / "state.json").read_text())
    assert state["info"]["answer_positions"][1] == 160


def run_cli(argv, capsys):
    rc = cli.main(["search", *map(str, argv)])
    return rc, capsys.readouterr().err.strip()


def test_one_line_errors_exit_2(files, tmp_path, capsys):
    model, texts = files
    base = ["--model", model, "--data", texts, "--out", tmp_path / "o"]
    rc, err = run_cli([*base, "--target-length", 32], capsys)
    assert rc == 2 and "not above the model's window (32)" in err and "\n" not in err
    rc, err = run_cli([*base, "--target-length", 100000], capsys)
    assert rc == 2 and "need" in err and "\n" not in err  # data too short for the target
    rc, err = run_cli(["--model", model, "--out", tmp_path / "x", "--resume"], capsys)
    assert rc == 2 and "nothing to resume" in err
    from transformers import GPT2Config, GPT2LMHeadModel

    norope = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=128, n_positions=64)).save_pretrained(norope)
    from tests.helpers import char_tokenizer
    char_tokenizer().save_pretrained(norope)
    rc, err = run_cli(["--model", norope, "--data", texts, "--out", tmp_path / "g", "--target-length", 128], capsys)
    assert rc == 2 and "no rotary embedding" in err and "\n" not in err
    rc, err = run_cli([*base, "--target-length", 128, "--parents", 9, "--population", 8], capsys)
    assert rc == 2 and "cannot exceed" in err


def test_resume_refuses_changed_settings_and_finished_resume_is_a_no_op(files, tmp_path, capsys):
    model, texts = files
    out = tmp_path / "o"
    argv = ["--model", model, "--data", texts, "--out", out, "--target-length", 128,
            *np.ravel([(f"--{k}", v) for k, v in SMALL.items()]).tolist()]
    assert run_cli(argv, capsys)[0] == 0
    first = (out / "factors.json").read_text()
    rc, err = run_cli(argv, capsys)  # the same command again must not overwrite the finished search
    assert rc == 2 and "already holds a search" in err
    rc, err = run_cli(["--out", out, "--resume", "--seed", 5], capsys)
    assert rc == 2 and "--seed 5 differs from the saved search (0)" in err
    assert run_cli(["--out", out, "--resume", "--seed", 0], capsys)[0] == 0
    assert (out / "factors.json").read_text() == first


def test_short_factor_search_keeps_the_long_factors(files, tmp_path):
    from longrope.rope.files import load_scaling

    run_search(cfg(files), tmp_path / "long", progress=False)
    long = load_scaling(tmp_path / "long" / "factors.json")
    s = run_search(cfg(files, short_of=str(tmp_path / "long" / "factors.json"), target_length=32),
                   tmp_path / "short", progress=False)
    sc = load_scaling(tmp_path / "short" / "factors.json")
    assert sc.long_factor == long.long_factor and sc.n_hat == long.n_hat and sc.factor == long.factor
    assert sc.short_factor == s["best"]["factors"] and all(1.0 <= x <= 1.25 for x in sc.short_factor)
    assert set(s["baselines"]) == {"none", "long"} and s["ppl"] <= s["baselines"]["none"]
    with pytest.raises(LongRopeError, match="up to the window"):
        run_search(cfg(files, short_of=str(tmp_path / "long" / "factors.json"), target_length=64),
                   tmp_path / "bad", progress=False)


def test_short_search_can_tune_the_short_attention_scale(files, tmp_path):
    from longrope.rope.files import load_scaling

    run_search(cfg(files), tmp_path / "long", progress=False)
    long = load_scaling(tmp_path / "long" / "factors.json")
    s = run_search(cfg(files, short_of=str(tmp_path / "long" / "factors.json"), target_length=32,
                       search_attention_scale=True), tmp_path / "short", progress=False)
    sc = load_scaling(tmp_path / "short" / "factors.json")
    assert sc.long_factor == long.long_factor and sc.attention == long.attention
    assert sc.short_attention == s["best"]["attn"] and 1.0 <= sc.short_attention
    # the unscaled model is a baseline, and the search can only do at least as well as its best seed
    assert set(s["baselines"]) == {"none", "long", "unscaled"}
    assert s["ppl"] <= min(s["baselines"]["none"], s["baselines"]["unscaled"]) + 1e-9


def test_seed_from_an_earlier_search_carries_its_factors_into_generation_0(files, tmp_path):
    from longrope.rope.scaling import Scaling
    from longrope.rope.files import load_scaling
    from longrope.search.objective import carry_factors

    run_search(cfg(files, target_length=64, iterations=1), tmp_path / "2x", progress=False)
    prev = load_scaling(tmp_path / "2x" / "factors.json")
    s = run_search(cfg(files, seed_from=str(tmp_path / "2x" / "factors.json"), iterations=1), tmp_path / "4x",
                   progress=False)
    state = json.loads((tmp_path / "4x" / "state.json").read_text())
    want = carry_factors(prev.long_factor, prev.factor, 4.0)
    assert np.allclose(state["seeds"]["carried"], want)
    gen0 = [json.loads(x) for x in (tmp_path / "4x" / "history.jsonl").read_text().splitlines()]
    carried = state["evolution"]["seeds"]["carried"]["factors"]
    assert any(e["generation"] == 0 and e["fidelity"] == "full" and e["factors"] == carried for e in gen0)
    assert set(s["baselines"]) == {"pi", "ntk", "yarn"}  # the carried seed is no baseline method
    Scaling(method="yarn", factor=2.0).save(tmp_path / "yarn.json")
    with pytest.raises(LongRopeError, match="longrope factor file"):
        run_search(cfg(files, seed_from=str(tmp_path / "yarn.json")), tmp_path / "bad", progress=False)
    with pytest.raises(LongRopeError, match="short-factor search"):
        run_search(cfg(files, seed_from=str(tmp_path / "2x" / "factors.json"), target_length=32,
                       short_of=str(tmp_path / "2x" / "factors.json")), tmp_path / "bad2", progress=False)
