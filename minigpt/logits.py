"""Logits transforms: the small functions that turn the model's next-token scores into what we sample from.

Each function takes ``logits`` of shape (B, V), one row of scores per sequence, and returns a new tensor of
the same shape; the input is never modified. A token is removed by setting its logit to ``-inf``, so softmax
gives it probability exactly 0. The semantics are those of Hugging Face transformers 4.55
(``generation/logits_process.py``), which the tests use as the reference.

``process_logits`` applies them in transformers' fixed order (``_get_logits_processor``):

1. repetition penalty (``repetition_penalty``)
2. no-repeat n-gram ban (``no_repeat_ngram``)
3. min-new-tokens: EOS banned while fewer than ``min_new_tokens`` were generated (``suppress_eos``)
4. temperature (``apply_temperature``), only when sampling
5. top-k (``top_k_filter``), only when sampling
6. top-p (``top_p_filter``), only when sampling
7. min-p (``min_p_filter``), only when sampling

Penalties come first because they describe the sequence, whatever the decoding; the sampling filters come
last, temperature before them, so that top-p and min-p see the probabilities that will really be sampled.

>>> logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
>>> process_logits(logits, torch.tensor([[0]]), new_tokens=1, do_sample=True, repetition_penalty=2.0, top_k=2)
tensor([[1., 1., -inf, -inf]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from minigpt.checks import check_int, check_real


def _check_fraction(name: str, value: object) -> None:
    # top_p = 0 would reduce sampling to greedy and min_p = 0 filters nothing: None is how to switch either off
    check_real(name, value, "in (0, 1]", lambda v: 0 < v <= 1)


def _check_penalty(value: object) -> None:
    check_real("repetition_penalty", value, "> 0", lambda v: v > 0)


def check_logits_settings(
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    min_new_tokens: int = 0,
) -> None:
    """Validate decoding settings up front, before any token is generated; None switches a setting off.

    Raises ValueError (or TypeError for a wrong type) naming the parameter, the value and what is allowed.
    Temperature 0 is allowed here: it means greedy decoding, which the generation loop handles.

    >>> check_logits_settings(temperature=0.7, top_k=50, top_p=0.9)
    >>> check_logits_settings(top_p=1.5)
    Traceback (most recent call last):
    ValueError: top_p must be in (0, 1], got 1.5
    """
    check_real("temperature", temperature, "a finite number >= 0", lambda v: 0 <= v < math.inf)
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if top_p is not None:
        _check_fraction("top_p", top_p)
    if min_p is not None:
        _check_fraction("min_p", min_p)
    if repetition_penalty is not None:
        _check_penalty(repetition_penalty)
    if no_repeat_ngram_size is not None:
        check_int("no_repeat_ngram_size", no_repeat_ngram_size, 1)
    check_int("min_new_tokens", min_new_tokens, 0)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the (B, V) logits by ``temperature`` > 0: below 1 sharpens the distribution, above 1 flattens it.

    >>> apply_temperature(torch.tensor([[1.0, -2.0]]), 0.5)
    tensor([[ 2., -4.]])
    """
    check_real("temperature", temperature, "a finite number > 0", lambda v: 0 < v < math.inf)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (at least ``min_tokens_to_keep``), set the rest to -inf.

    Ties with the k-th largest value are all kept, so a row can keep more than k tokens.

    >>> top_k_filter(torch.tensor([[3.0, 1.0, 2.0, 2.0]]), 2)
    tensor([[3., -inf, 2., 2.]])
    """
    check_int("top_k", k, 1)
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
    k = min(max(k, min_tokens_to_keep), logits.size(-1))  # k > V would make topk fail
    kth_largest = torch.topk(logits, k).values[..., -1, None]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering: keep the most likely tokens whose probabilities add up to at least ``p``.

    The token that crosses ``p`` is kept, so a single token more likely than ``p`` survives alone.

    >>> top_p_filter(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 0.7)
    tensor([[2., 1., -inf, -inf]])
    """
    _check_fraction("top_p", p)
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
    # Ascending sort: the tokens to drop are a prefix, those whose running mass stays within 1 - p
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)  # (B, V) each
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= 1 - p
    drop[..., -min_tokens_to_keep:] = False  # the most likely tokens sit at the end
    drop = drop.scatter(1, sorted_idx, drop)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Drop tokens less likely than ``min_p`` times the most likely token of their row.

    The cut-off scales with the model's confidence: strict when one token dominates, loose when it is unsure.

    >>> min_p_filter(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 0.3)
    tensor([[2., 1., -inf, -inf]])
    """
    _check_fraction("min_p", min_p)
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
    probs = logits.softmax(dim=-1)  # (B, V)
    drop = probs < min_p * probs.max(dim=-1, keepdim=True).values
    # min_tokens_to_keep counts in descending-logit order, ties broken as argsort breaks them
    sorted_idx = torch.argsort(logits, descending=True, dim=-1)
    sorted_drop = drop.gather(-1, sorted_idx)
    sorted_drop[..., :min_tokens_to_keep] = False
    return logits.masked_fill(sorted_drop.scatter(1, sorted_idx, sorted_drop), float("-inf"))


def repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make every token already in ``input_ids`` (B, T) less likely, once per distinct token (CTRL-style).

    A positive logit is divided by ``penalty`` and a negative one multiplied, so penalty > 1 always lowers
    it; the prompt counts as seen too.

    >>> repetition_penalty(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[0, 1, 0]]), 2.0)
    tensor([[ 1.0000, -2.0000,  0.5000]])
    """
    _check_penalty(penalty)
    seen = logits.gather(1, input_ids)  # (B, T) current logit of each token in the context
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, input_ids, seen)  # a repeated id writes the same value, so it counts once


_repetition_penalty = repetition_penalty  # process_logits has a keyword of the same name, which shadows it


def no_repeat_ngram(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would complete an n-gram already present in the row's ``input_ids`` (B, T).

    The last n - 1 tokens are the prefix; any token that followed that prefix before gets -inf.

    >>> no_repeat_ngram(torch.zeros(1, 4), torch.tensor([[1, 2, 3, 1]]), 2)
    tensor([[0., 0., -inf, 0.]])
    """
    check_int("no_repeat_ngram_size", n, 1)
    out = logits.clone()
    for row, ids in enumerate(input_ids.tolist()):
        prefix = ids[len(ids) - n + 1 :]  # [] when n == 1: every token seen so far is banned
        banned = [ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == prefix]
        out[row, banned] = float("-inf")
    return out


def suppress_eos(logits: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """Set the end-of-sequence ids to -inf, so a sequence cannot stop yet (min_new_tokens).

    >>> suppress_eos(torch.zeros(1, 3), [2])
    tensor([[0., 0., -inf]])
    """
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=logits.device)
    is_eos = torch.isin(torch.arange(logits.size(-1), device=logits.device), eos)  # (V,)
    return logits.masked_fill(is_eos, float("-inf"))


def process_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    *,
    new_tokens: int,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    min_new_tokens: int = 0,
    eos_token_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Apply every enabled transform to the (B, V) ``logits``, in transformers' order.

    ``input_ids`` (B, T) is the whole context so far, prompt included; ``new_tokens`` is how many of those
    tokens were generated. The order is fixed:

    1. repetition penalty, unless ``repetition_penalty`` is None or 1.0
    2. no-repeat n-gram ban, unless ``no_repeat_ngram_size`` is None or 0
    3. EOS suppressed while ``new_tokens < min_new_tokens``
    4. temperature, unless 1.0 (only when ``do_sample``)
    5. top-k, unless ``top_k`` is None or 0 (only when ``do_sample``)
    6. top-p, unless ``top_p`` is None or 1.0 (only when ``do_sample``)
    7. min-p, unless ``min_p`` is None or 0 (only when ``do_sample``)

    Greedy decoding (``do_sample=False``) ignores 4-7: they cannot change the argmax. The input is never
    modified, but it is returned as is when every step is off.

    >>> logits = torch.tensor([[1.0, 3.0, 2.0]])
    >>> process_logits(logits, torch.tensor([[1]]), new_tokens=0, do_sample=False, repetition_penalty=3.0)
    tensor([[1., 1., 2.]])
    """
    if repetition_penalty not in (None, 1.0):
        logits = _repetition_penalty(logits, input_ids, repetition_penalty)
    if no_repeat_ngram_size not in (None, 0):
        logits = no_repeat_ngram(logits, input_ids, no_repeat_ngram_size)
    if new_tokens < min_new_tokens:
        logits = suppress_eos(logits, eos_token_ids)
    if not do_sample:
        return logits
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k not in (None, 0):
        logits = top_k_filter(logits, top_k)
    if top_p not in (None, 1.0):
        logits = top_p_filter(logits, top_p)
    if min_p not in (None, 0):
        logits = min_p_filter(logits, min_p)
    return logits
