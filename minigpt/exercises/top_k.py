"""Checkers for chapter 3, top-k sampling (``notebooks/exercises/03_top_k_exercises.ipynb``).

Two exercises: the top-k filter on a batch of logits, then the distribution a sampler draws from when
temperature and top-k work together.

>>> from minigpt.logits import top_k_filter
>>> result = check_top_k_filter(top_k_filter)
✓ top_k_filter: all 8 hidden cases pass
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, check, compare_distributions
from minigpt.exercises.models import TOY_LOGITS
from minigpt.logits import apply_temperature, top_k_filter

TIED = torch.tensor([[3.0, 2.0, 2.0, 1.0]])  # chapter 3's tie: the 2nd and 3rd logits share the 2nd place
BATCH = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [-1.0, -3.0, -2.0, -5.0, -4.0]])  # different k-th values


def check_top_k_filter(student: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Check ``top_k_filter(logits, k)``: every logit below the k-th largest of its row becomes -inf.

    ``logits`` is (B, V); the others keep their value. Ties with the k-th largest are all kept, so a row
    can keep more than k tokens, and a k larger than the vocabulary keeps every token.

    >>> result = check_top_k_filter(lambda logits, k: logits)
    ✗ top_k_filter: hidden case 1 of 8 fails (k = 3: keep 'forward', 'toward' and 'closer', the 3rd largest included)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]]), k = 3
      wrong value at position [0, 1]
      expected: tensor([[4.51, -inf, -inf, 6.75, -inf, -inf, -inf, 6.28, -inf]])
      got:      tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])
    """
    return check("top_k_filter", student, top_k_filter, _filter_cases())


def check_top_k_probs(student: Callable[[torch.Tensor, int, float], torch.Tensor]) -> CheckResult:
    """Check ``top_k_probs(logits, k, temperature)``: the probabilities to sample from, softmax(top-k(logits / T)).

    Each row of the (B, V) answer sums to 1 over the tokens top-k keeps, and is exactly 0 elsewhere.

    >>> def library(logits, k, temperature):
    ...     return torch.softmax(top_k_filter(apply_temperature(logits, temperature), k), dim=-1)
    >>> result = check_top_k_probs(library)
    ✓ top_k_probs: all 6 hidden cases pass
    """
    return check("top_k_probs", student, _top_k_probs, _probs_cases(), compare=compare_distributions)


def _top_k_probs(logits: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    return torch.softmax(top_k_filter(apply_temperature(logits, temperature), k), dim=-1)


def _filter_cases() -> list[Case]:
    tied_top = torch.tensor([[1.0, 4.0, 4.0, 4.0, 0.0]])
    seeded = torch.randn(2, 8, generator=torch.Generator().manual_seed(5))
    return [
        Case((TOY_LOGITS, 3), "k = 3: keep 'forward', 'toward' and 'closer', the 3rd largest included"),
        Case((TOY_LOGITS, 1), "k = 1: only the largest logit survives, and the k-th itself is kept"),
        Case((TIED, 2), "a tie at the k-th largest logit: both tied tokens must be kept"),
        Case((tied_top, 2), "the k-th largest is tied three ways: all three are kept, so 3 tokens for k = 2"),
        Case((TOY_LOGITS, 9), "k = V: every token is kept"),
        Case((TOY_LOGITS, 20), "k larger than the vocabulary: every token is kept (torch.topk needs k <= V)"),
        Case((BATCH, 2), "a batch of two rows: each row has its own k-th largest logit"),
        Case((seeded, 4), "random logits, 2 rows of 8, k = 4"),
    ]


def _probs_cases() -> list[Case]:
    return [
        Case((TOY_LOGITS, 3, 1.0), "k = 3, T = 1: the three survivors share all the mass"),
        Case((TOY_LOGITS, 3, 0.5), "k = 3, T = 0.5: divide the logits by T, before the softmax"),
        Case((TOY_LOGITS, 2, 2.0), "k = 2, T = 2: divide the logits by T, before the softmax"),
        Case((TIED, 2, 1.0), "a tie at the k-th largest logit: both tied tokens keep their share"),
        Case((TOY_LOGITS, 20, 1.0), "k larger than the vocabulary: the full softmax"),
        Case((BATCH, 2, 0.7), "a batch of two rows: each row keeps its own top 2 and sums to 1"),
    ]
