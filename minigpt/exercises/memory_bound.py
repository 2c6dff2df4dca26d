"""Checkers for chapter 12, decoding is memory-bound (``notebooks/exercises/12_memory_bound_exercises.ipynb``).

Six exercises: int8 weights with one scale per row (``minigpt.quantize``) and the way back to floats, then
the bytes one decode step reads and the tokens/s that memory bandwidth allows (``minigpt.roofline``), then
one block of GGUF's Q4_0, quantized to its 18 bytes and back, as the ``gguf`` package (llama.cpp's own)
does it. A ``seed`` checks on cases of the same kinds drawn from it (``minigpt.exercises.grading``): random
weights, halves, configurations, bandwidths and blocks.

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
>>> result = check_decode_step_bytes(decode_step_bytes, seed=1)
✓ decode_step_bytes: all 6 drawn cases pass
>>> result = check_quantize_q4_0_block(q4_0_block)
✓ quantize_q4_0_block: all 7 hidden cases pass
>>> result = check_dequantize_q4_0_block(q4_0_values, seed=1)
✓ dequantize_q4_0_block: all 5 drawn cases pass
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_values, show
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


def check_quantize_per_channel(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``quantize_per_channel(w)`` against ``minigpt.quantize.quantize_per_channel``.

    ``w`` is an (out, in) float matrix. Each row gets its own scale, its largest |weight| divided by 127 (a
    row of zeros gets scale 1), and its weights become ``torch.round(w / scale)`` as int8, in [-127, 127].
    Return ``(q, scale)``: q (out, in) of dtype torch.int8, scale (out,) of float32. A ``seed`` checks on
    cases drawn from it.

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
    cases = cases_for(seed, _quantize_cases, _drawn_quantize_cases)
    return check("quantize_per_channel", student, quantize_per_channel, cases, compare=_compare_quantized)


def _quantize_cases() -> list[Case]:
    return [
        Case((BIG_AND_SMALL,), "a row of large weights and a row of small ones: each row needs its own scale, or "
             "the small row rounds to a few integers near 0"),
        Case((ZERO_ROW,), "a row of zeros gets scale 1, not 0: dividing by 0 makes nan"),
        Case((HALVES,), "halves: torch.round sends 0.5 to 0, 1.5 to 2, 2.5 to 2, to the even integer as "
             "Python's round does"),
        Case((NEGATIVE_MAX,), "the largest weights are negative: the scale comes from the largest |w|, not the "
             "largest w"),
        Case((SEEDED,), "random weights, 8 rows of 16", shown="w = torch.randn(8, 16) (seeded)"),
    ]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An int from ``low`` to ``high``, both included, drawn from ``g``."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _weights(g: torch.Generator, rows: int, cols: int, size: float, decimals: int = 2) -> torch.Tensor:
    """(rows, cols) random weights of about ``size``, rounded to ``decimals`` so that a failure message shows them."""
    return (size * torch.randn(rows, cols, generator=g)).round(decimals=decimals)


def _rounds_clearly(w: torch.Tensor) -> bool:
    """Whether every w / scale is at least 1e-3 away from a .5, so that no way of computing it rounds differently."""
    absmax = w.abs().amax(dim=1, keepdim=True)
    levels = (w / torch.where(absmax > 0, absmax / 127, 1.0)).abs()
    return bool(((levels - levels.floor() - 0.5).abs() >= 1e-3).all())


def _drawn_quantize_cases(g: torch.Generator) -> list[Case]:
    cols = _randint(g, 4, 6)

    def clear(make: Callable[[], torch.Tensor]) -> torch.Tensor:
        while True:  # redraw until no weight lies near a rounding boundary
            w = make()
            if _rounds_clearly(w):
                return w

    def big_and_small() -> torch.Tensor:  # the small row is at least 10 times smaller, and not all zeros
        while True:
            big, small = _weights(g, 1, cols, 1.0), _weights(g, 1, cols, 0.02, decimals=3)
            if 0 < 10 * small.abs().max() <= big.abs().max():
                return torch.cat([big, small])

    def zero_row() -> torch.Tensor:
        w = _weights(g, 2, cols, 1.5)
        w[_randint(g, 0, 1)] = 0.0
        return w

    def negative_max() -> torch.Tensor:  # in each row the largest |w| is negative, and some w is positive
        w = _weights(g, 2, cols, 1.0)
        for row in w:
            row[row.abs().argmax()] = -(row.abs().max() + 0.5)  # the largest |w|, now negative and 0.5 clear
            if row.max() <= 0:
                row[row.argmax()] = 0.25
        return w

    rows, wide = _randint(g, 3, 4), _randint(g, 6, 8)
    return [
        Case((clear(big_and_small),), "a row of large weights and a row of small ones: each row needs its own "
             "scale, or the small row rounds to a few integers near 0"),
        Case((clear(zero_row),), "a row of zeros gets scale 1, not 0: dividing by 0 makes nan"),
        Case((_halves(g, 2, cols),), "halves: torch.round sends 0.5 to 0, 1.5 to 2, 2.5 to 2, to the even integer "
             "as Python's round does"),
        Case((clear(negative_max),), "the largest weights are negative: the scale comes from the largest |w|, not "
             "the largest w"),
        Case((clear(lambda: _weights(g, rows, wide, 1.0)),), f"random weights, {rows} rows of {wide}"),
    ]


def _sign(g: torch.Generator) -> int:
    """1 or -1, drawn from ``g``."""
    return 1 - 2 * _randint(g, 0, 1)


def _halves(g: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    """Weights that land exactly on halves: each row's scale is a power of 2 (1 to 1/8), exact in float32.

    Each row holds ±127 scales (its largest |w|), a half with an even integer part (0.5 or 2.5 ..., which
    rounding to even sends down and rounding away from zero up), one with an odd part (1.5 ..., which
    truncation sends down) and random halves up to ±10.5, in a random order.
    """
    out = []
    for _ in range(rows):
        scale = 2.0 ** -_randint(g, 0, 3)
        even = _sign(g) * (2 * _randint(g, 0, 5) + 0.5)
        odd = _sign(g) * (2 * _randint(g, 0, 4) + 1.5)
        random_halves = (torch.randint(-11, 11, (cols - 3,), generator=g) + 0.5).tolist()  # -10.5 to 10.5
        row = torch.tensor([_sign(g) * 127.0, even, odd, *random_halves]) * scale
        out.append(row[torch.randperm(cols, generator=g)])
    return torch.stack(out)


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


def check_dequantize(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``dequantize(q, scale)`` against ``minigpt.quantize.dequantize``.

    ``q`` is an (out, in) int8 matrix and ``scale`` its (out,) float scales, one per row. Return the float
    matrix they stand for: row o of q times scale[o]. A ``seed`` checks on cases drawn from it.

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
    return check("dequantize", student, dequantize, cases_for(seed, _dequantize_cases, _drawn_dequantize_cases))


def _dequantize_cases() -> list[Case]:
    square = torch.tensor([[64, -127], [127, 32]], dtype=torch.int8)
    extremes = torch.tensor([[-127, 127, 0, 1, -1], [5, -5, 127, -127, 0], [0, 0, 0, 0, 0]], dtype=torch.int8)
    return [
        Case((square, torch.tensor([0.5, 0.01])), "scale[o] multiplies ROW o: scale[:, None] has shape (out, 1); "
             "a plain scale (out,) would multiply the columns"),
        Case(quantize_per_channel(ZERO_ROW), "a row of zeros (scale 1) comes back as zeros"),
        Case((extremes, torch.tensor([0.02, 3.0, 1.0])), "3 rows of 5: -127 and 127, the ends of the range"),
        Case(quantize_per_channel(SEEDED), "the round trip of random weights, 8 rows of 16",
             shown="q, scale = quantize_per_channel(torch.randn(8, 16)) (seeded)"),
    ]


def _scales(g: torch.Generator, rows: int) -> torch.Tensor:
    """(rows,) different scales from 0.001 to 1, 3 decimals: readable in a failure message, none of them 1."""
    while True:
        scale = (0.001 + 0.998 * torch.rand(rows, generator=g)).round(decimals=3)
        if len(set(scale.tolist())) == rows:
            return scale


def _drawn_dequantize_cases(g: torch.Generator) -> list[Case]:
    n, cols = _randint(g, 2, 4), _randint(g, 4, 6)
    # no zeros, so that every entry tells multiplying from dividing, rows from columns
    square = (torch.randint(1, 128, (n, n), generator=g) * (1 - 2 * torch.randint(0, 2, (n, n), generator=g)))
    square = square.to(torch.int8)
    with_zero_row = _weights(g, 2, cols, 1.5)
    with_zero_row[_randint(g, 0, 1)] = 0.0
    ends = torch.tensor([-127, 127, 0, 1, -1], dtype=torch.int8)
    extremes = torch.stack([ends[torch.randperm(5, generator=g)] for _ in range(3)])
    rows, wide = _randint(g, 3, 4), _randint(g, 6, 8)
    return [
        Case((square, _scales(g, n)), f"scale[o] multiplies ROW o: scale[:, None] has shape ({n}, 1); a plain scale "
             f"({n},) would multiply the columns"),
        Case(quantize_per_channel(with_zero_row), "a row of zeros (scale 1) comes back as zeros"),
        Case((extremes, _scales(g, 3) * 4), "3 rows of 5: -127 and 127, the ends of the range"),
        Case(quantize_per_channel(_weights(g, rows, wide, 1.0)), f"the round trip of random weights, {rows} rows "
             f"of {wide}"),
    ]


def _preset_case(preset: str, batch_size: int, context_len: int, why: str, *more: float) -> Case:
    """A case on ``GPTConfig.from_preset(preset)``, shown by name rather than as a dataclass of 7 fields."""
    config = GPTConfig.from_preset(preset)
    sizes = f"{config.n_layer} layers, n_embd {config.n_embd}, vocab_size {config.vocab_size}"
    extra = f", bandwidth_gb_s = {more[0]:g}" if more else ""
    shown = (f"config = GPTConfig.from_preset({preset!r}) ({sizes}){extra}, batch_size = {batch_size}, "
             f"context_len = {context_len}")
    return Case((config, *more, batch_size, context_len), why, shown=shown)


def check_decode_step_bytes(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``decode_step_bytes(config, batch_size, context_len)`` against ``minigpt.roofline.decode_step_bytes``.

    The bytes one decode step reads, weights and cache in fp32 (4 bytes a number), as an int: every weight
    once (the whole batch shares them), and for each of the ``batch_size`` sequences a key and a value of
    ``n_embd`` numbers per layer for each of the ``context_len`` cached positions. The weights are every
    block's (four matrices, their biases, two layer norms), the final layer norm and the head, which is the
    token table (tied), read whole. The position table is not: a step reads one row of it. A ``seed``
    checks on cases drawn from it, on configurations drawn too.

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
    cases = cases_for(seed, _decode_cases, _drawn_decode_cases)
    return check("decode_step_bytes", student, decode_step_bytes, cases)


def _decode_cases() -> list[Case]:
    return [
        _preset_case("gpt2", 1, 0, "GPT-2 124M, empty cache: every weight once, 4 bytes each; the head is the tied "
                     "token table, read whole; the position table is not: a step reads one row of it"),
        _preset_case("gpt2", 1, 100, "100 cached positions: every layer reads a key AND a value of n_embd "
                     "numbers for each"),
        _preset_case("gpt2", 8, 100, "a batch of 8: the weights are read once for all 8, the cache once per "
                     "sequence"),
        _preset_case("tiny", 8, 0, "the tiny preset: the head (vocab_size × n_embd) is most of its weights"),
        _preset_case("gpt2-medium", 1, 100, "GPT-2 medium: 24 layers of width 1024"),
        _preset_case("small", 8, 100, "the small preset, a batch of 8 with 100 cached positions each"),
    ]


def _drawn_config(g: torch.Generator) -> GPTConfig:
    """A GPT's shape: 1 to 48 layers, 1 to 16 heads of 16 to 128 numbers, 256 to 100,000 tokens, 64 to 4,096
    positions. Every count is an int, so the bytes are exact."""
    n_head = _randint(g, 1, 16)
    head_size = 2 ** _randint(g, 4, 7)
    return GPTConfig(vocab_size=_randint(g, 256, 100_000), block_size=2 ** _randint(g, 6, 12),
                     n_layer=_randint(g, 1, 48), n_head=n_head, n_embd=n_head * head_size)


def _config_case(config: GPTConfig, batch_size: int, context_len: int, why: str, *more: float) -> Case:
    """A case on a drawn ``config``, shown by its five sizes rather than as a dataclass of 7 fields."""
    sizes = ", ".join(f"{name}={getattr(config, name)}" for name in ("vocab_size", "block_size", "n_layer", "n_head",
                                                                      "n_embd"))
    extra = f", bandwidth_gb_s = {more[0]:g}" if more else ""
    shown = f"config = GPTConfig({sizes}){extra}, batch_size = {batch_size}, context_len = {context_len}"
    return Case((config, *more, batch_size, context_len), why, shown=shown)


def _drawn_decode_cases(g: torch.Generator) -> list[Case]:
    config, other = _drawn_config(g), _drawn_config(g)
    context = _randint(g, 1, config.block_size)
    batch = _randint(g, 2, 16)
    other_context = _randint(g, 1, other.block_size)
    return [
        _config_case(config, 1, 0, "empty cache: every weight once, 4 bytes each; the head is the tied token table, "
                     "read whole; the position table is not: a step reads one row of it"),
        _config_case(config, 1, context, f"{context} cached positions: every layer reads a key AND a value of n_embd "
                     "numbers for each"),
        _config_case(config, batch, context, f"a batch of {batch}: the weights are read once for all {batch}, the "
                     "cache once per sequence"),
        _config_case(other, batch, 0, "another shape, empty caches: the weights alone"),
        _config_case(other, 1, other_context, f"another shape, {other_context} cached positions"),
        _config_case(other, batch, other_context, f"another shape, a batch of {batch} with {other_context} cached "
                     "positions each"),
    ]


def check_bandwidth_bound(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``bandwidth_bound(config, bandwidth_gb_s, batch_size, context_len)`` against ``minigpt.roofline``'s.

    The most tokens/s memory allows. A decode step reads ``decode_step_bytes(config, batch_size,
    context_len)`` bytes (fp32) and makes one token for each of the ``batch_size`` sequences; memory
    delivers ``bandwidth_gb_s`` GB (1e9 bytes) a second. Return tokens/s, batch_size · bandwidth / bytes
    per step, as a float (compared to 1e-6 of its size). A ``seed`` checks on cases drawn from it.

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
    cases = cases_for(seed, _bandwidth_cases, _drawn_bandwidth_cases)
    return check("bandwidth_bound", student, bandwidth_bound, cases, compare=_compare_relative)


def _bandwidth_cases() -> list[Case]:
    return [
        _preset_case("gpt2", 1, 0, "GPT-2 124M at 25 GB/s, a GB being 1e9 bytes: 25e9 bytes/s ÷ 494.6 MB a token",
                     25.0),
        _preset_case("gpt2", 8, 100, "a batch of 8: one step reads the weights once and makes 8 tokens, one "
                     "per sequence", 25.0),
        _preset_case("gpt2", 1, 100, "3,000 GB/s, a GPU's memory: 120 times the bound", 3000.0),
        _preset_case("tiny", 8, 100, "the tiny preset: the cache is a bigger share of each step", 25.0),
        _preset_case("gpt2-medium", 8, 100, "GPT-2 medium, a batch of 8 at 3,000 GB/s", 3000.0),
    ]


def _drawn_bandwidth_cases(g: torch.Generator) -> list[Case]:
    config, other = _drawn_config(g), _drawn_config(g)
    laptop, gpu = float(_randint(g, 10, 120)), float(_randint(g, 500, 4000))  # GB/s
    context, batch = _randint(g, 1, config.block_size), _randint(g, 2, 16)
    return [
        _config_case(config, 1, 0, f"{laptop:g} GB/s, a GB being 1e9 bytes: {laptop:g}e9 bytes/s ÷ the bytes of a "
                     "step", laptop),
        _config_case(config, batch, context, f"a batch of {batch}: one step reads the weights once and makes "
                     f"{batch} tokens, one per sequence", laptop),
        _config_case(config, 1, context, f"{gpu:g} GB/s, a GPU's memory", gpu),
        _config_case(other, batch, _randint(g, 1, other.block_size), "another shape, a batch at a laptop's "
                     "bandwidth", laptop),
        _config_case(other, batch, _randint(g, 1, other.block_size), "another shape, a batch at a GPU's bandwidth",
                     gpu),
    ]


def _compare_relative(expected: float, got: object, atol: float) -> str | None:
    """None when the number ``got`` is within ``REL_TOL`` of ``expected``'s size (``atol`` is not used)."""
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()  # a 0-d tensor where a number was asked is fine
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"expected a number (tokens/s), got a {type(got).__name__}"
    return None if math.isclose(got, expected, rel_tol=REL_TOL) else "wrong value"


# ---- GGUF's Q4_0: one block of 32 numbers in 18 bytes, as the gguf package (llama.cpp's own) makes it ----

Q4_0 = GGMLQuantizationType.Q4_0
BLOCK = 32  # numbers per block
BLOCK_BYTES = 18  # d as float16 (2 bytes), then 32 codes of 4 bits (16 bytes)
MARGIN = 0.02  # a drawn x / d stays this far from a half, with d in float32 or float16: no way of computing it tips


def q4_0_block(x: torch.Tensor) -> torch.Tensor:
    """GGUF's Q4_0 bytes of one block ``x`` of 32 numbers, (18,) uint8, made by ``gguf.quants.quantize``.

    >>> block = q4_0_block(torch.arange(32.0) - 8)  # -8 to 23: the x of largest magnitude is 23, d = 23 / -8
    >>> block.shape, block.dtype, block[:2].view(torch.float16).item()
    (torch.Size([18]), torch.uint8, -2.875)
    """
    return torch.tensor(gguf_quantize(x.float().numpy().reshape(1, BLOCK), Q4_0).reshape(BLOCK_BYTES))


def q4_0_values(block: torch.Tensor) -> torch.Tensor:
    """The 32 float32 numbers GGUF's Q4_0 ``block`` (18,) uint8 stands for, by ``gguf.quants.dequantize``.

    >>> q4_0_values(q4_0_block(torch.arange(32.0) - 8))[:4].tolist()  # x = -8, -7, -6, -5: codes 11, 10, 10, 10
    [-8.625, -5.75, -5.75, -5.75]
    """
    return torch.tensor(gguf_dequantize(block.numpy().reshape(1, BLOCK_BYTES), Q4_0).reshape(BLOCK))


def _scale_of(block: torch.Tensor) -> float:
    """d, the float16 in a Q4_0 block's first two bytes."""
    return block[:2].contiguous().view(torch.float16).item()


def _codes_of(block: torch.Tensor) -> torch.Tensor:
    """The 32 codes (0 to 15) of a Q4_0 block in the order of x: byte j holds x[j]'s (low 4 bits) and x[j + 16]'s."""
    packed = block[2:].long()
    return torch.cat([packed & 15, packed >> 4])


def _pack(d: float, codes: torch.Tensor) -> torch.Tensor:
    """A Q4_0 block's 18 bytes from its scale ``d`` and 32 ``codes`` (0 to 15)."""
    codes = codes.to(torch.uint8)
    return torch.cat([torch.tensor([d], dtype=torch.float16).view(torch.uint8), codes[:16] | codes[16:] << 4])


def check_quantize_q4_0_block(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``quantize_q4_0_block(x)`` against the ``gguf`` package's Q4_0 (``gguf.quants.quantize``).

    ``x`` is one block of 32 float32 numbers. Its scale d is the x of largest magnitude, sign kept, divided by
    -8 (the first one, if two tie); each x gets the code trunc(x / d + 8.5), clipped to 0 to 15, so that
    x ≈ (code - 8) · d (a block of zeros: d = 0 and every code 8). Return GGUF's 18 bytes, a (18,) torch.uint8
    tensor: d as float16 (2 bytes), then byte j = the code of x[j] | the code of x[j + 16] << 4. A ``seed``
    checks on cases drawn from it.

    >>> def rounds(x):  # torch.round instead of trunc(x / d + 8.5): a half goes to the even integer
    ...     d = x[x.abs().argmax()] / -8
    ...     codes = (torch.round(x / d) + 8).clamp(0, 15).to(torch.uint8)
    ...     return torch.cat([d.reshape(1).half().view(torch.uint8), codes[:16] | codes[16:] << 4])
    >>> print(check_quantize_q4_0_block(rounds).message.splitlines()[0])  # doctest: +ELLIPSIS
    ✗ quantize_q4_0_block: hidden case 3 of 7 fails (x / d lands exactly on halves ...
    """
    cases = cases_for(seed, lambda: _quantize_q4_0_cases(torch.Generator().manual_seed(0)), _quantize_q4_0_cases)
    return check("quantize_q4_0_block", student, q4_0_block, cases, compare=_compare_q4_0_bytes)


def _largest(x: torch.Tensor) -> torch.Tensor:
    """The x of largest magnitude, sign kept (the first, if two tie)."""
    return x[x.abs().argmax()]


def _clear_of_halves(x: torch.Tensor) -> bool:
    """Whether every x / d is at least ``MARGIN`` from a half, with d in float32 and in float16 alike."""
    d = _largest(x) / -8
    if d == 0:
        return True
    for scale in (d, d.half().float()):
        shifted = x / scale + 8.5  # a half of x / d is a whole number here, where trunc tips over
        if ((shifted - shifted.round()).abs() < MARGIN).any():
            return False
    return True


def _q4_block(g: torch.Generator, sign: int, decimals: int = 2) -> torch.Tensor:
    """32 numbers whose largest magnitude, 0.5 to 3, has ``sign``; the others within 0.9 of it, clear of halves."""
    while True:
        largest = sign * (0.5 + 2.5 * torch.rand((), generator=g)).round(decimals=decimals)
        x = ((2 * torch.rand(BLOCK, generator=g) - 1) * 0.9 * largest.abs()).round(decimals=decimals)
        x[_randint(g, 0, BLOCK - 1)] = largest
        if _clear_of_halves(x):
            return x


def _halves_block(g: torch.Generator) -> torch.Tensor:
    """A block whose x / d are halves from -7.5 to 6.5, both -0.5 and 0.5 among them, d a power of 2 (exact)."""
    d = -_sign(g) * 2.0 ** -_randint(g, 1, 4)
    y = torch.randint(-8, 7, (BLOCK,), generator=g) + 0.5  # -7.5 to 6.5: no code past 15
    y[:3] = torch.tensor([-8.0, -0.5, 0.5])  # the largest (x / d = -8, so x = -8 d), and the two halves nearest 0
    return (y * d)[torch.randperm(BLOCK, generator=g)]


def _tie_block(g: torch.Generator) -> torch.Tensor:
    """A block holding m and -m, its largest magnitude twice, in a drawn order; the rest clear of halves."""
    x = _q4_block(g, 1)
    m = x.abs().max()
    first, second = torch.randperm(BLOCK, generator=g)[:2].sort().values
    x[first], x[second] = (m, -m) if _sign(g) > 0 else (-m, m)
    return x


def _float16_block(g: torch.Generator) -> torch.Tensor:
    """A block (4 decimals) where d rounded to float16 would tip a few codes: x / d is within 0.004 of a half,
    on one side with d in float32 and on the other with d in float16, and at least 1e-4 from it."""
    while True:  # a largest magnitude whose d rounds to float16 by at least 3e-4 of itself
        m = (1.0 + 2.0 * torch.rand((), generator=g)).round(decimals=4) * _sign(g)
        d = m / -8
        if (d.half().float() / d - 1).abs() >= 3e-4:
            break
    candidates = ((2 * torch.rand(20_000, generator=g) - 1) * 0.9 * m.abs()).round(decimals=4)
    y32, y16 = candidates / d + 8.5, candidates / d.half().float() + 8.5
    tipping = (y32.trunc() != y16.trunc()) & ((y32 - y32.round()).abs() >= 1e-4)
    clear = ((y32 - y32.round()).abs() >= MARGIN) & ((y16 - y16.round()).abs() >= MARGIN)
    x = torch.cat([m.reshape(1), candidates[tipping][:3], candidates[clear][: BLOCK - 4]])
    return x[torch.randperm(BLOCK, generator=g)]


def _quantize_q4_0_cases(g: torch.Generator) -> list[Case]:
    return [
        Case((_q4_block(g, 1),), "the x of largest magnitude is positive: d = that x / -8 is negative (it gets "
             "code 0); each code is trunc(x / d + 8.5), and byte j holds the codes of x[j] and x[j + 16]"),
        Case((_q4_block(g, -1),), "the x of largest magnitude is negative: d = that x / -8 is positive, the sign "
             "kept; |x|.max() / -8 would be negative"),
        Case((_halves_block(g),), "x / d lands exactly on halves (d is a power of 2): trunc(x / d + 8.5) takes "
             "each half up (-0.5 to code 8, 0.5 to 9), where torch.round goes to the even integer and rounding "
             "away from zero takes -0.5 down"),
        Case((_tie_block(g),), "the largest magnitude twice, m and -m: the first sets d, and the other lands on "
             "x / d = 8, code 16, one past 4 bits: clip it to 15"),
        Case((_float16_block(g),), "the codes come from d in float32; only the stored scale is rounded to "
             "float16 (here float16's d would move a few x / d across a half)"),
        Case((torch.zeros(BLOCK),), "a block of zeros: d = 0 / -8, and every code is 8: x / d would divide 0 by "
             "0 (gguf multiplies by 1 / d, taken as 0 when d is 0)"),
        Case((_weights(g, 1, BLOCK, 0.5)[0],), "random numbers, as in a weight matrix"),
    ]


def _compare_q4_0_bytes(expected: torch.Tensor, got: object, atol: float) -> str | None:
    """None when ``got`` holds GGUF's 18 bytes; else which part is wrong: the scale, a code, their order, the dtype."""
    if not isinstance(got, torch.Tensor):
        return f"expected a tensor of {BLOCK_BYTES} bytes (torch.uint8), got a {type(got).__name__}"
    if got.shape != expected.shape:
        return (f"wrong shape: expected ({BLOCK_BYTES},), 2 bytes of d as float16 then 16 bytes of two 4-bit codes "
                f"each; got {tuple(got.shape)}")
    if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
        return f"the bytes must be whole numbers from 0 to 255 (torch.uint8), got dtype {got.dtype}"
    values = got.long()
    outside = (values < 0) | (values > 255)
    if outside.any():
        i = int(outside.nonzero()[0])
        return f"byte {i} is {int(values[i])}: a byte holds 0 to 255"
    as_bytes = values.to(torch.uint8)
    if not torch.equal(as_bytes[:2], expected[:2]):
        return (f"scale: the first 2 bytes hold d as float16: expected d = {show(_scale_of(expected))}, "
                f"got d = {show(_scale_of(as_bytes))}")
    want, have = _codes_of(expected), _codes_of(as_bytes)
    if not torch.equal(want, have):
        if torch.equal(want.sort().values, have.sort().values):
            return ("the right codes in the wrong places (nibble order): byte j holds the code of x[j] in its low "
                    "4 bits and the code of x[j + 16] in its high 4 bits")
        i = int((want != have).nonzero()[0])
        return f"the code of x[{i}]: expected {int(want[i])}, got {int(have[i])}"
    if got.dtype != torch.uint8:
        return f"the bytes are right, but their dtype is {got.dtype}: one byte each is torch.uint8"
    return None


def check_dequantize_q4_0_block(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``dequantize_q4_0_block(block)`` against the ``gguf`` package's Q4_0 (``gguf.quants.dequantize``).

    ``block`` is GGUF's 18 bytes of one Q4_0 block, a (18,) torch.uint8 tensor: d as float16 (2 bytes), then
    byte j holding the code of x[j] in its low 4 bits and the code of x[j + 16] in its high 4 bits. Return the
    32 numbers x = (code - 8) · d, float32. A ``seed`` checks on cases drawn from it.

    >>> def high_nibble_first(block):  # x[j] from the HIGH 4 bits of byte j
    ...     d = block[:2].view(torch.float16).float()
    ...     codes = torch.cat([block[2:] >> 4, block[2:] & 15]).long()
    ...     return (codes - 8) * d
    >>> result = check_dequantize_q4_0_block(high_nibble_first)  # doctest: +ELLIPSIS
    ✗ dequantize_q4_0_block: hidden case 3 of 5 fails (byte j holds the code of x[j] in its low 4 bits ...
    ...
    """
    cases = cases_for(seed, lambda: _dequantize_q4_0_cases(torch.Generator().manual_seed(0)), _dequantize_q4_0_cases)
    return check("dequantize_q4_0_block", student, q4_0_values, cases)


def _block_case(block: torch.Tensor, why: str) -> Case:
    """A case on a Q4_0 ``block``, shown with the scale and the codes it holds."""
    shown = (f"block = {show(block)}  (d = {show(_scale_of(block))}; the codes of x[0] to x[31]: "
             f"{_codes_of(block).tolist()})")
    return Case((block,), why, shown=shown)


def _drawn_scale(g: torch.Generator) -> float:
    """A scale d with 2 decimals, 0.05 to 0.6, either sign."""
    return _sign(g) * round(0.05 + 0.55 * float(torch.rand((), generator=g)), 2)


def _dequantize_q4_0_cases(g: torch.Generator) -> list[Case]:
    one_code, low_code = _randint(g, 9, 15), _randint(g, 0, 7)
    low = torch.randperm(16, generator=g)
    ordered = torch.cat([low, (low + 1 + torch.randperm(15, generator=g)[0]) % 16])  # x[j + 16] unlike x[j]
    return [
        _block_case(_pack(_drawn_scale(g), torch.full((BLOCK,), one_code)), f"every code is {one_code}: each x is "
                    f"({one_code} - 8) · d, with d the first two bytes read as a float16 "
                    "(block[:2].view(torch.float16))"),
        _block_case(_pack(_drawn_scale(g), torch.full((BLOCK,), low_code)), f"every code is {low_code}: x = "
                    f"({low_code} - 8) · d is negative, but in torch.uint8 {low_code} - 8 wraps around to "
                    f"{low_code + 248}: widen the codes (.long()) before subtracting 8"),
        _block_case(_pack(_drawn_scale(g), ordered), "byte j holds the code of x[j] in its low 4 bits (byte & 15) "
                    "and the code of x[j + 16] in its high 4 bits (byte >> 4)"),
        _block_case(q4_0_block(_weights(g, 1, BLOCK, 0.5)[0]), "the bytes of a block of random numbers, as "
                    "quantize_q4_0_block makes them"),
        _block_case(q4_0_block(torch.zeros(BLOCK)), "a block of zeros (d = -0.0, every code 8) stands for zeros"),
    ]
