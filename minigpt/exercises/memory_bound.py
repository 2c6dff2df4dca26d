"""Checkers for chapter 12, decoding is memory-bound (``notebooks/exercises/12_memory_bound_exercises.ipynb``).

Four exercises: int8 weights with one scale per row (``minigpt.quantize``) and the way back to floats, then
the bytes one decode step reads and the tokens/s that memory bandwidth allows (``minigpt.roofline``).

>>> from minigpt.roofline import bandwidth_bound, decode_step_bytes
>>> from minigpt.quantize import dequantize, quantize_per_channel
>>> result = check_quantize_per_channel(quantize_per_channel)
✓ quantize_per_channel: all 5 hidden cases pass
>>> result = check_dequantize(dequantize)
✓ dequantize: all 4 hidden cases pass
>>> result = check_decode_step_bytes(decode_step_bytes)
✓ decode_step_bytes: all 6 hidden cases pass
>>> result = check_bandwidth_bound(bandwidth_bound)
✓ bandwidth_bound: all 5 hidden cases pass
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, check, compare_values
from minigpt.model import GPTConfig
from minigpt.quantize import dequantize, quantize_per_channel
from minigpt.roofline import bandwidth_bound, decode_step_bytes

# one row of large weights and one of small ones: with a single scale for the whole matrix (1.2 / 127), the
# small row would round to the integers 1, 3, -2, 0
BIG_AND_SMALL = torch.tensor([[0.8, 1.2, -0.3, 0.05], [0.012, 0.03, -0.021, 0.004]])
ZERO_ROW = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.3, 3.0, -0.7, 2.2]])
# scales 1 and 0.5, exact in float32, so w / scale lands exactly on .5 however it is computed
HALVES = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5], [63.5, 0.25, 0.75, -1.25, 1.0, -0.25]])
NEGATIVE_MAX = torch.tensor([[-2.0, 0.9, 0.3, -1.1], [0.35, -0.1, -0.8, 0.25]])  # the largest |w| are negative
# seed 6: every w / scale is at least 0.012 away from a .5, so no way of computing it can round differently
SEEDED = torch.randn(8, 16, generator=torch.Generator().manual_seed(6))

REL_TOL = 1e-6  # tokens/s are compared relative to their size: 50 tokens/s and 500,000 alike


def check_quantize_per_channel(student: Callable) -> CheckResult:
    """Check ``quantize_per_channel(w)`` against ``minigpt.quantize.quantize_per_channel``.

    ``w`` is an (out, in) float matrix. Each row gets its own scale, its largest |weight| divided by 127 (a
    row of zeros gets scale 1), and its weights become ``torch.round(w / scale)`` as int8, in [-127, 127].
    Return ``(q, scale)``: q (out, in) of dtype torch.int8, scale (out,) of float32.

    >>> def one_scale_for_all(w):  # per tensor: the small row is crushed to a few levels
    ...     scale = w.abs().max() / 127
    ...     return torch.round(w / scale).to(torch.int8), scale.expand(w.size(0))
    >>> result = check_quantize_per_channel(one_scale_for_all)
    ✗ quantize_per_channel: hidden case 1 of 5 fails (a row of large weights and a row of small ones: each row \
needs its own scale, or the small row rounds to a few integers near 0)
      w = tensor([[0.8, 1.2, -0.3, 0.05], [0.012, 0.03, -0.021, 0.004]])
      q: wrong value at position [1, 0]
      expected: (tensor([[85, 127, -32, 5], [51, 127, -89, 17]]), tensor([0.0094, 0.0002]))
      got:      (tensor([[85, 127, -32, 5], [1, 3, -2, 0]]), tensor([0.0094, 0.0094]))
    """
    return check("quantize_per_channel", student, quantize_per_channel, [
        Case((BIG_AND_SMALL,), "a row of large weights and a row of small ones: each row needs its own scale, or "
             "the small row rounds to a few integers near 0"),
        Case((ZERO_ROW,), "a row of zeros gets scale 1, not 0: dividing by 0 makes nan"),
        Case((HALVES,), "halves: torch.round sends 0.5 to 0, 1.5 to 2, 2.5 to 2, to the even integer as "
             "Python's round does"),
        Case((NEGATIVE_MAX,), "the largest weights are negative: the scale comes from the largest |w|, not the "
             "largest w"),
        Case((SEEDED,), "random weights, 8 rows of 16", shown="w = torch.randn(8, 16) (seeded)"),
    ], compare=_compare_quantized)


def _compare_quantized(expected: tuple, got: object, atol: float) -> str | None:
    """Like ``compare_values``, but name the part that is wrong (q or scale) and ask for int8 integers."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return "return two things, q and scale: `return q, scale`"
    for name, e, g in zip(("q", "scale"), expected, got):
        problem = compare_values(e, g, atol)
        if problem is not None:
            return f"{name}: {problem}"
    if got[0].dtype != torch.int8:
        return f"q: the values are right, but its dtype is {got[0].dtype}: one byte each is torch.int8"
    return None


def check_dequantize(student: Callable) -> CheckResult:
    """Check ``dequantize(q, scale)`` against ``minigpt.quantize.dequantize``.

    ``q`` is an (out, in) int8 matrix and ``scale`` its (out,) float scales, one per row. Return the float
    matrix they stand for: row o of q times scale[o].

    >>> def scale_per_column(q, scale):  # scale (out,) lines up with the LAST dimension of q
    ...     return q.float() * scale
    >>> result = check_dequantize(scale_per_column)
    ✗ dequantize: hidden case 1 of 4 fails (scale[o] multiplies ROW o: scale[:, None] has shape (out, 1); a \
plain scale (out,) would multiply the columns)
      q = tensor([[64, -127], [127, 32]]), scale = tensor([0.5, 0.01])
      wrong value at position [0, 1]
      expected: tensor([[32.0, -63.5], [1.27, 0.32]])
      got:      tensor([[32.0, -1.27], [63.5, 0.32]])
    """
    square = torch.tensor([[64, -127], [127, 32]], dtype=torch.int8)
    extremes = torch.tensor([[-127, 127, 0, 1, -1], [5, -5, 127, -127, 0], [0, 0, 0, 0, 0]], dtype=torch.int8)
    return check("dequantize", student, dequantize, [
        Case((square, torch.tensor([0.5, 0.01])), "scale[o] multiplies ROW o: scale[:, None] has shape (out, 1); "
             "a plain scale (out,) would multiply the columns"),
        Case(quantize_per_channel(ZERO_ROW), "a row of zeros (scale 1) comes back as zeros"),
        Case((extremes, torch.tensor([0.02, 3.0, 1.0])), "3 rows of 5: -127 and 127, the ends of the range"),
        Case(quantize_per_channel(SEEDED), "the round trip of random weights, 8 rows of 16",
             shown="q, scale = quantize_per_channel(torch.randn(8, 16)) (seeded)"),
    ])


def _preset_case(preset: str, batch_size: int, context_len: int, why: str, *more: float) -> Case:
    """A case on ``GPTConfig.from_preset(preset)``, shown by name rather than as a dataclass of 7 fields."""
    config = GPTConfig.from_preset(preset)
    sizes = f"{config.n_layer} layers, n_embd {config.n_embd}, vocab_size {config.vocab_size}"
    extra = f", bandwidth_gb_s = {more[0]:g}" if more else ""
    shown = (f"config = GPTConfig.from_preset({preset!r}) ({sizes}){extra}, batch_size = {batch_size}, "
             f"context_len = {context_len}")
    return Case((config, *more, batch_size, context_len), why, shown=shown)


def check_decode_step_bytes(student: Callable) -> CheckResult:
    """Check ``decode_step_bytes(config, batch_size, context_len)`` against ``minigpt.roofline.decode_step_bytes``.

    The bytes one decode step reads, weights and cache in fp32 (4 bytes a number), as an int: every weight
    once (the whole batch shares them), and for each of the ``batch_size`` sequences a key and a value of
    ``n_embd`` numbers per layer for each of the ``context_len`` cached positions. The weights are every
    block's (four matrices, their biases, two layer norms), the final layer norm and the head, which is the
    token table (tied), read whole. The position table is not: a step reads one row of it.

    >>> def with_the_position_table(config, batch_size, context_len):
    ...     from minigpt.roofline import decode_step_bytes
    ...     return decode_step_bytes(config, batch_size, context_len) + 4 * config.block_size * config.n_embd
    >>> result = check_decode_step_bytes(with_the_position_table)
    ✗ decode_step_bytes: hidden case 1 of 6 fails (GPT-2 124M, empty cache: every weight once, 4 bytes each; \
the head is the tied token table, read whole; the position table is not: a step reads one row of it)
      config = GPTConfig.from_preset('gpt2') (12 layers, n_embd 768, vocab_size 50257), batch_size = 1, \
context_len = 0
      wrong value
      expected: 494613504
      got:      497759232
    """
    return check("decode_step_bytes", student, decode_step_bytes, [
        _preset_case("gpt2", 1, 0, "GPT-2 124M, empty cache: every weight once, 4 bytes each; the head is the tied "
                     "token table, read whole; the position table is not: a step reads one row of it"),
        _preset_case("gpt2", 1, 100, "100 cached positions: every layer reads a key AND a value of n_embd "
                     "numbers for each"),
        _preset_case("gpt2", 8, 100, "a batch of 8: the weights are read once for all 8, the cache once per "
                     "sequence"),
        _preset_case("tiny", 8, 0, "the tiny preset: the head (vocab_size × n_embd) is most of its weights"),
        _preset_case("gpt2-medium", 1, 100, "GPT-2 medium: 24 layers of width 1024"),
        _preset_case("small", 8, 100, "the small preset, a batch of 8 with 100 cached positions each"),
    ])


def check_bandwidth_bound(student: Callable) -> CheckResult:
    """Check ``bandwidth_bound(config, bandwidth_gb_s, batch_size, context_len)`` against ``minigpt.roofline``'s.

    The most tokens/s memory allows. A decode step reads ``decode_step_bytes(config, batch_size,
    context_len)`` bytes (fp32) and makes one token for each of the ``batch_size`` sequences; memory
    delivers ``bandwidth_gb_s`` GB (1e9 bytes) a second. Return tokens/s, batch_size · bandwidth / bytes
    per step, as a float (compared to 1e-6 of its size).

    >>> def one_token_a_step(config, bandwidth_gb_s, batch_size, context_len):
    ...     from minigpt.roofline import decode_step_bytes
    ...     return bandwidth_gb_s * 1e9 / decode_step_bytes(config, batch_size, context_len)
    >>> result = check_bandwidth_bound(one_token_a_step)
    ✗ bandwidth_bound: hidden case 2 of 5 fails (a batch of 8: one step reads the weights once and makes 8 \
tokens, one per sequence)
      config = GPTConfig.from_preset('gpt2') (12 layers, n_embd 768, vocab_size 50257), bandwidth_gb_s = 25, \
batch_size = 8, context_len = 100
      wrong value
      expected: 361.2743
      got:      45.1593
    """
    return check("bandwidth_bound", student, bandwidth_bound, [
        _preset_case("gpt2", 1, 0, "GPT-2 124M at 25 GB/s, a GB being 1e9 bytes: 25e9 bytes/s ÷ 494.6 MB a token",
                     25.0),
        _preset_case("gpt2", 8, 100, "a batch of 8: one step reads the weights once and makes 8 tokens, one "
                     "per sequence", 25.0),
        _preset_case("gpt2", 1, 100, "3,000 GB/s, a GPU's memory: 120 times the bound", 3000.0),
        _preset_case("tiny", 8, 100, "the tiny preset: the cache is a bigger share of each step", 25.0),
        _preset_case("gpt2-medium", 8, 100, "GPT-2 medium, a batch of 8 at 3,000 GB/s", 3000.0),
    ], compare=_compare_relative)


def _compare_relative(expected: float, got: object, atol: float) -> str | None:
    """None when the number ``got`` is within ``REL_TOL`` of ``expected``'s size (``atol`` is not used)."""
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()  # a 0-d tensor where a number was asked is fine
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"expected a number (tokens/s), got a {type(got).__name__}"
    return None if math.isclose(got, expected, rel_tol=REL_TOL) else "wrong value"
