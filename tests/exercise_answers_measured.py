"""Answers to the exercises of chapter 11 (typical sampling) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

from functools import partial

import torch

from minigpt import logits as L
from minigpt.exercises import typical as ch11

NEG_INF = float("-inf")


def surprise_gap(logits, *, skip_removed=True, log=torch.log, absolute=True):
    probs = torch.softmax(logits, dim=-1)
    surprise = -log(probs)  # inf where p = 0
    plogp = torch.where(probs > 0, probs * log(probs), 0.0) if skip_removed else probs * log(probs)
    gap = surprise + plogp.sum(dim=-1, keepdim=True)  # -log p - H
    return gap.abs() if absolute else gap


def typical_filter(logits, mass, min_tokens_to_keep=1, *, keep_crossing=True, ties=True, keep_min=True,
                   most_typical=True):
    gap = surprise_gap(logits)
    sorted_gap, order = torch.sort(gap, dim=-1, descending=not most_typical)
    sorted_probs = torch.softmax(logits, dim=-1).gather(-1, order)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more typical tokens
    drop = before >= mass if keep_crossing else before + sorted_probs > mass
    if ties:  # a token tied with the last kept one stays too
        last = (~drop).sum(dim=-1, keepdim=True) - 1
        drop = sorted_gap > sorted_gap.gather(-1, last)
    if keep_min:
        drop[..., :min_tokens_to_keep] = False
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), NEG_INF)


CORRECT = [
    (ch11.check_surprise_gap, surprise_gap),
    (ch11.check_surprise_gap, ch11.surprise_gap),
    (ch11.check_typical_filter, typical_filter),
    (ch11.check_typical_filter, L.typical_filter),
]

# (checker, a typical wrong answer, text its message must contain)
WRONG = {
    "surprise gap without the absolute value": (
        ch11.check_surprise_gap, partial(surprise_gap, absolute=False), "'forward' is less surprising than average"),
    "surprise gap in bits": (
        ch11.check_surprise_gap, partial(surprise_gap, log=torch.log2), "wrong value at position [0, 0]"),
    "entropy counts removed tokens (nan)": (
        ch11.check_surprise_gap, partial(surprise_gap, skip_removed=False), "they add nothing to H (not nan)"),
    "typical filter ranks by probability (top-p)": (
        ch11.check_typical_filter, lambda x, m, k=1: L.top_p_filter(x, m, k), "'forward' goes"),
    "typical filter drops the crossing token": (
        ch11.check_typical_filter, partial(typical_filter, keep_crossing=False), "crosses it alone"),
    "typical filter breaks ties": (
        ch11.check_typical_filter, partial(typical_filter, ties=False), "every token tied with it is kept too"),
    "typical filter ignores min_tokens_to_keep": (
        ch11.check_typical_filter, partial(typical_filter, keep_min=False), "min_tokens_to_keep = 3"),
    "typical filter keeps the least typical": (
        ch11.check_typical_filter, partial(typical_filter, most_typical=False), "expected: tensor("),
}
