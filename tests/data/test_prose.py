"""`--data pydocs` (chapters of the Python docs as long documents) on a small fake Sphinx tree, and
the rule that keeps generated/tabular files out of the built-in corpus."""
from __future__ import annotations

import pytest

from longrope.data import prose
from longrope.data.sources import is_tabular, load_builtin, load_documents
from longrope.errors import LongRopeError

PAGE = """<!DOCTYPE html><html><head><title>T</title><script>var x = "<p>no</p>";</script></head>
<body><div class="related" role="navigation">Navigation junk</div>
<div class="body" role="main"><section><h1>{title}<a class="headerlink" href="#x">\u00b6</a></h1>
<p>{para} &amp; more&nbsp;text.</p>
<div class="toctree-wrapper"><ul>{toc}</ul></div>
<pre>def f(x):
    return x  # kept as shown</pre>
</section></div>
<div class="sphinxsidebar" role="navigation">Sidebar junk</div><div class="footer">Footer</div></body></html>
"""


def _page(title, para, links=()):
    toc = "".join(f'<li class="toctree-l1"><a class="reference internal" href="{h}">{h}</a>'
                  f'<ul><li class="toctree-l2"><a class="reference internal" href="{h}#s">s</a></li></ul></li>'
                  for h in links)
    return PAGE.format(title=title, para=para, toc=toc)


@pytest.fixture
def tree(tmp_path):
    """library/index -> two chapters (one of them sharing a page with the other), plus the books."""
    root = tmp_path / "html"
    (root / "library").mkdir(parents=True)
    words = "The quick brown fox reads the documentation carefully. " * 40
    (root / "library" / "index.html").write_text(_page("Library", "Intro", ["text.html", "data.html"]))
    (root / "library" / "text.html").write_text(_page("Text", "Text chapter " + words, ["string.html", "re.html"]))
    (root / "library" / "string.html").write_text(_page("string", "String page " + words))
    (root / "library" / "re.html").write_text(_page("re", "Regex page " + words))
    (root / "library" / "data.html").write_text(_page("Data", "Data chapter " + words, ["re.html", "../tutorial/index.html"]))
    (root / "tutorial").mkdir()
    (root / "tutorial" / "index.html").write_text(_page("Tutorial", "Tutorial " + words))
    return root


def test_markup_is_stripped_and_code_kept():
    text, toc = prose.parse_page(_page("Title", "A <em>bold</em> claim", ["a.html", "b.html#frag"]))
    assert "A bold claim & more text." in text  # entities decoded, whitespace runs (nbsp too) collapsed
    assert "def f(x):\n    return x  # kept as shown" in text
    for junk in ("Navigation junk", "Sidebar junk", "Footer", "<", "\u00b6", "var x"):
        assert junk not in text
    assert toc == ["a.html", "b.html"]


def test_chapters_follow_the_toc_and_share_no_page(tree):
    docs = dict(prose.documents(tree))
    assert docs["library/text"] == ["library/text.html", "library/string.html", "library/re.html"]
    assert docs["library/data"] == ["library/data.html", "tutorial/index.html"]  # re.html went to text
    assert docs["tutorial"] == []  # already read as part of library/data
    every = [p for pages in docs.values() for p in pages]
    assert len(every) == len(set(every))


def test_load_pydocs_splits_by_hash_and_min_length(tree):
    by_split = {}
    for split in ("train", "validation", "test"):
        try:
            by_split[split] = prose.load_pydocs(split, root=tree, min_chars=1000)
        except LongRopeError as e:
            assert "no document" in str(e)
            by_split[split] = []
    names = [d.name for docs in by_split.values() for d in docs]
    assert sorted(names) == ["pydocs:library/data", "pydocs:library/text"]
    for split, docs in by_split.items():
        assert all(prose.split_of(d.name.split(":", 1)[1]) == split for d in docs)
    text = next(d.text for docs in by_split.values() for d in docs if d.name == "pydocs:library/text")
    assert text.index("Text chapter") < text.index("String page") < text.index("Regex page")
    with pytest.raises(LongRopeError, match="no document of >= 10000000"):
        prose.load_pydocs("train", root=tree, min_chars=10_000_000)


def test_missing_package_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(prose, "HTML_ROOT", tmp_path / "nothing")
    with pytest.raises(LongRopeError, match="apt-get install python3.11-doc"):
        load_documents("pydocs", "test")


@pytest.mark.slow  # parses the whole installed documentation: ~30 s of CPU
@pytest.mark.skipif(not (prose.HTML_ROOT / "library" / "index.html").is_file(), reason="python3.11-doc not installed")
def test_installed_pydocs_are_long_and_split():
    counts = {s: len(prose.load_pydocs(s)) for s in ("validation", "test")}
    assert counts["validation"] >= 4 and counts["test"] >= 4


CODEC = '''"""Generated from 'MAPPINGS/VENDORS/MICSFT/PC/CP437.TXT' with gencodec.py."""
import codecs
decoding_table = (
    '\\x00'     #  0x00 -> NULL
    '\\x01'     #  0x01 -> START OF HEADING
)
'''


def test_tabular_rule_by_content():
    assert is_tabular(CODEC)  # the codec signature, however short
    table = "ENTITIES = {\n" + "".join(f"    'name{i}': 0x{i:04x},\n" for i in range(80)) + "}\n"
    assert is_tabular(table)
    code = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(40))
    assert not is_tabular(code)
    short_list = "__all__ = [\n" + "".join(f"    'n{i}',\n" for i in range(20)) + "]\n"
    assert not is_tabular(short_list)  # fewer than 50 lines: a list of names, not a table


def test_builtin_corpus_leaves_out_code_page_tables():
    names = {d.name for split in ("validation", "test") for d in load_builtin(split)}
    assert not any(n.startswith("encodings/cp") or n.startswith("encodings/mac_") for n in names)
    assert "encodings/hp_roman8.py" not in names
