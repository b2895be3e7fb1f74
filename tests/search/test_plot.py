"""search.png without matplotlib: the same one-line error as every other plot, nothing written."""
import pytest

from longrope.errors import LongRopeError
from longrope.search.plot import plot_search
from tests.helpers import without_module


def test_missing_matplotlib_is_one_line_error(tmp_path, monkeypatch):
    with without_module(monkeypatch, "matplotlib"), \
            pytest.raises(LongRopeError, match=r"plots need matplotlib: pip install 'longrope\[plot\]'"):
        plot_search(tmp_path / "search.png", {}, None)
    assert not list(tmp_path.iterdir())
