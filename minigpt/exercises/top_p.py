"""Checkers for chapter 4, top-p and min-p sampling (``notebooks/exercises/04_top_p_exercises.ipynb``).

Two exercises: nucleus (top-p) filtering, and min-p filtering beside it. Each checker runs the visible cases,
or with a ``seed`` cases of the same kinds drawn from it (``minigpt.exercises.grading``).

>>> from minigpt.logits import min_p_filter, top_p_filter
>>> result = check_top_p_filter(top_p_filter)
✓ top_p_filter: all 6 hidden cases pass
>>> result = check_min_p_filter(min_p_filter)
✓ min_p_filter: all 6 hidden cases pass
>>> result = check_top_p_filter(top_p_filter, seed=3)
✓ top_p_filter: all 5 drawn cases pass
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check
from minigpt.exercises.models import TOY_LOGITS
from minigpt.logits import min_p_filter, top_p_filter

# one row where the model is sure (the first token has 99.6% of the mass), one where it hesitates
SURE_AND_UNSURE = torch.tensor(
    [[8.0, 2.0, 1.0, 0.0, -1.0, -1.5, -2.0, -3.0], [1.0, 0.8, 1.2, 0.9, 1.1, 0.7, 0.95, 1.05]]
)
SEEDED = 2 * torch.randn(2, 8, generator=torch.Generator().manual_seed(6))


def check_top_p_filter(
    student: Callable[[torch.Tensor, float], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``top_p_filter(logits, p)``: keep the most likely tokens whose probabilities add up to at least p.

    ``logits`` is (B, V). In each row, keep the smallest set of most likely tokens whose probability mass
    reaches ``p``, the token that crosses ``p`` included; every other logit becomes -inf. The answer is in
    the vocabulary's order, like the input. A ``seed`` checks on cases drawn from it instead.

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
    return check("top_p_filter", student, top_p_filter, cases_for(seed, _top_p_cases, _drawn_top_p_cases))


def check_min_p_filter(
    student: Callable[[torch.Tensor, float], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``min_p_filter(logits, min_p)``: drop tokens less likely than ``min_p`` × the row's most likely one.

    ``logits`` is (B, V); the rule compares probabilities (softmax of each row), not logits, and a dropped
    token's logit becomes -inf. A ``seed`` checks on cases drawn from it instead.

    >>> def compares_logits(logits, min_p):
    ...     return logits.masked_fill(logits < min_p * logits.max(), float("-inf"))
    >>> result = check_min_p_filter(compares_logits)
    ✗ min_p_filter: hidden case 1 of 6 fails (min_p = 0.1: 'closer' (0.061) is just above 0.1 × 0.572, the others below)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]]), min_p = 0.1
      wrong value at position [0, 1]
      expected: tensor([[4.51, -inf, -inf, 6.75, -inf, -inf, -inf, 6.28, -inf]])
      got:      tensor([[4.51, 0.89, -inf, 6.75, 1.63, -inf, -inf, 6.28, 1.79]])
    """
    return check("min_p_filter", student, min_p_filter, cases_for(seed, _min_p_cases, _drawn_min_p_cases))


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


# How far a drawn p (or min_p) stays from every running total (or probability ratio) of its row. Ways of
# computing the cut differ by float rounding, far below this, so none of them can move a token across it.
MARGIN = 0.02


ORDINAL = {2: "2nd", 3: "3rd", 4: "4th"}


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _distinct_logits(g: torch.Generator, rows: int, vocabulary: int, scale: float = 2.0) -> torch.Tensor:
    """(rows, vocabulary) logits rounded to 2 decimals, with the most likely token of each row not in first place.

    No two logits of a row are equal, so the order of the probabilities (and the cut) is the same however
    they are sorted; a first place that never holds the largest catches an answer left in sorted order.
    """
    while True:
        logits = (scale * torch.randn(rows, vocabulary, generator=g)).round(decimals=2)
        distinct = all(len(set(row.tolist())) == vocabulary for row in logits)
        if distinct and (logits.argmax(dim=-1) != 0).all():
            return logits


def _away_from(g: torch.Generator, cuts: torch.Tensor, low: float, high: float) -> float | None:
    """A value with 2 decimals between ``low`` and ``high``, at least ``MARGIN`` from every one of ``cuts``.

    None when there is none.
    """
    candidates = [x / 100 for x in range(round(100 * low), round(100 * high) + 1)]
    candidates = [x for x in candidates if (cuts - x).abs().min() >= MARGIN]
    return candidates[_randint(g, 0, len(candidates) - 1)] if candidates else None


def _running_totals(logits: torch.Tensor) -> torch.Tensor:
    """Each row's probabilities, sorted from the most likely, added up: where a top-p cut can fall."""
    return torch.softmax(logits.double(), dim=-1).sort(dim=-1, descending=True).values.cumsum(dim=-1)


def _top_p_case(
    g: torch.Generator, draw: Callable[[], torch.Tensor], low: Callable[[torch.Tensor], float], high: Callable
) -> tuple[torch.Tensor, float]:
    """Logits from ``draw()`` and a p between ``low(totals)`` and ``high(totals)`` that no running total is near."""
    while True:
        logits = draw()
        totals = _running_totals(logits)
        p = _away_from(g, totals, float(low(totals)), float(high(totals)))
        if p is not None:
            return logits, p


def _drawn_top_p_cases(g: torch.Generator) -> list[Case]:
    v = _randint(g, 7, 11)
    m = _randint(g, 2, 4)
    flat_n = _randint(g, 3, 8)
    # the most likely token alone crosses p: p is below its probability
    alone, p_alone = _top_p_case(g, lambda: _distinct_logits(g, 1, v, 3.0), lambda t: 0.1, lambda t: t[0, 0] - 0.01)
    # the m-th most likely token crosses p: p lies between the totals of m - 1 and m tokens
    crossing, p_crossing = _top_p_case(
        g, lambda: _distinct_logits(g, 1, v), lambda t: t[0, m - 2], lambda t: min(t[0, m - 1], 0.99)
    )
    flat_p = _away_from(g, torch.arange(1, flat_n + 1) / flat_n, (flat_n - 1) / flat_n, 0.99)

    def sure_and_unsure() -> torch.Tensor:
        sure = _distinct_logits(g, 1, v)
        sure[0, sure.argmax()] += 8  # one token takes nearly all the mass
        return torch.cat([sure, _distinct_logits(g, 1, v, 0.3)])  # the other row hesitates

    batch, p_batch = _top_p_case(g, sure_and_unsure, lambda t: 0.3, lambda t: 0.95)
    kept = ((_running_totals(batch) < p_batch).sum(dim=-1) + 1).tolist()  # the totals below p, and the one crossing it
    below = "the most likely token stays" if m == 2 else f"the {m - 1} most likely tokens stay"
    rows = _randint(g, 2, 3)
    seeded, p_seeded = _top_p_case(g, lambda: _distinct_logits(g, rows, v), lambda t: 0.3, lambda t: 0.95)
    return [
        Case((alone, p_alone), f"p = {p_alone:g}: the most likely token crosses p on its own and is kept, alone"),
        Case((crossing, p_crossing), f"p = {p_crossing:g}: {below} below p, the {ORDINAL[m]} crosses it and is "
             "kept too, in vocabulary order"),
        Case((torch.zeros(1, flat_n), flat_p), f"{flat_n} equally likely tokens and p = {flat_p:g}: "
             f"{flat_n - 1} reach only {(flat_n - 1) / flat_n:.3g}, so all {flat_n} are kept"),
        Case((batch, p_batch), f"a batch: the sure row keeps {kept[0]} token{'s' * (kept[0] > 1)}, the unsure row "
             f"{kept[1]} (each row on its own)"),
        Case((seeded, p_seeded), f"random logits, {rows} rows of {v}, p = {p_seeded:g}"),
    ]


def _ratios(logits: torch.Tensor) -> torch.Tensor:
    """Each probability over its row's largest: what min-p compares with ``min_p``."""
    probs = torch.softmax(logits.double(), dim=-1)
    return probs / probs.max(dim=-1, keepdim=True).values


def _min_p_case(
    g: torch.Generator, draw: Callable[[], torch.Tensor], low: float, high: float, fits: Callable = lambda *_: True
) -> tuple[torch.Tensor, float]:
    """Logits from ``draw()`` and a min_p in [low, high] no ratio is near, for which ``fits(logits, min_p)``."""
    while True:
        logits = draw()
        min_p = _away_from(g, _ratios(logits), low, high)
        if min_p is not None and fits(logits, min_p):
            return logits, min_p


def _drawn_min_p_cases(g: torch.Generator) -> list[Case]:
    v = _randint(g, 7, 11)
    random, p_random = _min_p_case(g, lambda: _distinct_logits(g, 1, v), 0.05, 0.5)

    def negative() -> torch.Tensor:  # the largest logit at -1 or below: a cut at min_p × it would drop them all
        logits = _distinct_logits(g, 1, v)
        return logits - logits.max() - _randint(g, 1, 5)

    negative, p_negative = _min_p_case(g, negative, 0.1, 0.6)

    def top_below_min_p(logits: torch.Tensor, min_p: float) -> bool:  # the top probability itself is below min_p
        return torch.softmax(logits, dim=-1).max().item() < min_p - MARGIN

    hesitant, p_hesitant = _min_p_case(g, lambda: _distinct_logits(g, 1, v, 0.5), 0.3, 0.9, top_below_min_p)

    def sure_and_unsure() -> torch.Tensor:
        sure = _distinct_logits(g, 1, v)
        sure[0, sure.argmax()] += 5
        return torch.cat([sure, _distinct_logits(g, 1, v, 0.5)])

    batch, p_batch = _min_p_case(g, sure_and_unsure, 0.1, 0.5)
    return [
        Case((random, p_random), f"min_p = {p_random:g}: compare each probability with {p_random:g} × the largest"),
        Case((negative, p_negative), "all logits negative: compare probabilities, not logits"),
        Case((hesitant, p_hesitant), f"a hesitant row whose top probability is below {p_hesitant:g}: the cut-off "
             f"is {p_hesitant:g} × that probability, not {p_hesitant:g}"),
        Case((batch, p_batch), "a batch: the cut-off is min_p × each row's own most likely probability"),
        Case((_distinct_logits(g, 2, v), 1.0), "min_p = 1: only the most likely token of each row survives"),
    ]
