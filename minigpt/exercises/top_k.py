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

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_distributions
from minigpt.exercises.models import TOY_LOGITS
from minigpt.logits import apply_temperature, top_k_filter

TIED = torch.tensor([[3.0, 2.0, 2.0, 1.0]])  # chapter 3's tie: the 2nd and 3rd logits share the 2nd place
BATCH = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [-1.0, -3.0, -2.0, -5.0, -4.0]])  # different k-th values


def check_top_k_filter(student: Callable[[torch.Tensor, int], torch.Tensor], *, seed: int | None = None) -> CheckResult:
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
    return check("top_k_filter", student, top_k_filter, cases_for(seed, _filter_cases, _drawn_filter_cases))


def check_top_k_probs(
    student: Callable[[torch.Tensor, int, float], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``top_k_probs(logits, k, temperature)``: the probabilities to sample from, softmax(top-k(logits / T)).

    Each row of the (B, V) answer sums to 1 over the tokens top-k keeps, and is exactly 0 elsewhere. A
    ``seed`` checks on cases drawn from it instead.

    >>> def library(logits, k, temperature):
    ...     return torch.softmax(top_k_filter(apply_temperature(logits, temperature), k), dim=-1)
    >>> result = check_top_k_probs(library)
    ✓ top_k_probs: all 6 hidden cases pass
    """
    cases = cases_for(seed, _probs_cases, _drawn_probs_cases)
    return check("top_k_probs", student, _top_k_probs, cases, compare=compare_distributions)


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


def _random_logits(g: torch.Generator, rows: int, vocabulary: int) -> torch.Tensor:
    """(rows, vocabulary) logits rounded to 2 decimals, readable in a failure message; no ties unless made."""
    return (3 * torch.randn(rows, vocabulary, generator=g)).round(decimals=2)


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _with_tie_at_k(g: torch.Generator, k: int, vocabulary: int, copies: int) -> torch.Tensor:
    """One row whose k-th largest logit is shared by ``copies`` tokens, at random places."""
    logits = _random_logits(g, 1, vocabulary)
    order = logits[0].argsort(descending=True)
    logits[0, order[k : k + copies - 1]] = logits[0, order[k - 1]].item()  # the next ones join the k-th largest
    return logits[:, torch.randperm(vocabulary, generator=g)]


def _drawn_filter_cases(g: torch.Generator) -> list[Case]:
    v = _randint(g, 8, 12)
    k = _randint(g, 2, v - 3)
    return [
        Case((_random_logits(g, 1, v), k), f"random logits, k = {k}: the k-th largest itself is kept"),
        Case((_random_logits(g, 1, v), 1), "k = 1: only the largest logit survives"),
        Case((_with_tie_at_k(g, k, v, 2), k), f"k = {k}, tied with the k-th largest logit: both tied tokens are kept"),
        Case((_with_tie_at_k(g, 2, v, 3), 2), "the 2nd largest is tied three ways: all three are kept, 4 tokens"),
        Case((_random_logits(g, 1, v), v), "k = V: every token is kept"),
        Case((_random_logits(g, 1, v), v + _randint(g, 1, 20)), "k larger than the vocabulary: every token is kept"),
        Case((_random_logits(g, 3, v), k), f"a batch of three rows, k = {k}: each row has its own k-th largest"),
        Case((_random_logits(g, 2, v) - 20, k), f"negative logits only, 2 rows, k = {k}"),
    ]


def _temperature(g: torch.Generator) -> float:
    """A T between 0.3 and 2, rounded to 2 decimals, but not between 0.8 and 1.25: so near 1, a temperature
    applied after the softmax (p ** (1/T), not renormalised) would still pass."""
    while True:
        t = round(0.3 + 1.7 * float(torch.rand(1, generator=g)), 2)
        if not 0.8 <= t <= 1.25:
            return t


def _drawn_probs_cases(g: torch.Generator) -> list[Case]:
    v = _randint(g, 8, 12)
    k = _randint(g, 2, v - 3)
    t = _temperature(g)
    return [
        Case((_random_logits(g, 1, v), k, 1.0), f"random logits, k = {k}, T = 1"),
        Case((_random_logits(g, 1, v), k, t), f"k = {k}, T = {t:g}: divide the logits by T, before the softmax"),
        Case((_with_tie_at_k(g, k, v, 2), k, t), f"k = {k}, tied with the k-th largest logit: both keep a share"),
        Case((_random_logits(g, 1, v), v + 5, t), "k larger than the vocabulary: the full softmax of logits / T"),
        Case((_random_logits(g, 3, v), k, t), f"a batch of three rows, k = {k}, T = {t:g}: each row sums to 1"),
    ]
