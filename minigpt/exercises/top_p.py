"""Checkers for chapter 4, top-p and min-p sampling (``notebooks/exercises/04_top_p_exercises.ipynb``).

Two exercises: nucleus (top-p) filtering, and min-p filtering beside it.

>>> from minigpt.logits import min_p_filter, top_p_filter
>>> result = check_top_p_filter(top_p_filter)
✓ top_p_filter: all 6 hidden cases pass
>>> result = check_min_p_filter(min_p_filter)
✓ min_p_filter: all 6 hidden cases pass
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, check
from minigpt.exercises.models import TOY_LOGITS
from minigpt.logits import min_p_filter, top_p_filter

# one row where the model is sure (the first token has 99.6% of the mass), one where it hesitates
SURE_AND_UNSURE = torch.tensor(
    [[8.0, 2.0, 1.0, 0.0, -1.0, -1.5, -2.0, -3.0], [1.0, 0.8, 1.2, 0.9, 1.1, 0.7, 0.95, 1.05]]
)
SEEDED = 2 * torch.randn(2, 8, generator=torch.Generator().manual_seed(6))


def check_top_p_filter(student: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``top_p_filter(logits, p)``: keep the most likely tokens whose probabilities add up to at least p.

    ``logits`` is (B, V). In each row, keep the smallest set of most likely tokens whose probability mass
    reaches ``p``, the token that crosses ``p`` included; every other logit becomes -inf. The answer is in
    the vocabulary's order, like the input.

    >>> def drops_the_crossing_token(logits, p):
    ...     probs, order = torch.sort(torch.softmax(logits, dim=-1), descending=True)
    ...     drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, probs.cumsum(dim=-1) > p)
    ...     return logits.masked_fill(drop, float("-inf"))
    >>> result = check_top_p_filter(drops_the_crossing_token)
    ✗ top_p_filter: hidden case 1 of 6 fails (p = 0.5: 'forward' (0.57) crosses p on its own and is kept, alone)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]]), p = 0.5
      wrong value at position [0, 3]
      expected: tensor([[-inf, -inf, -inf, 6.75, -inf, -inf, -inf, -inf, -inf]])
      got:      tensor([[-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf]])
    """
    return check("top_p_filter", student, top_p_filter, _top_p_cases())


def check_min_p_filter(student: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``min_p_filter(logits, min_p)``: drop tokens less likely than ``min_p`` × the row's most likely one.

    ``logits`` is (B, V); the rule compares probabilities (softmax of each row), not logits, and a dropped
    token's logit becomes -inf.

    >>> def compares_logits(logits, min_p):
    ...     return logits.masked_fill(logits < min_p * logits.max(), float("-inf"))
    >>> result = check_min_p_filter(compares_logits)
    ✗ min_p_filter: hidden case 1 of 6 fails (min_p = 0.1: 'closer' (0.061) is just above 0.1 × 0.572, the others below)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]]), min_p = 0.1
      wrong value at position [0, 1]
      expected: tensor([[4.51, -inf, -inf, 6.75, -inf, -inf, -inf, 6.28, -inf]])
      got:      tensor([[4.51, 0.89, -inf, 6.75, 1.63, -inf, -inf, 6.28, 1.79]])
    """
    return check("min_p_filter", student, min_p_filter, _min_p_cases())


def _top_p_cases() -> list[Case]:
    flat = torch.zeros(1, 4)
    # every p sits at least 0.02 away from the running totals of its row, so rounding cannot move a cut
    return [
        Case((TOY_LOGITS, 0.5), "p = 0.5: 'forward' (0.57) crosses p on its own and is kept, alone"),
        Case((TOY_LOGITS, 0.9), "p = 0.9: 'forward' (0.57) + 'toward' (0.36) = 0.93; the token that crosses p is kept"),
        Case((TOY_LOGITS, 0.95), "p = 0.95: three tokens, in vocabulary order (the logits are not sorted)"),
        Case((flat, 0.9), "four equally likely tokens and p = 0.9: three reach only 0.75, so all four are kept"),
        Case((SURE_AND_UNSURE, 0.75), "a batch: the sure row keeps 1 token, the unsure row 6 (each row on its own)"),
        Case((SEEDED, 0.7), "random logits, 2 rows of 8, p = 0.7"),
    ]


def _min_p_cases() -> list[Case]:
    negative = torch.tensor([[-1.0, -2.0, -3.0, -6.0]])
    return [
        Case((TOY_LOGITS, 0.1), "min_p = 0.1: 'closer' (0.061) is just above 0.1 × 0.572, the others below"),
        Case((TOY_LOGITS, 0.5), "min_p = 0.5: 'toward' (0.36) is above 0.5 × 0.572 = 0.29, 'closer' is not"),
        Case((negative, 0.3), "all logits negative: compare probabilities, not logits"),
        Case((SURE_AND_UNSURE, 0.7), "a batch: the cut-off is min_p × each row's own most likely probability"),
        Case((TOY_LOGITS, 1.0), "min_p = 1: only the most likely token survives"),
        Case((SEEDED, 0.1), "random logits, 2 rows of 8, min_p = 0.1"),
    ]
