"""Fixtures for every test package; the helpers themselves live in tests/helpers.py."""
import pytest

from tests.helpers import make_tiny


@pytest.fixture(autouse=True)
def _private_score_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own search score cache (the default one is under ~/.cache)."""
    monkeypatch.setenv("LONGROPE_CACHE_DIR", str(tmp_path_factory.mktemp("scores")))


@pytest.fixture
def tiny_llama():
    return make_tiny("llama")
