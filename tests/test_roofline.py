"""The arithmetic of chapter 12: the bytes one decode step reads, and the tokens/s a bandwidth allows."""

import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.roofline import WEIGHT_FORMATS, bandwidth_bound, decode_step_bytes, weight_count


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
    with pytest.raises(ValueError, match="weights must be one of fp32, fp16, bf16, int8, q8_0, q4_0, got 'fp8'"):
        decode_step_bytes(c, weights="fp8")
    with pytest.raises(ValueError, match="context_len must be an integer >= 0, got -1"):
        decode_step_bytes(c, context_len=-1)


def test_bandwidth_bound_formula():
    c = GPTConfig.from_preset("tiny")
    cache = 2 * c.n_layer * 8 * (16 + 32) * c.n_embd * 4  # keys and values of 8 rows, context 16 + 64/2
    assert bandwidth_bound(c, 10.0, 8, 16 + 32) == pytest.approx(8 * 10e9 / (4 * weight_count(c) + cache))
    assert bandwidth_bound(c, 10.0, weights="int8") == pytest.approx(10e9 / decode_step_bytes(c, weights="int8"))
    with pytest.raises(ValueError, match=r"bandwidth_gb_s must be a finite number > 0, got 0"):
        bandwidth_bound(c, 0)


def test_the_gguf_formats_and_fp16_count_their_matrices_bytes():
    """fp16 2 bytes a matrix weight; GGUF's q8_0 and q4_0 blocks of 32: 34 and 18 bytes (the fp16 scale included)."""
    assert WEIGHT_FORMATS == {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "q8_0": 34 / 32, "q4_0": 18 / 32}
    c = GPTConfig()
    matrices = 12 * 12 * 768 * 768 + 50257 * 768  # the blocks' four matrices and the tied token table
    rest = 4 * (weight_count(c) - matrices)  # biases and norms stay fp32
    assert decode_step_bytes(c, weights="fp16") == 2 * matrices + rest == 247_549_440
    assert decode_step_bytes(c, weights="q8_0") == matrices // 32 * 34 + rest == 131_738_160
    assert decode_step_bytes(c, weights="q4_0") == matrices // 32 * 18 + rest == 69_972_144
    assert decode_step_bytes(c, 1, 10, weights="q4_0") == 69_972_144 + 2 * 12 * 10 * 768 * 4  # fp32 cache
