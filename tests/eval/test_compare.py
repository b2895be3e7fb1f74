"""compare() and `longrope compare` / `longrope eval` through longrope.cli.main on a tiny saved model."""
from __future__ import annotations

import json

import pytest
import torch

import longrope
from tests.helpers import make_tiny
from longrope.cli import main
from longrope.data import load_tokenized
from longrope.eval.compare import CompareConfig, compare, original_window
from longrope.eval.perplexity import perplexity

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compare_library_matches_direct_perplexity(char_tok, text_dir):
    import longrope
    from longrope import patch
    from longrope.data import build_samples, load_documents, tokenize_documents

    model = make_tiny("llama")
    cfg = CompareConfig(methods=["none", "pi", "yarn:4"], lengths=[32, 128], data=str(text_dir), docs=2,
                        passkey_trials=0)
    res = compare(model, char_tok, cfg, progress=False).to_json()
    assert set(res["ppl"]) == {"none", "pi", "yarn:4"} and set(res["ppl"]["pi"]) == {"32", "128"}
    assert res["meta"]["default_factor"] == 4.0 and res["meta"]["methods"]["pi"] == "linear:4"
    assert res["passkey"] == {} and patch.current(model) is None  # patch removed afterwards
    ids = tokenize_documents(load_documents(str(text_dir)), char_tok)
    s = build_samples(ids, 128, 2, bos_id=char_tok.bos_token_id, sep_id=char_tok.eos_token_id, seed=0).tensors
    assert res["ppl"]["none"]["128"] == pytest.approx(perplexity(model, s).ppl, rel=1e-6)
    # every length scores the same documents: the 32-token figure is over prefixes of those samples
    assert res["ppl"]["none"]["32"] == pytest.approx(perplexity(model, [t[:32] for t in s]).ppl, rel=1e-6)
    longrope.apply(model, "yarn:4")
    assert res["ppl"]["yarn:4"]["128"] == pytest.approx(perplexity(model, s).ppl, rel=1e-6)
    longrope.remove(model)
    # methods differ beyond the window; the short-window check is at the original window (32)
    assert res["ppl"]["pi"]["128"] != pytest.approx(res["ppl"]["none"]["128"], rel=1e-7)
    assert res["short"]["length"] == original_window(model) == 32
    assert res["short_ppl"]["none"] == pytest.approx(res["short"]["unscaled_ppl"])
    assert res["short"]["relative_cost"]["none"] == pytest.approx(0.0, abs=1e-9)


def test_cli_compare_writes_json_report_and_plots(tiny_model_dir, text_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--model", str(tiny_model_dir), "--methods", "none,pi,dynamic",
               "--lengths", "300,400", "--data", str(text_dir), "--docs", "2", "--out", str(out),
               "--passkey-trials", "1", "--depths", "0,1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| method" in printed and "300" in printed and "dynamic" in printed
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"ppl", "passkey", "meta"}
    assert_test_documents(res["meta"]["documents"], tiny_model_dir, text_dir)
    for m in ("none", "pi", "dynamic"):
        assert set(res["ppl"][m]) == {"300", "400"} and all(v > 1 for v in res["ppl"][m].values())
        assert set(res["passkey"][m]) == {"300", "400"}
        assert all(0 <= v <= 1 for v in res["passkey"][m].values())
        assert set(res["passkey_depth"][m]["400"]) == {"0", "1"}
        png = out / f"passkey_{m}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "ppl.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "## Perplexity" in report and "## Passkey" in report and "Short-context cost" in report
    assert "ppl.png" in report and f"{res['ppl']['pi']['400']:.3f}"[:5] in report
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("argv,msg", [
    (["--lengths", "32,100000"], "100,000"),          # longer than the data can supply
    (["--methods", "none,bogus"], "bogus"),            # unknown method
    (["--lengths", ","], "empty"),                      # empty lengths list
    (["--methods", ""], "empty"),
    (["--passkey-trials", "1"], "passkey prompt needs at least"),  # 32 tokens cannot hold a prompt
])
def test_cli_compare_bad_input_one_line_exit_2(tiny_model_dir, text_dir, tmp_path, capsys, argv, msg):
    base = {"--model": str(tiny_model_dir), "--data": str(text_dir), "--lengths": "32",
            "--methods": "none", "--out": str(tmp_path / "o"), "--passkey-trials": "0"}
    for k, v in zip(argv[::2], argv[1::2]):
        base[k] = v
    rc = main(["compare"] + [x for kv in base.items() for x in kv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("longrope compare: error:") and msg in err
    assert not (tmp_path / "o" / "results.json").exists()


def assert_test_documents(cited, model_dir, text_dir):
    """An output names the documents it scored: test-split documents, with their token counts."""
    from longrope.models import load_tokenizer
    held_out = load_tokenized(load_tokenizer(str(model_dir)), str(text_dir), "test")
    counts = dict(zip(held_out.names, map(len, held_out.ids)))
    assert cited and all(counts[d["name"]] == d["tokens"] for d in cited)


def test_cli_eval_ppl_truncate_and_sliding(tiny_model_dir, text_dir, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    assert main(["eval", "ppl", "--model", str(tiny_model_dir), "--data", str(text_dir), "--lengths", "32,64",
                 "--docs", "2", "--truncate", "--scaling", "pi", "--positions", "0-16,16-64",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["meta"]["scaling"] == "linear:2" and res["ppl"]["64"]["docs"] == 2
    assert_test_documents(res["meta"]["documents"], tiny_model_dir, text_dir)
    assert res["ppl"]["64"]["tokens"] == 2 * 63 and res["ppl"]["64"]["by_range"]["16-64"]["tokens"] == 2 * 48
    out2 = tmp_path / "slide.json"
    assert main(["eval", "ppl", "--model", str(tiny_model_dir), "--data", str(text_dir), "--lengths", "32",
                 "--docs", "2", "--stride", "8", "--out", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    assert res2["ppl"]["32"]["tokens"] == 2 * 63  # span 2 x 32 tokens, every token but the first
    assert "sliding" in res2["meta"]["mode"]
    capsys.readouterr()
    assert main(["eval", "ppl", "--model", str(tiny_model_dir), "--data", str(text_dir), "--lengths", ""]) == 2
    assert "empty" in capsys.readouterr().err


def test_cli_eval_passkey(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "pk.json"
    assert main(["eval", "passkey", "--model", str(tiny_model_dir), "--lengths", "300", "--trials", "1",
                 "--depths", "0.5", "--max-new-tokens", "3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["passkey"]
    assert set(res["by_length"]) == {"300"} and len(res["trials"]) == 1
    assert "overall" in capsys.readouterr().out


def test_cli_eval_tasks_without_harness(tiny_model_dir, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_lm_eval(name, *a, **k):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError("No module named 'lm_eval'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    rc = main(["eval", "tasks", "--model", str(tiny_model_dir), "--tasks", "hellaswag"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "pip install 'longrope[eval]'" in err


def test_eval_without_subcommand_shows_help(capsys):
    assert main(["eval"]) == 2
    assert "ppl" in capsys.readouterr().err


def test_compare_sliding_window_uses_windows_of_length(char_tok, text_dir):
    model = make_tiny("llama")
    cfg = CompareConfig(methods=["none"], lengths=[32, 64], data=str(text_dir), docs=2, passkey_trials=0,
                        stride=16)
    res = compare(model, char_tok, cfg, progress=False).to_json()
    d = res["ppl_detail"]["none"]
    assert d["32"]["tokens"] == 2 * 63 and d["64"]["tokens"] == 2 * 127  # 2L-token samples, all scored
    assert "sliding" in res["meta"]["ppl_mode"]


def test_compare_refuses_a_wrong_size_factor_file_before_any_work(tiny_model_dir, text_dir, tmp_path, capsys):
    factors = tmp_path / "f.json"
    factors.write_text(json.dumps({"format": "longrope-scaling", "version": 1, "method": "longrope",
                                   "factor": 4.0, "long_factor": [1.0] * 3, "original_max_position": 32}))
    out = tmp_path / "o"
    rc = main(["compare", "--model", str(tiny_model_dir), "--data", str(text_dir), "--lengths", "32,64",
               "--docs", "2", "--passkey-trials", "0", "--methods", f"none,pi,longrope:{factors}",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "3 factors" in err and "rotary pairs" in err
    assert "ppl @" not in err and not out.exists()  # nothing was scored or written


def test_compare_reports_the_positions_beyond_the_window_on_their_own(char_tok, text_dir):
    from longrope.eval.compare import _samples
    from longrope.eval.report import render_report
    model = make_tiny("llama")
    window = original_window(model)
    n = 2 * window
    cfg = CompareConfig(methods=["none", "yarn"], lengths=[window, n], data=str(text_dir), docs=2,
                        passkey_trials=0)
    res = compare(model, char_tok, cfg, progress=False)
    beyond = res.beyond_window()
    assert set(beyond) == {"none", "yarn"} and set(beyond["none"]) == {str(n)}  # not at the window itself
    # the same figure perplexity() gives for those target positions on the same samples, unscaled
    samples, _ = _samples(cfg.validated(), char_tok, load_tokenized(char_tok, str(text_dir), "test").ids, [n], window)
    direct = perplexity(model, samples[n], positions=[(window, n)]).by_range[f"{window}-{n}"]["ppl"]
    assert beyond["none"][str(n)] == pytest.approx(direct, rel=1e-6)
    assert beyond["yarn"][str(n)] != pytest.approx(direct, rel=1e-6)  # the scaling changed it
    assert "beyond the original window" in render_report(res)


def test_compare_passkey_and_short_window_at_chosen_lengths(char_tok, text_dir):
    """passkey_lengths limits the passkey to some evaluation lengths; the short-window cost reuses
    the evaluation length equal to the window instead of scoring it again."""
    model = make_tiny("llama")
    cfg = CompareConfig(methods=["none", "yarn:8"], lengths=[32, 256], data=str(text_dir), docs=2,
                        passkey_trials=1, depths=[0.5], passkey_lengths=[256])
    res = compare(model, char_tok, cfg, progress=False)
    assert all(set(r.passkey) == {256} for r in res.methods.values())
    assert all(r.short_ppl == r.ppl[32] for r in res.methods.values())
    assert res.meta["passkey_lengths"] == [256]


def test_compare_refuses_passkey_or_task_lengths_outside_the_lengths():
    from longrope.errors import LongRopeError
    with pytest.raises(LongRopeError, match="passkey_lengths must be among the evaluation lengths"):
        CompareConfig(lengths=[32, 128], passkey_lengths=[64]).validated()
    with pytest.raises(LongRopeError, match="task_lengths must be among"):
        CompareConfig(lengths=[32, 128], task_lengths=[256]).validated()


def test_prefix_lengths_read_off_the_longest_pass_equal_their_own_passes(char_tok, text_dir, tmp_path):
    """One pass at the longest length gives the shorter lengths of a length-independent scaling, and
    the lengths above the window of short/long factors; dynamic NTK and the short mode get their own."""
    from longrope.eval.compare import _ppl_by_length, prefix_lengths
    from longrope.rope.scaling import Scaling
    from longrope.rope.spec import parse_spec

    model = make_tiny("llama")
    pairs = model.config.hidden_size // model.config.num_attention_heads // 2
    switching = Scaling(method="longrope", long_factor=[1.0 + i for i in range(pairs)], short_factor=[1.0] * pairs,
                        original_max_position=32, factor=4.0, target_length=128)
    assert prefix_lengths(parse_spec("yarn:4"), [16, 32, 64, 128], 32, None) == [16, 32, 64]
    assert prefix_lengths(switching, [16, 32, 64, 128], 32, None) == [64]
    assert prefix_lengths(parse_spec("dynamic:4"), [16, 32, 64, 128], 32, None) == []
    assert prefix_lengths(parse_spec("yarn:4"), [16, 128], 32, 8) == []  # sliding windows: no
    lengths = [16, 32, 64, 128]
    from longrope.data import load_tokenized
    ids = load_tokenized(char_tok, str(text_dir), "test").ids
    from longrope.eval.compare import make_samples
    base = make_samples(ids, char_tok, 128, 2).tensors
    for scaling in (parse_spec("yarn:4"), switching):
        longrope.apply(model, scaling)

        def ppl(n, extra=(), progress=False):
            beyond = [(0, 32), (32, n)] if n > 32 else []
            return perplexity(model, [t[:n] for t in base], positions=beyond + list(extra) or None)

        derived = _ppl_by_length(ppl, scaling, lengths, 32, None, False)
        for n in lengths:
            own = ppl(n)
            assert derived[n].ppl == pytest.approx(own.ppl, rel=1e-5), (scaling.method, n)
            assert derived[n].tokens == own.tokens and set(derived[n].by_range) == set(own.by_range)
            for k in own.by_range:
                assert derived[n].by_range[k]["ppl"] == pytest.approx(own.by_range[k]["ppl"], rel=1e-5)
        longrope.remove(model)
