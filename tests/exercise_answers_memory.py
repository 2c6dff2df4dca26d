"""Answers to the exercises of chapter 12 (decoding is memory-bound) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

from functools import partial

import gguf
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


def quantize_q4_0_block(x, *, signed=True, divisor=-8, rounding="trunc", clip=True, codes_from_float16=False,
                        order="gguf", divide=False, zero_guard=True, uint8=True):
    largest = x[x.abs().argmax()] if signed else x.abs().max()
    d = largest / divisor
    scale = d.half().float() if codes_from_float16 else d
    if divide:  # x / d, where gguf multiplies by 1 / d: the cases keep clear of halves, so both pass
        y = torch.zeros_like(x) if zero_guard and scale == 0 else x / scale
    else:
        y = x * (0.0 if zero_guard and scale == 0 else 1 / scale)
    if rounding == "trunc":
        codes = torch.trunc(y + 8.5)
    else:
        codes = (torch.round(y) if rounding == "even" else half_away_from_zero(y)) + 8
    codes = (codes.clamp(0, 15) if clip else codes).to(torch.uint8)
    low, high = {"gguf": (codes[:16], codes[16:]), "swapped": (codes[16:], codes[:16]),
                 "interleaved": (codes[0::2], codes[1::2])}[order]
    block = torch.cat([d.reshape(1).half().view(torch.uint8), low | high << 4])
    return block if uint8 else block.long()


def quantize_q4_0_block_float32_scale(x):
    d = x[x.abs().argmax()] / -8
    codes = torch.trunc(x * (0.0 if d == 0 else 1 / d) + 8.5).clamp(0, 15).to(torch.uint8)
    return torch.cat([d.reshape(1).view(torch.uint8), codes[:16] | codes[16:] << 4])  # 4 bytes of scale: 20 in all


def dequantize_q4_0_block(block, *, minus_eight=True, widen=True, order="gguf", scale_dtype=torch.float16):
    d = block[:2].view(scale_dtype).float()
    packed = block[2:]
    low, high = packed & 15, packed >> 4
    codes = {"gguf": torch.cat([low, high]), "high_first": torch.cat([high, low]),
             "interleaved": torch.stack([low, high], dim=1).flatten()}[order]
    if widen:
        codes = codes.long()
    q = codes - 8 if minus_eight else codes  # in uint8, 3 - 8 wraps around to 251
    return q.float() * d


def library_q4_0_block(x):
    return torch.tensor(gguf.quants.quantize(x.numpy()[None], gguf.GGMLQuantizationType.Q4_0)[0])


def library_q4_0_values(block):
    return torch.tensor(gguf.quants.dequantize(block.numpy()[None], gguf.GGMLQuantizationType.Q4_0)[0])


CORRECT = [
    (ch12.check_quantize_per_channel, quantize_per_channel),
    (ch12.check_quantize_per_channel, quantize.quantize_per_channel),
    (ch12.check_dequantize, dequantize),
    (ch12.check_dequantize, quantize.dequantize),
    (ch12.check_decode_step_bytes, decode_step_bytes),
    (ch12.check_decode_step_bytes, roofline.decode_step_bytes),
    (ch12.check_bandwidth_bound, bandwidth_bound),
    (ch12.check_bandwidth_bound, roofline.bandwidth_bound),
    (ch12.check_quantize_q4_0_block, quantize_q4_0_block),
    (ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, divide=True)),
    (ch12.check_quantize_q4_0_block, library_q4_0_block),
    (ch12.check_quantize_q4_0_block, lambda x: quantize.gguf_blocks(*quantize.quantize_q4_0(x[None]), "q4_0")[0]),
    (ch12.check_dequantize_q4_0_block, dequantize_q4_0_block),
    (ch12.check_dequantize_q4_0_block, library_q4_0_values),
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
    "q4_0 scale from |x|.max() / -8": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, signed=False), "|x|.max() / -8 would be negative"),
    "q4_0 scale from |x|.max() / 8": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, signed=False, divisor=8),
        "the first 2 bytes hold d as float16"),
    "q4_0 rounds to even instead of trunc(x / d + 8.5)": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, rounding="even"), "x / d lands exactly on halves"),
    "q4_0 rounds halves away from zero": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, rounding="away"), "away from zero"),
    "q4_0 forgets to clip 16 to 15": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, clip=False), "clip it to 15"),
    "q4_0 codes from the float16 scale": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, codes_from_float16=True),
        "only the stored scale is rounded to float16"),
    "q4_0 packs x[j + 16] in the low nibble": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, order="swapped"), "nibble order"),
    "q4_0 packs neighbours into a byte": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, order="interleaved"), "nibble order"),
    "q4_0 divides 0 by 0": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, divide=True, zero_guard=False),
        "a block of zeros"),
    "q4_0 bytes as int64": (
        ch12.check_quantize_q4_0_block, partial(quantize_q4_0_block, uint8=False), "torch.uint8"),
    "q4_0 scale as float32": (
        ch12.check_quantize_q4_0_block, quantize_q4_0_block_float32_scale, "wrong shape"),
    "q4_0 dequantize forgets the 8": (
        ch12.check_dequantize_q4_0_block, partial(dequantize_q4_0_block, minus_eight=False), "- 8) · d"),
    "q4_0 dequantize subtracts in uint8": (
        ch12.check_dequantize_q4_0_block, partial(dequantize_q4_0_block, widen=False), "wraps around"),
    "q4_0 dequantize reads the high nibble first": (
        ch12.check_dequantize_q4_0_block, partial(dequantize_q4_0_block, order="high_first"), "low 4 bits"),
    "q4_0 dequantize unpacks neighbours": (
        ch12.check_dequantize_q4_0_block, partial(dequantize_q4_0_block, order="interleaved"), "low 4 bits"),
    "q4_0 dequantize reads the scale as bfloat16": (
        ch12.check_dequantize_q4_0_block, partial(dequantize_q4_0_block, scale_dtype=torch.bfloat16),
        "read as a float16"),
}
