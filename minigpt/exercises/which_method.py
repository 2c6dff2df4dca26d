"""Checkers for chapter 11, measuring decoders (``notebooks/exercises/11_which_method_when_exercises.ipynb``).

Two exercises on what chapter 11 measures with: the repeated n-gram rate of a continuation (one of its three
measures, ``minigpt.metrics.repeated_ngram_rate``), then the paired comparison of two settings run with the
same random numbers: the mean of the per-draw differences and its standard error (``minigpt.metrics.spread``
of the differences).

>>> from minigpt.metrics import repeated_ngram_rate
>>> result = check_repeated_ngram_rate(repeated_ngram_rate)
✓ repeated_ngram_rate: all 7 hidden cases pass
>>> result = check_paired_difference(paired_difference, seed=0)
✓ paired_difference: all 6 drawn cases pass
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check
from minigpt.metrics import repeated_ngram_rate, spread

# 1e-5 is far above the rounding of a float32 mean or standard deviation of a few dozen scores, and far below
# any mistake (the smallest wrong answer the cases allow differs by more than 1e-3)
ATOL = 1e-5


def paired_difference(scores_a: Sequence[float], scores_b: Sequence[float]) -> tuple[float, float]:
    """The mean of the differences ``scores_a[i] - scores_b[i]`` and its standard error, as two floats.

    Pair i holds two settings' scores for the same prompt and the same random numbers. The standard error is
    the differences' sample standard deviation (divided by n - 1) over √n: ``minigpt.metrics.spread``.

    >>> mean, stderr = paired_difference([0.9, 0.7, 0.8], [0.8, 0.7, 0.6])  # differences 0.1, 0.0, 0.2
    >>> round(mean, 4), round(stderr, 4)
    (0.1, 0.0577)
    """
    if len(scores_a) != len(scores_b):
        raise ValueError(f"scores_a and scores_b must pair up, got {len(scores_a)} and {len(scores_b)} scores")
    difference = spread([a - b for a, b in zip(scores_a, scores_b)])
    return difference.mean, difference.stderr


def check_repeated_ngram_rate(
    student: Callable[[list[int], int], float], *, seed: int | None = None
) -> CheckResult:
    """Check ``repeated_ngram_rate(tokens, n)`` against ``minigpt.metrics.repeated_ngram_rate``.

    ``tokens`` is a list of token ids, at least ``n`` long. The answer is the share of its n-grams (runs of n
    tokens, one starting at each position that leaves room) that repeat an n-gram seen earlier in it: the
    first copy of each n-gram is not a repeat, every later copy is. A ``seed`` checks on cases drawn from it.

    >>> def both_copies(tokens, n):  # counts the first copy of a repeated n-gram too
    ...     grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    ...     return sum(grams.count(gram) > 1 for gram in grams) / len(grams)
    >>> result = check_repeated_ngram_rate(both_copies)
    ✗ repeated_ngram_rate: hidden case 1 of 7 fails (the chapter's toy: a loop, then a way out; 2 of 7 4-grams repeat)
      tokens = [10, 11, 12, 13, 10, 11, 12, 13, 10, 14], n = 4
      wrong value
      expected: 0.2857
      got:      0.5714
    """
    cases = cases_for(seed, _rate_cases, _drawn_rate_cases)
    return check("repeated_ngram_rate", student, repeated_ngram_rate, cases, atol=ATOL)


def check_paired_difference(
    student: Callable[[list[float], list[float]], tuple[float, float]], *, seed: int | None = None
) -> CheckResult:
    """Check ``paired_difference(scores_a, scores_b)``: the mean of ``a[i] - b[i]`` and its standard error.

    ``scores_a`` and ``scores_b`` hold two settings' scores, pair i from the same prompt and the same random
    numbers (at least two pairs). The answer is a tuple (mean, standard error) of the n differences, the
    standard error being their sample standard deviation (n - 1) divided by √n: ``minigpt.metrics.spread``
    of the differences. A ``seed`` checks on cases drawn from it.

    >>> def unpaired(scores_a, scores_b):  # each setting's own spread, added as if the draws were independent
    ...     a, b = spread(scores_a), spread(scores_b)
    ...     return a.mean - b.mean, (a.stderr**2 + b.stderr**2) ** 0.5
    >>> result = check_paired_difference(unpaired)
    ✗ paired_difference: hidden case 1 of 6 fails (the same draws: 4 of 6 pairs equal; their standard errors do not add)
      scores_a = [-0.36, -2.4, -0.36, -0.83, -0.36, -2.4], scores_b = [-0.36, -2.4, -0.83, -0.83, -2.4, -2.4]
      item 1: wrong value
      expected: (0.4183, 0.3333)
      got:      (0.4183, 0.569)
    """
    cases = cases_for(seed, _paired_cases, _drawn_paired_cases)
    return check("paired_difference", student, paired_difference, cases, atol=ATOL)


def _rate_cases() -> list[Case]:
    return [
        Case(([10, 11, 12, 13, 10, 11, 12, 13, 10, 14], 4),
             "the chapter's toy: a loop, then a way out; 2 of 7 4-grams repeat"),
        Case(([1, 2, 3, 4, 1, 2, 3, 4], 4),
             "(1, 2, 3, 4) comes twice: its first copy is not a repeat; 1 of 5 4-grams"),
        Case(([7, 7, 7, 7, 7], 1), "one token five times: every copy after the first repeats, 4 of 5"),
        Case(([5, 6, 5, 6, 5, 6], 2), "n = 2: the pairs (5, 6) and (6, 5) come back, 3 of 5 repeat"),
        Case(([5, 6, 5, 6, 5, 6, 7], 3), "n = 3: 5 3-grams, 2 of them repeats"),
        Case(([3, 1, 4, 1, 5, 9], 6), "n = the length: one n-gram, which repeats nothing"),
        Case(([3, 1, 4, 1, 5, 9, 2, 6], 2), "the token 1 comes twice, but no pair does: 0"),
    ]


def _paired_cases() -> list[Case]:
    # log p of each draw's token under T 1 (rounded), for two settings that drew with the same numbers
    same_draws = ([-0.36, -2.4, -0.36, -0.83, -0.36, -2.4], [-0.36, -2.4, -0.83, -0.83, -2.4, -2.4])
    return [
        Case(same_draws, "the same draws: 4 of 6 pairs equal; their standard errors do not add"),
        Case(([0.5, 0.25], [0.25, 0.75]), "two pairs: the standard deviation divides by n - 1 = 1, then by √2"),
        Case(([1.5, 2.0, 0.5, 1.0], [1.0, 1.5, 0.0, 0.5]),
             "a is b + 0.5 in every pair: mean 0.5, standard error 0, however much the scores vary"),
        Case(([0.2, 0.9, 0.4, 0.6, 0.1], [0.6, 0.3, 0.4, 0.9, 0.5]),
             "a is above b in some pairs and below in others: the differences keep their signs"),
        Case(([0.3, 0.8, 0.55], [0.3, 0.8, 0.55]), "the same scores: mean 0 and standard error 0"),
        Case(([0.91, 0.95, 0.97, 1.0, 0.93, 0.98], [0.89, 0.97, 0.95, 0.96, 0.9, 0.95]),
             "six distinct-2 readings per setting, the same prompts"),
    ]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _token_ids(g: torch.Generator, length: int, vocabulary: int) -> list[int]:
    return torch.randint(0, vocabulary, (length,), generator=g).tolist()


def _drawn_rate_cases(g: torch.Generator) -> list[Case]:
    period = _randint(g, 2, 4)
    loop = _token_ids(g, period, 50)
    while len(set(loop)) < period:  # a loop of `period` different tokens, so its n-grams repeat every `period`
        loop = _token_ids(g, period, 50)
    way_out = _randint(g, 50, 99)  # a token outside the loop
    looped = (loop * 6)[: _randint(g, 3 * period, 5 * period)] + [way_out]
    n = _randint(g, 2, period + 1)
    run = [_randint(g, 0, 99)] * _randint(g, 4, 8)
    fresh = torch.randperm(100, generator=g)[: _randint(g, 5, 9)].tolist()  # no token twice
    short = _token_ids(g, _randint(g, 4, 8), 100)
    pair_loop = (_token_ids(g, 1, 50) + [_randint(g, 50, 99)]) * _randint(g, 3, 5)
    mixed = _token_ids(g, _randint(g, 20, 30), 4)
    return [
        Case((looped, n), f"a {period}-token loop, then a way out, n = {n}: only the later copies of an n-gram "
                          "repeat, and the share is of n-grams, not tokens"),
        Case((run, 1), f"one token {len(run)} times: every copy after the first repeats"),
        Case((pair_loop, 2), "two tokens in turn, n = 2: the pairs come back"),
        Case((pair_loop, 4), "the same tokens, n = 4: fewer 4-grams than pairs, each a repeat after the first two"),
        Case((fresh, 2), "no token twice: no n-gram repeats, 0"),
        Case((short, len(short)), "n = the length: one n-gram, which repeats nothing"),
        Case((mixed, 3), "random tokens from 4, n = 3"),
    ]


def _scores(g: torch.Generator, count: int) -> list[float]:
    """``count`` scores like the chapter's log p readings: 2 decimals, between -3 and 0."""
    return [round(-3 * x, 2) for x in torch.rand(count, generator=g, dtype=torch.float64).tolist()]


def _drawn_paired_cases(g: torch.Generator) -> list[Case]:
    count = _randint(g, 6, 12)
    b = _scores(g, count)
    a = list(b)
    for i in torch.randperm(count, generator=g)[: count // 2].tolist():  # half of the pairs part
        while a[i] == b[i]:
            a[i] = _scores(g, 1)[0]
    shift = round(0.1 + float(torch.rand(1, generator=g)), 2)
    pair = _scores(g, 2)
    while abs(pair[0] + pair[1]) < 0.05:  # the differences pair[0] and -pair[1] differ: the spread is not 0
        pair = _scores(g, 2)
    mixed_b = _scores(g, _randint(g, 4, 8))
    mixed_a = [round(x + (0.2 + float(torch.rand(1, generator=g))) * (-1) ** i, 2) for i, x in enumerate(mixed_b)]
    same = _scores(g, _randint(g, 3, 6))
    return [
        Case((a, b), f"the same draws: {count - count // 2} of {count} pairs equal; their standard errors do not add"),
        Case(([pair[0], 0.0], [0.0, pair[1]]), "two pairs: the standard deviation divides by n - 1 = 1, then by √2"),
        Case(([round(x + shift, 2) for x in b], b),
             f"a is b + {shift:g} in every pair: standard error 0, however much b varies"),
        Case((mixed_a, mixed_b), "a is above b in some pairs and below in others: the differences keep their signs"),
        Case((same, list(same)), "the same scores: mean 0 and standard error 0"),
        Case((_scores(g, count), _scores(g, count)), f"{count} unrelated pairs"),
    ]
