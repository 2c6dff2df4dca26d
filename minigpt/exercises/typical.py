"""Checkers for chapter 11, typical sampling (``notebooks/exercises/11_which_method_when_exercises.ipynb``).

Two exercises: how far each token's surprise is from the row's average (its entropy), then the typical
filter built on it, compared with ``minigpt.logits.typical_filter``.

>>> from minigpt.logits import typical_filter
>>> result = check_surprise_gap(surprise_gap)
✓ surprise_gap: all 5 hidden cases pass
>>> result = check_typical_filter(typical_filter)
✓ typical_filter: all 7 hidden cases pass
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, check
from minigpt.exercises.models import TOY_LOGITS
from minigpt.logits import typical_filter

NEG_INF = float("-inf")
# one row where the model is sure (the first token has 99.6% of the mass), one where it hesitates
SURE_AND_UNSURE = torch.tensor(
    [[8.0, 2.0, 1.0, 0.0, -1.0, -1.5, -2.0, -3.0], [1.0, 0.8, 1.2, 0.9, 1.1, 0.7, 0.95, 1.05]]
)
ONE_AND_FOUR = torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0]])  # p = 0.405, then four tied at 0.149; entropy 1.50 nats
ALREADY_CUT = torch.tensor([[3.0, 1.0, NEG_INF, 0.0, NEG_INF, 2.0]])  # two tokens removed by an earlier filter
SEEDED = 2 * torch.randn(2, 8, generator=torch.Generator().manual_seed(11))


def surprise_gap(logits: torch.Tensor) -> torch.Tensor:
    """|-log p - H| for every token of each row of the (B, V) ``logits``: H is the row's entropy (nats).

    A token removed earlier (logit -inf) has probability 0: it adds nothing to H and its gap is inf.

    >>> surprise_gap(torch.tensor([[0.0, 0.0, 0.0, 0.0]]))  # uniform: every token is exactly as surprising as average
    tensor([[0., 0., 0., 0.]])
    """
    log_probs = logits.log_softmax(dim=-1)  # (B, V)
    entropy = -(log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)  # -inf * 0 = nan: skipped
    return (-log_probs - entropy).abs()


def check_surprise_gap(student: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``surprise_gap(logits)``: each token's |surprise - entropy|, the quantity typical sampling ranks by.

    ``logits`` is (B, V). A token's surprise is -log p (nats); the row's entropy H = -Σ p log p is its average
    surprise. Tokens removed earlier (-inf) have p = 0: they add nothing to H, and their gap is inf.

    >>> def without_abs(logits):
    ...     log_probs = logits.log_softmax(dim=-1)
    ...     return -log_probs + (log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)
    >>> result = check_surprise_gap(without_abs)
    ✗ surprise_gap: hidden case 1 of 5 fails (the toy logits: 'forward' is less surprising than average)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])
      wrong value at position [0, 3]
      expected: tensor([[1.8857, 5.5057, 8.2957, 0.3543, 4.7657, 8.0157, 8.2857, 0.1157, 4.6057]])
      got:      tensor([[1.8857, 5.5057, 8.2957, -0.3543, 4.7657, 8.0157, 8.2857, 0.1157, 4.6057]])
    """
    return check("surprise_gap", student, surprise_gap, [
        Case((TOY_LOGITS,), "the toy logits: 'forward' is less surprising than average"),
        Case((torch.zeros(1, 4),), "a uniform row: every token's surprise is the entropy, log 4: all gaps 0"),
        Case((ONE_AND_FOUR,), "one likely token and four tied ones: the tied tokens share one gap"),
        Case((ALREADY_CUT,), "two tokens removed (-inf): they add nothing to H (not nan), their gap is inf"),
        Case((SURE_AND_UNSURE,), "a batch: each row has its own entropy"),
    ])


def check_typical_filter(student: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``typical_filter(logits, mass, min_tokens_to_keep=1)`` against ``minigpt.logits.typical_filter``.

    In each row of the (B, V) ``logits``, rank the tokens by their surprise gap (most typical first) and keep
    them in that order until their probabilities add up to ``mass``; the token that crosses ``mass`` is kept,
    and so is every token tied with it. The ``min_tokens_to_keep`` most typical tokens are always kept. Every
    other logit becomes -inf; the answer keeps the vocabulary's order.

    >>> def by_probability(logits, mass, min_tokens_to_keep=1):  # top-p, not typical
    ...     probs, order = torch.sort(logits.softmax(dim=-1), descending=True)
    ...     drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, probs.cumsum(dim=-1) - probs >= mass)
    ...     return logits.masked_fill(drop, float("-inf"))
    >>> result = check_typical_filter(by_probability)
    ✗ typical_filter: hidden case 1 of 7 fails (mass = 0.3: 'toward' (0.36) crosses it alone; 'forward' goes)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]]), mass = 0.3, min_tokens_to_keep = 1
      wrong value at position [0, 3]
      expected: tensor([[-inf, -inf, -inf, -inf, -inf, -inf, -inf, 6.28, -inf]])
      got:      tensor([[-inf, -inf, -inf, 6.75, -inf, -inf, -inf, -inf, -inf]])
    """
    # every mass sits at least 0.03 away from the running totals of its row, so rounding cannot move a cut
    return check("typical_filter", student, typical_filter, [
        Case((TOY_LOGITS, 0.3, 1), "mass = 0.3: 'toward' (0.36) crosses it alone; 'forward' goes"),
        Case((ONE_AND_FOUR, 0.5, 1),
             "the four tied tokens (0.149 each) are the typical ones; the most likely (0.405) goes"),
        Case((ONE_AND_FOUR, 0.2, 1),
             "mass = 0.2 is crossed by the second tied token: every token tied with it is kept too"),
        Case((TOY_LOGITS, 0.3, 3),
             "min_tokens_to_keep = 3: the three most typical tokens stay, though one crosses 0.3"),
        Case((ALREADY_CUT, 0.6, 1), "two tokens already removed (-inf): they stay removed, and the entropy is not nan"),
        Case((SURE_AND_UNSURE, 0.6, 1), "a batch: the sure row keeps its one token, the unsure row five"),
        Case((SEEDED, 0.7, 2), "random logits, 2 rows of 8, mass = 0.7, min_tokens_to_keep = 2"),
    ])
