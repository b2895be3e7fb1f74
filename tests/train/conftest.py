"""Shared by the fine-tuning tests: a tiny saved model, its texts and a token cache, once per module."""
import pytest

from tests.helpers import save_tiny, write_texts


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return save_tiny(root / "model", bos=False), write_texts(root / "texts"), root / "cache"
