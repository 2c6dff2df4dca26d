"""The arithmetic of chapter 12: the bytes one decode step reads, and the tokens/s a bandwidth allows."""

import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.roofline import bandwidth_bound, decode_step_bytes, weight_count


def test_decode_step_bytes_counts_every_weight_once():
    c = GPTConfig()
    assert weight_count(c) == GPT(c).num_parameters() - c.block_size * c.n_embd  # all but the position table
    assert decode_step_bytes(c) == 4 * weight_count(c)
    assert decode_step_bytes(c, batch_size=8, context_len=100) == 4 * weight_count(c) + 2 * 12 * 8 * 100 * 768 * 4
    assert decode_step_bytes(c, weights="bf16") == 2 * weight_count(c)
    assert decode_step_bytes(c, 1, 10, weights="bf16") == 2 * weight_count(c) + 2 * 12 * 10 * 768 * 2  # bf16 cache
    # int8: one byte per matrix weight, fp32 scales (one per output channel) and fp32 biases and norms
    matrices = 12 * 12 * 768 * 768 + 50257 * 768
    assert decode_step_bytes(c, weights="int8") == matrices + 4 * (12 * 9 * 768 + 50257 + weight_count(c) - matrices)
    with pytest.raises(ValueError, match="weights must be one of fp32, bf16, int8, got 'fp16'"):
        decode_step_bytes(c, weights="fp16")
    with pytest.raises(ValueError, match="context_len must be an integer >= 0, got -1"):
        decode_step_bytes(c, context_len=-1)


def test_bandwidth_bound_formula():
    c = GPTConfig.from_preset("tiny")
    cache = 2 * c.n_layer * 8 * (16 + 32) * c.n_embd * 4  # keys and values of 8 rows, context 16 + 64/2
    assert bandwidth_bound(c, 10.0, 8, 16 + 32) == pytest.approx(8 * 10e9 / (4 * weight_count(c) + cache))
    assert bandwidth_bound(c, 10.0, weights="int8") == pytest.approx(10e9 / decode_step_bytes(c, weights="int8"))
    with pytest.raises(ValueError, match=r"bandwidth_gb_s must be a finite number > 0, got 0"):
        bandwidth_bound(c, 0)
