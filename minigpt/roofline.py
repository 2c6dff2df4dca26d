"""How fast can decoding go? The bytes one decode step reads, and the tokens/s a memory bandwidth allows.

A decode step feeds one token per sequence, so every weight matrix is multiplied by a single vector: each
weight is read from memory once and used for one multiply and one add. Arithmetic is far faster than
memory, so at small batch sizes the time of a step is set by the bytes it reads (chapter 12)::

    time per step >= (bytes read) / (memory bandwidth)

This module is that arithmetic, nothing measured: ``minigpt bench`` measures the bandwidth
(``minigpt.bench.measure_bandwidth``) and holds the decoders against the bound computed here.

>>> from minigpt.model import GPTConfig
>>> round(bandwidth_bound(GPTConfig(), bandwidth_gb_s=25.0), 1)  # GPT-2 124M, fp32, batch 1, empty cache
50.5
"""

from __future__ import annotations

import math

from minigpt.checks import check_int, check_real
from minigpt.model import GPTConfig
from minigpt.quantize import BYTES_PER_WEIGHT

# bytes per number of a weight matrix (minigpt.quantize's table): fp32 4, fp16 and bf16 2, int8 1 (plus one fp32
# scale per output channel, below), q8_0 34/32 and q4_0 18/32 (GGUF's blocks of 32 numbers: 32 codes of 8 or 4 bits
# and one fp16 scale, 34 and 18 bytes a block)
WEIGHT_FORMATS = BYTES_PER_WEIGHT


def weight_count(config: GPTConfig) -> int:
    """How many weights one decode step reads: every block, the final norm and the (tied) output head.

    Per block, with C = n_embd: the four matrices (QKV 3C×C, attention output C×C, MLP up 4C×C, MLP down
    C×4C: 12·C² numbers), their biases (9·C) and the two layer norms (4·C). Then the final norm (2·C) and
    the head (vocab × C), which is the token table read whole (the lookup reads one row of it). The
    position table is left out: a step reads one row.

    >>> weight_count(GPTConfig())  # GPT-2 124M: 124.4M parameters, less the 786k of the position table
    123653376
    """
    C = config.n_embd
    return config.n_layer * (12 * C * C + 13 * C) + 2 * C + config.vocab_size * C


def decode_step_bytes(config: GPTConfig, batch_size: int = 1, context_len: int = 0, *, weights: str = "fp32",
                      cache_bytes_per_number: int | None = None) -> int:
    """Bytes one decode step must read: every weight once (the whole batch shares them) and the KV cache.

    ``weights`` is the weights' format (``WEIGHT_FORMATS``): fp32 4 bytes a number and bf16 2, for every
    weight (a bf16 model is bf16 throughout); fp16 2, q8_0 34/32 and q4_0 18/32 for the matrices (the
    blocks' fp16 scales included), int8 1 for the matrices plus one fp32 scale per output channel, with
    biases and norms kept in fp32 (as ``minigpt.quantize.round_weights`` and the GGUF export keep them). The
    cache holds a
    key and a value of n_embd numbers per layer for each of the ``context_len`` positions of every row, in
    ``cache_bytes_per_number`` (default: bf16's 2 for bf16 weights, else fp32's 4)::

        bytes = weight bytes + 2 · n_layer · batch_size · context_len · n_embd · cache bytes per number

    >>> decode_step_bytes(GPTConfig()) / 1e6  # GPT-2 124M, fp32, empty cache: 495 MB a token
    494.613504
    >>> round(decode_step_bytes(GPTConfig(), weights="int8") / 1e6, 1)  # a quarter, plus the scales
    124.6
    >>> round(decode_step_bytes(GPTConfig(), weights="q4_0") / 1e6, 1)  # 4.5 bits a matrix weight
    70.0
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    check_int("batch_size", batch_size, 1)
    check_int("context_len", context_len, 0)
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    matrices = L * 12 * C * C + V * C
    if weights == "int8":
        scales = L * 9 * C + V  # one per output channel of every matrix, the head's included
        weight_total = matrices + 4 * (scales + weight_count(config) - matrices)
    elif weights in ("fp32", "bf16"):
        weight_total = WEIGHT_FORMATS[weights] * weight_count(config)
    else:  # the matrices in the format, rounded up to whole bytes; biases and norms in fp32
        weight_total = math.ceil(WEIGHT_FORMATS[weights] * matrices) + 4 * (weight_count(config) - matrices)
    if cache_bytes_per_number is None:
        cache_bytes_per_number = 2 if weights == "bf16" else 4
    check_int("cache_bytes_per_number", cache_bytes_per_number, 1)
    return weight_total + 2 * L * batch_size * context_len * C * cache_bytes_per_number


def bandwidth_bound(config: GPTConfig, bandwidth_gb_s: float, batch_size: int = 1, context_len: int = 0, *,
                    weights: str = "fp32", cache_bytes_per_number: int | None = None) -> float:
    """The most decode tokens/s a memory delivering ``bandwidth_gb_s`` GB/s (1 GB = 10⁹ bytes) allows.

    One decode step makes one token for each of the ``batch_size`` sequences and reads
    ``decode_step_bytes`` (every weight once, each sequence's ``context_len`` cached keys and values; the
    formats as there)::

        bound (tokens/s) = batch_size · bandwidth / (bytes per step)

    A decoder's tokens/s divided by this bound is the share of the memory's speed it reaches. Over a whole
    generation the context grows; ``minigpt bench`` takes its average, prompt + new tokens / 2.

    >>> round(bandwidth_bound(GPTConfig(), 24.0, batch_size=1, context_len=16 + 256 // 2), 1)
    47.5
    >>> round(bandwidth_bound(GPTConfig(), 24.0, weights="int8") / bandwidth_bound(GPTConfig(), 24.0), 2)
    3.97
    """
    check_real("bandwidth_gb_s", bandwidth_gb_s, "a finite number > 0", lambda v: 0 < v < float("inf"))
    step = decode_step_bytes(config, batch_size, context_len, weights=weights,
                             cache_bytes_per_number=cache_bytes_per_number)
    return batch_size * bandwidth_gb_s * 1e9 / step
