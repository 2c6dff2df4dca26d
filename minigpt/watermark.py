"""Detecting the watermark: count the green tokens of a text and ask how unlikely that many is by chance.

The watermark (``minigpt.logits.WatermarkSettings``, Kirchenbauer et al. 2023) makes the sampler prefer, at
every step, a "green list" seeded by the context and a key. Whoever has the key can rebuild each token's
green list from the text alone, without the model: in text written without the watermark a token is green
with probability γ (``greenlist_ratio``), so among T scored tokens the green count has mean γT and variance
Tγ(1 - γ). The z-score says how many standard deviations the count lies above that mean; a watermarked
text lies far above it. The numbers are those of transformers 4.55's ``WatermarkDetector`` (tests), except
where it errs (``detect`` says where).

>>> from minigpt.logits import WatermarkSettings
>>> detection = detect([464, 3290, 318, 257, 922, 1110], WatermarkSettings())
>>> detection.num_tokens_scored, detection.num_green_tokens, detection.prediction
(5, 3, False)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

import torch

from minigpt.checks import check_int, check_real
from minigpt.logits import DEFAULT_WATERMARK, WatermarkSettings, greenlist
from minigpt.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, encode


@dataclasses.dataclass(frozen=True)
class Detection:
    """What ``detect`` found in one text: the counts, the z-test and its verdict.

    ``green`` has one entry per scored token, in order: was that token in the green list its context seeds?
    ``p_value`` is the probability of a z-score at least this high in text without the watermark (the normal
    approximation); ``confidence`` is 1 - ``p_value``; ``prediction`` is z > the threshold.
    """

    num_tokens_scored: int
    num_green_tokens: int
    green_fraction: float
    z_score: float
    p_value: float
    prediction: bool
    confidence: float
    green: tuple[bool, ...]


def z_score(num_green: int, num_scored: int, greenlist_ratio: float) -> float:
    """How many standard deviations ``num_green`` of ``num_scored`` tokens lie above chance, γ = ``greenlist_ratio``.

    Without the watermark the green count is binomial: mean γT, variance Tγ(1 - γ).

    >>> z_score(10, 20, 0.25)
    2.581988897471611
    """
    check_int("num_scored", num_scored, 1)
    check_int("num_green", num_green, 0, high=num_scored)
    check_real("greenlist_ratio", greenlist_ratio, "in (0, 1)", lambda v: 0 < v < 1)
    # written as transformers writes it, so the float rounding is the same too
    return (num_green - greenlist_ratio * num_scored) / math.sqrt(num_scored * greenlist_ratio * (1 - greenlist_ratio))


def p_value(z: float) -> float:
    """The chance that a standard normal variable exceeds ``z``: the one-sided p-value of the z-test.

    >>> round(p_value(3.0), 6)
    0.00135
    """
    check_real("z", z, "a number", lambda v: not math.isnan(v))
    return 0.5 * math.erfc(z / math.sqrt(2))


def detect(
    ids_or_text: str | Sequence[int] | torch.Tensor,
    settings: WatermarkSettings = DEFAULT_WATERMARK,
    *,
    z_threshold: float = 3.0,
    ignore_repeated_ngrams: bool = False,
    vocab_size: int = VOCAB_SIZE,
) -> Detection:
    """Score a text (a string, encoded with GPT-2's tokenizer, or token ids: a list or 1-D tensor) for the watermark.

    ``settings`` must be those of the generation. Each token after the first ``context_width`` (lefthash),
    or from the ``context_width``-th on (selfhash, where a token seeds its own list), is green or not; the
    z-score of the green count decides (``prediction``: z > ``z_threshold``). A leading ``<|endoftext|>``
    is dropped, as transformers drops GPT-2's BOS token. Leave the prompt out: it was not watermarked.
    ``ignore_repeated_ngrams=True`` scores each distinct n-gram (context and token) once, so a repeated
    phrase cannot pile up green tokens; ``green`` still has one entry per token.

    The counts and the z-score are transformers' ``WatermarkDetector``'s, and so is the verdict. Two
    differences, both its errors: its ``ignore_repeated_ngrams`` counts the n-grams as tensors, which
    Python hashes by identity, so no two are ever the same and the option does nothing; and its p-value
    ``1 - ½(1 + sign(z)(1 - exp(-2z²/π)))`` drops the square root of the approximation it comes from
    (0.26 at z = 1, where the normal tail is 0.16). Here the p-value is the normal tail itself, ``p_value``.

    >>> detect("To be, or not to be", WatermarkSettings(greenlist_ratio=0.5)).num_tokens_scored
    6
    """
    ids = _as_ids(ids_or_text)
    if not isinstance(settings, WatermarkSettings):
        raise TypeError(f"settings must be a minigpt.logits.WatermarkSettings, got {settings!r}")
    check_real("z_threshold", z_threshold, "a finite number", math.isfinite)
    if not isinstance(ignore_repeated_ngrams, bool):
        raise TypeError(f"ignore_repeated_ngrams must be True or False, got {ignore_repeated_ngrams!r}")
    check_int("vocab_size", vocab_size, 1)
    if ids and ids[0] == EOT_TOKEN_ID:  # transformers drops a leading BOS, which is <|endoftext|> in GPT-2
        ids = ids[1:]
    width = settings.context_width
    if len(ids) <= width:
        raise ValueError(f"ids_or_text must hold more than context_width={width} tokens (after a leading "
                         f"<|endoftext|>), to score at least one; got {len(ids)}")
    if any(not 0 <= i < vocab_size for i in ids):
        raise ValueError(f"ids_or_text must be token ids in [0, {vocab_size}), got {ids_or_text!r}")
    ngrams = _ngrams(ids, width + (settings.seeding_scheme != "selfhash"))
    colours: dict[tuple[int, ...], bool] = {}  # each distinct n-gram's green list is drawn once
    for ngram in ngrams:
        if ngram not in colours:
            window = ngram if settings.seeding_scheme == "selfhash" else ngram[:-1]
            colours[ngram] = ngram[-1] in greenlist(window, settings, vocab_size).tolist()
    green = tuple(colours[ngram] for ngram in ngrams)
    if ignore_repeated_ngrams:
        num_scored, num_green = len(colours), sum(colours.values())
    else:
        num_scored, num_green = len(green), sum(green)
    z = z_score(num_green, num_scored, settings.greenlist_ratio)
    p = p_value(z)
    return Detection(num_scored, num_green, num_green / num_scored, z, p, z > z_threshold, 1 - p, green)


def _as_ids(ids_or_text: object) -> list[int]:
    """A text's token ids, or the ids given (a list or a 1-D tensor) as a list."""
    allowed = "a str, a list of token ids or a 1-D tensor of them"
    if isinstance(ids_or_text, str):
        return encode(ids_or_text)
    if isinstance(ids_or_text, torch.Tensor):
        if ids_or_text.dim() != 1 or ids_or_text.is_floating_point() or ids_or_text.dtype == torch.bool:
            raise TypeError(f"ids_or_text must be {allowed}, got a tensor of shape {tuple(ids_or_text.shape)} "
                            f"and dtype {ids_or_text.dtype}")
        return ids_or_text.tolist()
    if isinstance(ids_or_text, Sequence) and not isinstance(ids_or_text, bytes) and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids_or_text):
        return [int(i) for i in ids_or_text]
    raise TypeError(f"ids_or_text must be {allowed}, got {ids_or_text!r}")


def _ngrams(ids: list[int], n: int) -> list[tuple[int, ...]]:
    """Every run of ``n`` consecutive ids, in order: the scored token is each run's last."""
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]

