"""`longrope data stats` / `longrope data samples` through longrope.cli.main."""
from __future__ import annotations

from tests.data.helpers import tokenizer_model_dir, write_corpus
from longrope.cli import main


def test_stats_of_a_folder(tmp_path, capsys):
    model = tokenizer_model_dir(tmp_path / "m")
    data = write_corpus(tmp_path / "corpus")
    assert main(["data", "stats", "--data", str(data), "--model", str(model), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["split", "docs", "tokens"]
    rows = [r.split() for r in out[1:]]
    assert [r[0] for r in rows] == ["train", "validation", "test"]  # user data is split too
    assert sum(int(r[1]) for r in rows) == 8 and rows[1][1] == rows[2][1] == "1"
    assert sum(int(r[2].replace(",", "")) for r in rows) > 5000


def test_stats_of_the_builtin_validation_split(tmp_path, capsys):
    model = tokenizer_model_dir(tmp_path / "m")
    assert main(["data", "stats", "--split", "validation", "--model", str(model),
                 "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[0] == "validation" and int(out[1].split()[1]) > 5


def test_samples_reports_select_or_join(tmp_path, capsys):
    model = tokenizer_model_dir(tmp_path / "m")
    data = write_corpus(tmp_path / "corpus")
    args = ["data", "samples", "--data", str(data), "--model", str(model), "--cache-dir", str(tmp_path / "c"),
            "--split", "all"]
    assert main(args + ["--length", "512", "--count", "2"]) == 0
    assert capsys.readouterr().out.startswith("select: 2 samples of 512 tokens")
    assert main(args + ["--length", "512", "--count", "12"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("join: 12 samples of 512 tokens") and "fewer than 12" in out


def test_samples_too_few_long_documents_exit_2(tmp_path, capsys):
    model = tokenizer_model_dir(tmp_path / "m")
    data = write_corpus(tmp_path / "corpus")
    rc = main(["data", "samples", "--data", str(data), "--model", str(model), "--cache-dir", str(tmp_path / "c"),
               "--split", "all", "--length", "4k", "--count", "8", "--mode", "select"])
    err = capsys.readouterr().err
    warning, error = err.splitlines()  # --split all says it holds nothing out, then the error
    assert rc == 2 and warning.startswith("longrope data: warning: split 'all' takes every document")
    assert error.startswith("longrope data: error: need 8 documents of >= 4,096 tokens, found ")
