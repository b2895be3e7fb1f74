"""Sample building: select long documents, join short ones, auto, and the errors naming the numbers."""
from __future__ import annotations

import pytest
import torch

from longrope.data import build_samples
from longrope.errors import LongRopeError


def corpus():
    # document i holds tokens 10*i+10 .. ; lengths 5, 50, 120, 30, 200
    return [list(range(100 * i + 10, 100 * i + 10 + n)) for i, n in enumerate([5, 50, 120, 30, 200])]


def test_select_takes_first_tokens_of_long_documents_with_bos():
    s = build_samples(corpus(), 101, 2, mode="select", bos_id=1, seed=0)
    assert s.mode == "select" and len(s) == 2
    for t in s.tensors:
        assert t.dtype == torch.long and t.shape == (101,) and t[0] == 1
    firsts = sorted(int(t[1]) for t in s.tensors)
    assert firsts == [210, 410]  # the two documents with >= 100 tokens, from their start
    assert torch.equal(s.tensors[0][1:], torch.arange(210, 310))
    assert "selected 2 of 2" in s.info["reason"]
    assert s.used == [2, 4]  # the documents the samples were cut from


def test_join_uses_separators_and_exact_lengths():
    s = build_samples(corpus(), 64, 5, mode="join", bos_id=1, sep_id=2, seed=3)
    assert s.mode == "join" and len(s) == 5
    assert all(t.shape == (64,) and t[0] == 1 for t in s.tensors)
    flat = torch.cat([t[1:] for t in s.tensors]).tolist()
    i = flat.index(2)
    assert flat[i + 1] == 1  # EOS then BOS between documents
    assert build_samples(corpus(), 64, 5, mode="join", bos_id=1, sep_id=2, seed=3).tensors[3].tolist() == \
        s.tensors[3].tolist()
    apart = [list(range(1000 * i + 10, 1000 * i + 10 + len(d))) for i, d in enumerate(corpus())]
    s = build_samples(apart, 64, 5, mode="join", bos_id=1, sep_id=2, seed=3)
    held = {t // 1000 for x in s.tensors for t in x.tolist() if t >= 10}
    assert s.used == sorted(held)  # every document whose tokens are in the samples, and no other


def test_no_bos_means_length_of_real_tokens():
    s = build_samples(corpus(), 120, 2, mode="select")
    assert all(len(t) == 120 and t[0] != 1 for t in s.tensors)


def test_auto_selects_when_enough_else_joins_and_says_so():
    sel = build_samples(corpus(), 100, 2, bos_id=1)
    assert sel.mode == "select"
    join = build_samples(corpus(), 100, 3, bos_id=1, sep_id=2)
    assert join.mode == "join" and len(join) == 3
    assert "only 2 documents have >= 100 tokens, fewer than 3" in join.info["reason"]


def test_count_none_takes_all_possible():
    assert len(build_samples(corpus(), 101, None, mode="select", bos_id=1)) == 2
    total = sum(map(len, corpus()))
    assert len(build_samples(corpus(), 51, None, mode="join", bos_id=1)) == (total + 4) // 50


def test_seed_changes_the_choice():
    ids = [list(range(1000 * i, 1000 * i + 300)) for i in range(10)]
    picks = {tuple(int(t[0]) for t in build_samples(ids, 300, 3, mode="select", seed=s).tensors) for s in range(5)}
    assert len(picks) > 1


def test_too_few_long_documents_names_the_numbers():
    with pytest.raises(LongRopeError, match=r"need 8 documents of >= 4,096 tokens, found 0 \(longest 200\)"):
        build_samples(corpus(), 4096, 8, mode="select", bos_id=1)
    with pytest.raises(LongRopeError, match=r"need 3 documents of >= 150 tokens, found 1 .*joining all documents "
                                             r"is not enough either: need 3 x 149 = 447 tokens"):
        build_samples(corpus(), 150, 3, bos_id=1, sep_id=2)
    with pytest.raises(LongRopeError, match="need 100 x 63"):
        build_samples(corpus(), 64, 100, mode="join", bos_id=1)


@pytest.mark.parametrize("kw, match", [
    (dict(mode="random"), "unknown sample mode"), (dict(length=1), "at least 2 tokens"),
    (dict(count=0), "must be positive"), (dict(ids=[]), "no documents"),
])
def test_bad_arguments(kw, match):
    args = dict(ids=corpus(), length=64, count=2)
    args.update({k: v for k, v in kw.items() if k in args})
    with pytest.raises(LongRopeError, match=match):
        build_samples(args["ids"], args["length"], args["count"], **{k: v for k, v in kw.items() if k not in args})


def test_joined_samples_say_how_many_documents_they_join():
    """'N documents joined into M samples', in the info and in a report's header (issue 29)."""
    from longrope.eval.report import samples_phrase

    s = build_samples([[5] * 30] * 6, 64, 2, mode="join", bos_id=1, sep_id=2, seed=0)  # 2 x 63 tokens: 4 docs + 3 separators
    assert s.mode == "join" and s.info["joined"] == 4 and "joined 4 documents" in s.info["reason"]
    assert samples_phrase({"docs": 2, "samples": s.info}) == "2 samples joined from 4 documents"
    assert samples_phrase({"docs": 2, "samples": {"mode": "select"}}) == "2 documents"
