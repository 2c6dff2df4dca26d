"""Checkers for chapter 2, temperature (``notebooks/exercises/02_temperature_exercises.ipynb``).

Two exercises: a softmax with temperature, and the entropy that measures how spread out the result is. Each
checker runs the visible cases, or with a ``seed`` cases of the same kinds drawn from it
(``minigpt.exercises.grading``).

>>> result = check_entropy(lambda probs: -torch.xlogy(probs, probs).sum(dim=-1), seed=3)
✓ entropy: all 5 drawn cases pass
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_distributions
from minigpt.exercises.models import TOY_LOGITS
from minigpt.logits import apply_temperature


def check_softmax_with_temperature(
    student: Callable[[torch.Tensor, float], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``softmax_with_temperature(logits, temperature)``: the probabilities of softmax(logits / T).

    ``logits`` is (B, V), one row per sequence; each row of the answer is a distribution summing to 1. A
    ``seed`` checks on cases drawn from it instead.

    >>> result = check_softmax_with_temperature(lambda logits, temperature: torch.softmax(logits / temperature, dim=-1))
    ✓ softmax_with_temperature: all 8 hidden cases pass
    >>> result = check_softmax_with_temperature(lambda logits, temperature: torch.softmax(logits, dim=-1) / temperature)
    ✗ softmax_with_temperature: hidden case 2 of 8 fails (T = 0.5 sharpens: divide the logits by T before the softmax)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]]), temperature = 0.5
      each row must sum to 1, but row 0 sums to 2.0
      expected: tensor([[0.0081, 0.0, 0.0, 0.7132, 0.0, 0.0, 0.0, 0.2786, 0.0]])
      got:      tensor([[0.1218, 0.0033, 0.0002, 1.1442, 0.0068, 0.0003, 0.0002, 0.7152, 0.008]])
    """
    cases = cases_for(seed, _softmax_cases, _drawn_softmax_cases)
    return check("softmax_with_temperature", student, _softmax_with_temperature, cases, compare=compare_distributions)


def check_entropy(student: Callable[[torch.Tensor], torch.Tensor], *, seed: int | None = None) -> CheckResult:
    """Check ``entropy(probs)``: -Σ p log p of each row of the (B, V) ``probs``, in nats, as a (B,) tensor.

    A probability of exactly 0 contributes 0 (the limit of p log p as p → 0), not NaN. A ``seed`` checks on
    cases drawn from it instead.

    >>> result = check_entropy(lambda probs: -torch.xlogy(probs, probs).sum(dim=-1))
    ✓ entropy: all 5 hidden cases pass
    """
    return check("entropy", student, _entropy, cases_for(seed, _entropy_cases, _drawn_entropy_cases), atol=1e-5)


def _softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(apply_temperature(logits, temperature), dim=-1)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return torch.special.entr(probs).sum(dim=-1)  # entr(p) = -p log p, and 0 at p = 0


def _softmax_cases() -> list[Case]:
    batch = torch.tensor([[1.0, 2.0, 3.0], [2.0, 0.0, -2.0]])
    far_apart = torch.tensor([[1000.0, 999.0, 998.0], [-1000.0, -1001.0, -1002.0]])
    removed = torch.tensor([[2.0, float("-inf"), 1.0, float("-inf")]])
    seeded = 3 * torch.randn(2, 6, generator=torch.Generator().manual_seed(3))
    return [
        Case((TOY_LOGITS, 1.0), "T = 1: a plain softmax of the nine-word logits"),
        Case((TOY_LOGITS, 0.5), "T = 0.5 sharpens: divide the logits by T before the softmax"),
        Case((TOY_LOGITS, 2.0), "T = 2 flattens: divide the logits by T before the softmax"),
        Case((TOY_LOGITS, 0.01), "T = 0.01: exp(675) overflows to inf unless you subtract the row's largest logit"),
        Case((batch, 1.0), "a batch of two rows: softmax along the last dimension, each row sums to 1"),
        Case((far_apart, 1.0), "rows on very different scales: subtract each row's own largest logit"),
        Case((removed, 0.7), "-inf logits (tokens a filter removed) get probability exactly 0"),
        Case((seeded, 0.7), "random logits, 2 rows of 6, T = 0.7"),
    ]


def _entropy_cases() -> list[Case]:
    uniform = torch.full((1, 9), 1 / 9)
    certain = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    batch = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.7, 0.2, 0.1, 0.0]])
    seeded = torch.randn(3, 5, generator=torch.Generator().manual_seed(4)).softmax(dim=-1)
    return [
        Case((uniform,), "nine equally likely tokens: log 9 ≈ 2.1972 nats (natural log, and a minus sign)"),
        Case((certain,), "one certain token: entropy 0, where 0 · log 0 counts as 0 (not NaN)"),
        Case((TOY_LOGITS.softmax(dim=-1),), "the nine-word example at T = 1"),
        Case((batch,), "a batch of two rows: one entropy per row, summed along the last dimension"),
        Case((seeded,), "random distributions, 3 rows of 5"),
    ]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    """A number between ``low`` and ``high``, rounded to 2 decimals so that a failure message shows it exactly."""
    return round(low + (high - low) * float(torch.rand(1, generator=g)), 2)


def _random_logits(g: torch.Generator, rows: int, vocabulary: int) -> torch.Tensor:
    """(rows, vocabulary) logits rounded to 2 decimals, readable in a failure message."""
    return (3 * torch.randn(rows, vocabulary, generator=g)).round(decimals=2)


def _one_far_ahead(g: torch.Generator, vocabulary: int) -> torch.Tensor:
    """One row whose largest logit is 3 to 5 above the next and at least 3: a low T makes it nearly certain."""
    logits = _random_logits(g, 1, vocabulary)
    top = logits.argmax()
    logits[0, top] = logits.max() + _uniform(g, 3, 5)
    return logits + max(0.0, 3 - logits.max().item())


def _drawn_softmax_cases(g: torch.Generator) -> list[Case]:
    v = _randint(g, 5, 9)
    sharp, flat, tiny = _uniform(g, 0.3, 0.8), _uniform(g, 1.5, 3), _uniform(g, 0.01, 0.03)
    # two rows 2 × offset apart: exp overflows in the one and underflows in the other unless each row's own
    # largest logit is subtracted
    offset = 100 * _randint(g, 3, 10)
    far_apart = torch.randn(2, v, generator=g).round(decimals=2) + torch.tensor([[offset], [-offset]])
    removed = _random_logits(g, 1, v)
    removed[0, torch.randperm(v, generator=g)[: _randint(g, 1, v - 2)]] = float("-inf")
    return [
        Case((_random_logits(g, 1, v), 1.0), f"T = 1: a plain softmax of {v} logits"),
        Case((_random_logits(g, 1, v), sharp), f"T = {sharp:g} sharpens: divide the logits by T before the softmax"),
        Case((_random_logits(g, 1, v), flat), f"T = {flat:g} flattens: divide the logits by T before the softmax"),
        Case((_one_far_ahead(g, v), tiny), f"T = {tiny:g}: exp(logits / T) overflows to inf unless you subtract the "
             "row's largest logit"),
        Case((_random_logits(g, _randint(g, 2, 4), v), sharp), "a batch of rows: softmax along the last dimension, "
             "each row sums to 1"),
        Case((far_apart, 1.0), f"rows around +{offset} and -{offset}: subtract each row's own largest logit"),
        Case((removed, flat), "-inf logits (tokens a filter removed) get probability exactly 0"),
    ]


def _drawn_entropy_cases(g: torch.Generator) -> list[Case]:
    n, v = _randint(g, 2, 12), _randint(g, 4, 9)
    certain = torch.zeros(1, v)
    certain[0, _randint(g, 0, v - 1)] = 1.0
    filtered = _random_logits(g, 2, v)
    filtered[:, torch.randperm(v, generator=g)[: _randint(g, 1, v - 2)]] = float("-inf")  # zeros after softmax
    return [
        Case((torch.full((1, n), 1 / n),), f"{n} equally likely tokens: log {n} ≈ {math.log(n):.4f} nats "
             "(natural log, and a minus sign)"),
        Case((certain,), "one certain token: entropy 0, where 0 · log 0 counts as 0 (not NaN)"),
        Case((filtered.softmax(dim=-1),), "a filter's output: tokens of probability exactly 0 contribute 0 (not NaN)"),
        Case((_random_logits(g, _randint(g, 2, 4), v).softmax(dim=-1),), "a batch of rows: one entropy per row, "
             "summed along the last dimension"),
        Case(((_random_logits(g, 1, v) / _uniform(g, 0.2, 0.5)).softmax(dim=-1),), "a peaked distribution"),
    ]
