"""Fixtures for every test package; the helpers themselves live in tests/helpers.py."""
import pytest

from tests.helpers import make_tiny


@pytest.fixture
def tiny_llama():
    return make_tiny("llama")
