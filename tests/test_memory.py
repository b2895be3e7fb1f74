"""longrope.memory: the estimates follow the config, and a length beyond the free memory is refused
in one line before any work (while one that fits passes)."""
import pytest

from longrope import memory
from longrope.errors import LongRopeError
from tests.helpers import make_tiny


def test_estimates_follow_the_config():
    model = make_tiny("llama", layers=2, heads=4, kv_heads=2, head_dim=16)
    # keys and values: 2 x layers x positions x kv heads x head dim x 4 bytes
    assert memory.kv_cache_bytes(model.config, 1000) == 2 * 2 * 1000 * 2 * 16 * 4
    assert memory.activation_bytes(model.config, 2000) == 2 * memory.activation_bytes(model.config, 1000)
    assert memory.weight_bytes(model) == sum(p.numel() * 4 for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    with_cache = memory.inference_bytes(model, 512, kv_cache=True)
    assert with_cache - memory.inference_bytes(model, 512) == memory.kv_cache_bytes(model.config, 512)


def test_a_length_beyond_the_free_memory_is_refused(monkeypatch):
    model = make_tiny("llama")
    free = memory.inference_bytes(model, 4096) - memory.weight_bytes(model)
    monkeypatch.setattr(memory, "available_bytes", lambda device: free)
    memory.check_lengths(model, [1024, 4096], what="eval ppl")  # fits exactly
    with pytest.raises(LongRopeError, match=r"eval ppl at 8,192 tokens needs at least .* choose a shorter --lengths"):
        memory.check_lengths(model, [8192], what="eval ppl")
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)  # unknown: no refusal
    memory.check_lengths(model, [10 ** 12], what="eval ppl")


def test_the_host_memory_is_read():
    assert memory.available_bytes("cpu") > 0
