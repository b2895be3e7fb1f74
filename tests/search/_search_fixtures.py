"""The search tests' helpers: the shared ones from tests/helpers.py."""
from helpers import char_tokenizer, cli_env, save_tiny, write_texts  # noqa: F401
