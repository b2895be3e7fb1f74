"""Document sources: the built-in stdlib corpus and every user-data format, plus each bad input."""
from __future__ import annotations

import json

import pytest

from longrope.cli import main
from longrope.data import Document, load_documents
from longrope.data.documents import SPLITS
from longrope.data.sources import load_builtin, split_of, stdlib_files
from longrope.errors import LongRopeError


def test_builtin_splits_are_disjoint_deterministic_and_roughly_90_5_5():
    files = stdlib_files()
    assert len(files) > 100
    rels = [r for r, _ in files]
    assert rels == sorted(rels)
    assert not any("/test/" in f"/{r}" or "site-packages" in r for r in rels)
    counts = {s: sum(split_of(r) == s for r in rels) for s in SPLITS}
    assert sum(counts.values()) == len(rels)
    assert 0.8 < counts["train"] / len(rels) < 0.97
    assert counts["validation"] > 5 and counts["test"] > 5
    assert [split_of(r) for r in rels] == [split_of(r) for r in rels]


def test_split_depends_only_on_relative_path(tmp_path):
    for root in (tmp_path / "a", tmp_path / "b" / "deeper"):
        for rel in ("x.py", "pkg/y.py", "pkg/z.py", "test/skipped.py", "pkg/tests/skipped.py"):
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"# {rel}\nVALUE = 1\n")
    a = [(r, split_of(r)) for r, _ in stdlib_files(tmp_path / "a")]
    b = [(r, split_of(r)) for r, _ in stdlib_files(tmp_path / "b" / "deeper")]
    assert a == b
    assert [r for r, _ in a] == ["pkg/y.py", "pkg/z.py", "x.py"]  # test folders are left out


def test_builtin_loads_the_held_out_splits():
    names = {s: [d.name for d in load_documents("builtin", s)] for s in ("validation", "test")}
    assert names["validation"] and names["test"] and not set(names["validation"]) & set(names["test"])
    assert all(split_of(n) == s for s, ns in names.items() for n in ns)
    assert [d.name for d in load_documents(None, "test")] == names["test"]
    assert all(isinstance(d, Document) and d.text.strip() for d in load_builtin("validation"))


def test_unknown_builtin_split():
    with pytest.raises(LongRopeError, match="unknown split 'dev'"):
        load_documents("builtin", "dev")


def test_text_file_folder_and_glob(tmp_path):
    (tmp_path / "a.txt").write_text("first document\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second", encoding="utf-8")
    (tmp_path / "sub" / "c.txt").write_text("  \n", encoding="utf-8")  # blank: skipped in folders
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # not a text suffix: ignored
    one = load_documents(str(tmp_path / "a.txt"), "all")
    assert one == [Document(str(tmp_path / "a.txt"), "first document\n")]
    folder = load_documents(str(tmp_path), "all")
    assert [d.text for d in folder] == ["first document\n", "second"]
    globbed = load_documents(str(tmp_path / "**" / "*.txt"), "all")
    assert [d.text for d in globbed] == ["first document\n"]


def test_jsonl_default_and_named_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [{"text": "one", "body": "uno"}, {"text": "two", "body": "dos"}])
                 + "\n\n", encoding="utf-8")
    assert [d.text for d in load_documents(str(p), "all")] == ["one", "two"]
    assert [d.text for d in load_documents(f"{p}:body", "all")] == ["uno", "dos"]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["alpha", "", "gamma"], "other": ["x", "y", "z"]}), p)
    assert [d.text for d in load_documents(str(p), "all")] == ["alpha", "gamma"]
    assert [d.text for d in load_documents(f"{p}:other", "all")] == ["x", "y", "z"]
    with pytest.raises(LongRopeError, match="no column 'body'"):
        load_documents(f"{p}:body", "all")


def test_hf_save_to_disk_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["doc a", "doc b"]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert [d.text for d in load_documents(str(tmp_path / "ds"), "all")] == ["doc a", "doc b"]
    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_dict({"text": ["held out"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [d.text for d in load_documents(str(tmp_path / "dd"), "test")] == ["held out"]
    with pytest.raises(LongRopeError, match="no split 'validation'"):
        load_documents(str(tmp_path / "dd"), "validation")


@pytest.mark.parametrize("case, match", [
    ("missing", "data not found"),
    ("empty", "empty file"),
    ("jsonl_field", "line 1 has no field 'text'"),
    ("jsonl_bad", "line 2 is not valid JSON"),
    ("glob", "no files match"),
    ("empty_dir", "no text files"),
    ("binary", "not a UTF-8 text file"),
])
def test_bad_inputs_raise_one_line(tmp_path, case, match):
    src = {
        "missing": tmp_path / "nope.txt",
        "empty": tmp_path / "empty.txt",
        "jsonl_field": tmp_path / "f.jsonl",
        "jsonl_bad": tmp_path / "b.jsonl",
        "glob": tmp_path / "*.nothing",
        "empty_dir": tmp_path / "dir",
        "binary": tmp_path / "bin.txt",
    }[case]
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "f.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x"}) + "\n{oops\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LongRopeError, match=match) as e:
        load_documents(str(src))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("case", ["missing", "empty", "jsonl_field"])
def test_cli_bad_data_exits_2_with_one_line(tmp_path, capsys, case):
    from tests.data.helpers import tokenizer_model_dir

    model = tokenizer_model_dir(tmp_path / "m")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "f.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    src = {"missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt", "jsonl_field": tmp_path / "f.jsonl"}
    rc = main(["data", "stats", "--data", str(src[case]), "--model", str(model), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("longrope data: error: ") and err.count("\n") == 1
