"""Answers to the exercises of chapter 12 (decoding is memory-bound) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

from functools import partial

import torch

from minigpt import quantize, roofline
from minigpt.exercises import memory_bound as ch12


def quantize_per_channel(w, *, per_row=True, absolute=True, zero_row=True, rounding=torch.round, int8=True):
    w = w.float()
    size = w.abs() if absolute else w
    absmax = size.amax(dim=1) if per_row else size.max().expand(w.size(0))
    scale = torch.where(absmax > 0, absmax / 127, 1.0) if zero_row else absmax / 127
    q = rounding(w / scale[:, None]).clamp(-127, 127)
    return (q.to(torch.int8) if int8 else q.long()), scale


def half_away_from_zero(x):
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def dequantize(q, scale, *, per_row=True, multiply=True):
    s = scale[:, None] if per_row else scale
    return q.float() * s if multiply else q.float() / s


def decode_step_bytes(config, batch_size, context_len, *, cache=True, keys_and_values=2, cache_per_row=True,
                      position_table=False, untied_head=False, biases_and_norms=True):
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    weights = L * 12 * C * C + V * C
    if biases_and_norms:
        weights += L * 13 * C + 2 * C
    if position_table:
        weights += config.block_size * C
    if untied_head:  # the token table and the head counted as two matrices
        weights += V * C
    rows = batch_size if cache_per_row else 1
    cache_numbers = keys_and_values * L * rows * context_len * C if cache else 0
    return 4 * (weights + cache_numbers)


def bandwidth_bound(config, bandwidth_gb_s, batch_size, context_len, *, per_batch=True, gigabyte=1e9):
    tokens_per_step = batch_size if per_batch else 1
    return tokens_per_step * bandwidth_gb_s * gigabyte / decode_step_bytes(config, batch_size, context_len)


CORRECT = [
    (ch12.check_quantize_per_channel, quantize_per_channel),
    (ch12.check_quantize_per_channel, quantize.quantize_per_channel),
    (ch12.check_dequantize, dequantize),
    (ch12.check_dequantize, quantize.dequantize),
    (ch12.check_decode_step_bytes, decode_step_bytes),
    (ch12.check_decode_step_bytes, roofline.decode_step_bytes),
    (ch12.check_bandwidth_bound, bandwidth_bound),
    (ch12.check_bandwidth_bound, roofline.bandwidth_bound),
]

# (checker, a typical wrong answer, text its message must contain)
WRONG = {
    "quantize with one scale for the whole matrix": (
        ch12.check_quantize_per_channel, partial(quantize_per_channel, per_row=False), "each row needs its own scale"),
    "quantize by the largest w, not |w|": (
        ch12.check_quantize_per_channel, partial(quantize_per_channel, absolute=False), "not the largest w"),
    "quantize a row of zeros with scale 0": (
        ch12.check_quantize_per_channel, partial(quantize_per_channel, zero_row=False), "a row of zeros gets scale 1"),
    "quantize truncates instead of rounding": (
        ch12.check_quantize_per_channel, partial(quantize_per_channel, rounding=torch.trunc), "q: wrong value"),
    "quantize rounds halves away from zero": (
        ch12.check_quantize_per_channel, partial(quantize_per_channel, rounding=half_away_from_zero),
        "to the even integer"),
    "quantize keeps int64": (
        ch12.check_quantize_per_channel, partial(quantize_per_channel, int8=False), "torch.int8"),
    "dequantize scales the columns": (
        ch12.check_dequantize, partial(dequantize, per_row=False), "scale[o] multiplies ROW o"),
    "dequantize divides by the scale": (
        ch12.check_dequantize, partial(dequantize, multiply=False), "wrong value at position [0, 0]"),
    "decode bytes without the KV cache": (
        ch12.check_decode_step_bytes, partial(decode_step_bytes, cache=False), "100 cached positions"),
    "decode bytes count the keys only": (
        ch12.check_decode_step_bytes, partial(decode_step_bytes, keys_and_values=1), "a key AND a value"),
    "decode bytes count one cache for the whole batch": (
        ch12.check_decode_step_bytes, partial(decode_step_bytes, cache_per_row=False), "the cache once per sequence"),
    "decode bytes count the position table": (
        ch12.check_decode_step_bytes, partial(decode_step_bytes, position_table=True), "the position table is not: a step reads one row"),
    "decode bytes count the head apart from the token table": (
        ch12.check_decode_step_bytes, partial(decode_step_bytes, untied_head=True), "the tied token table"),
    "decode bytes forget the biases and norms": (
        ch12.check_decode_step_bytes, partial(decode_step_bytes, biases_and_norms=False), "expected: 494613504"),
    "decode bytes in MB, a float": (
        ch12.check_decode_step_bytes, lambda *args: roofline.decode_step_bytes(*args) / 1e6, "expected an int"),
    "bandwidth bound forgets the batch size": (
        ch12.check_bandwidth_bound, partial(bandwidth_bound, per_batch=False), "makes 8 tokens"),
    "bandwidth bound with GB = 2**30 bytes": (
        ch12.check_bandwidth_bound, partial(bandwidth_bound, gigabyte=2**30), "a GB being 1e9 bytes"),
}
