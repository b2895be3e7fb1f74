"""Every data source is split (issue 17): with user data (folder, JSON Lines, Parquet, a saved dataset) the
documents a search is judged on and those compare/eval report never overlap; the split is deterministic;
forcing it off is loud; a source too small to split says how to proceed."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest

from longrope.cli import build_parser
from longrope.data import load_documents
from longrope.data.documents import SPLITS
from longrope.errors import LongRopeError, LongRopeWarning
from longrope.search.config import SearchConfig

N = 60


def texts(n=N):
    return [f"document number {i} " + "word " * (20 + i % 7) for i in range(n)]


def make_source(kind, tmp_path):
    if kind == "folder":
        for i, t in enumerate(texts()):
            (tmp_path / "folder" / f"d{i // 10}").mkdir(parents=True, exist_ok=True)
            (tmp_path / "folder" / f"d{i // 10}" / f"doc{i:02d}.txt").write_text(t)
        return str(tmp_path / "folder")
    if kind == "glob":
        make_source("folder", tmp_path)
        return str(tmp_path / "folder" / "**" / "*.txt")
    if kind == "jsonl":
        p = tmp_path / "d.jsonl"
        p.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts()))
        return str(p)
    if kind == "parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.table({"text": texts()}), tmp_path / "d.parquet")
        return str(tmp_path / "d.parquet")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": texts()}).save_to_disk(str(tmp_path / "ds"))
    return str(tmp_path / "ds")


def default_split(*argv):
    """The split a command uses when the user gives none (parsed by the real CLI parser)."""
    return build_parser().parse_args(list(argv)).split


@pytest.mark.parametrize("kind", ["folder", "glob", "jsonl", "parquet", "dataset"])
def test_search_and_compare_documents_never_overlap(kind, tmp_path):
    source = make_source(kind, tmp_path)
    search_split = SearchConfig(target_length=512).split  # what `longrope search` uses (None = its default)
    assert default_split("search", "--out", "x") is None and search_split == "validation"
    compare_split = default_split("compare", "--out", "x")
    eval_split = default_split("eval", "ppl", "--lengths", "256")
    train_split = default_split("finetune", "--scaling", "pi", "--length", "8", "--steps", "1", "--out", "x")
    assert (compare_split, eval_split, train_split) == ("test", "test", "train")
    parts = {s: load_documents(source, s) for s in (search_split, compare_split, train_split)}
    names = {s: {d.name for d in docs} for s, docs in parts.items()}
    texts_ = {s: {d.text for d in docs} for s, docs in parts.items()}
    assert all(names.values())
    for a in names:
        for b in names:
            if a != b:
                assert not names[a] & names[b] and not texts_[a] & texts_[b], (a, b)
    assert sum(len(v) for v in names.values()) == N  # every document in exactly one split
    assert len(names["validation"]) == len(names["test"]) == 3  # 5% each
    assert [d.name for d in load_documents(source, "validation")] == [d.name for d in parts["validation"]]


def test_the_split_follows_the_document_not_the_location(tmp_path):
    source = make_source("folder", tmp_path)
    moved = shutil.copytree(source, tmp_path / "elsewhere" / "copy")
    for s in SPLITS:
        here = [d.name.split("folder/", 1)[1] for d in load_documents(source, s)]
        there = [d.name.split("copy/", 1)[1] for d in load_documents(str(moved), s)]
        assert here == there
    glob_val = [d.name for d in load_documents(str(tmp_path / "folder" / "**" / "*.txt"), "validation")]
    assert glob_val == [d.name for d in load_documents(source, "validation")]  # glob and folder agree


def test_forcing_the_split_off_is_loud(tmp_path):
    source = make_source("jsonl", tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert len(load_documents(source, "all")) == N
        assert [(w.category, "split 'all'" in str(w.message) and "nothing is held out" in str(w.message))
                for w in seen] == [(LongRopeWarning, True)]
        load_documents(source, "test")
        assert len(seen) == 1


def test_a_single_document_has_no_split(tmp_path, capsys):
    (tmp_path / "book.txt").write_text("one long book " * 100)
    with pytest.raises(LongRopeError, match="holds 1 document, too few .* pass --split all") as e:
        load_documents(str(tmp_path / "book.txt"), "test")
    assert "\n" not in str(e.value)
    assert len(load_documents(str(tmp_path / "book.txt"), "all")) == 1


def test_a_dataset_dict_keeps_its_own_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b"]}),
                               "test": datasets.Dataset.from_dict({"text": ["held out"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [d.text for d in load_documents(str(tmp_path / "dd"), "test")] == ["held out"]
    assert [d.text for d in load_documents(str(tmp_path / "dd"), "all")] == ["a", "b", "held out"]


def test_the_search_and_compare_code_paths_see_disjoint_documents(tmp_path, monkeypatch):
    """The search's and compare's own loading function, with the splits the commands pass them."""
    import longrope.data.sources as data
    from tests.helpers import char_tokenizer
    from longrope.data import load_tokenized
    from longrope.search.setup import load_samples

    seen = []
    real = data.load_documents

    def record(src, split):
        docs = real(src, split)
        seen.append({d.name for d in docs})
        return docs

    monkeypatch.setattr(data, "load_documents", record)
    source = make_source("jsonl", tmp_path)
    load_samples(SearchConfig(target_length=64, data=source).resolved(), char_tokenizer(), None, 2)
    load_tokenized(char_tokenizer(), source, default_split("compare", "--data", source, "--out", "x"))
    assert len(seen) == 2 and seen[0] and seen[1] and not seen[0] & seen[1]
