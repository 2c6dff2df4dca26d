"""Checkers for chapter 9, determinism (``notebooks/exercises/09_determinism_exercises.ipynb``).

Two exercises: a float32 sum added up strictly left to right, where the order of the additions decides the
result, then whether rounding noise of a given size could change a row's argmax (its top-2 gap against 2d).
Every answer is exact: float32 additions are correctly rounded, so the same order gives the same bits on
every machine, and the logits of the second exercise are multiples of 1/16, so their gaps are exact too.

>>> result = check_sum_left_to_right(lambda x: sum(x.tolist()))
✗ sum_left_to_right: hidden case 1 of 6 fails (16777216 = 2**24, then 100 ones: float32 numbers near 2**24 are ...)
  x = torch.tensor([16777216.0] + [1.0] * 100)
  wrong value
  expected: 16777216.0
  got:      16777316.0
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_values
from minigpt.exercises.models import TOY_LOGITS

BIG = 2.0**24  # from here on float32 numbers are 2 apart: adding 1 rounds back (half-way, to the even one)


def check_sum_left_to_right(student: Callable[[torch.Tensor], float], *, seed: int | None = None) -> CheckResult:
    """Check ``sum_left_to_right(x)``: the float32 values of ``x`` (N,) added one at a time, first to last.

    The running total is a float32 and is rounded after each addition, as a plain loop over float32 numbers
    does; the answer is that total, a number (or a 0-d tensor), compared exactly. An empty ``x`` sums to 0.
    A ``seed`` checks on cases drawn from it instead.

    >>> def sum_left_to_right(x):
    ...     total = torch.tensor(0.0)  # float32
    ...     for value in x:
    ...         total = total + value  # rounded to float32 at every step
    ...     return total.item()
    >>> result = check_sum_left_to_right(sum_left_to_right)
    ✓ sum_left_to_right: all 6 hidden cases pass
    """
    cases = cases_for(seed, _sum_cases, _drawn_sum_cases)
    return check("sum_left_to_right", student, _sum_left_to_right, cases, atol=0.0)


def check_argmax_is_decided(
    student: Callable[[torch.Tensor, float], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``argmax_is_decided(logits, d)``: for each row of the (B, V) ``logits``, whether no change of at most
    ``d`` in every logit can change its argmax.

    The two leading logits can move towards each other by up to 2d, so a row is decided when the gap between
    its top two logits is larger than 2d; at a gap of exactly 2d they can meet in a tie, and a tie (a gap
    of 0) is never decided. The answer is a (B,) bool tensor. A ``seed`` checks on cases drawn from it instead.

    >>> def argmax_is_decided(logits, d):
    ...     top2 = logits.topk(2, dim=-1).values  # (B, 2), largest first
    ...     return top2[:, 0] - top2[:, 1] > 2 * d
    >>> result = check_argmax_is_decided(argmax_is_decided)
    ✓ argmax_is_decided: all 7 hidden cases pass
    """
    cases = cases_for(seed, _decided_cases, _drawn_decided_cases)
    return check("argmax_is_decided", student, _argmax_is_decided, cases, compare=_compare_decided)


def _sum_left_to_right(x: torch.Tensor) -> float:
    total = torch.zeros((), dtype=torch.float32)
    for value in x:  # one float32 addition at a time: IEEE rounding makes each one exact on every machine
        total = total + value
    return total.item()


def _argmax_is_decided(logits: torch.Tensor, d: float) -> torch.Tensor:
    top2 = logits.topk(2, dim=-1).values  # (B, 2): a tie for the lead shows up as two equal values
    return top2[:, 0] - top2[:, 1] > 2 * d


def _compare_decided(expected: torch.Tensor, got: object, atol: float) -> str | None:
    """Say so when the answer is the gap itself, or a number, rather than one True or False per row."""
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.is_floating_point():
        return f"expected True or False for each row (a bool tensor), got a {got.dtype} tensor"
    return compare_values(expected, got, atol)


def _sum_case(values: list[float], why: str) -> Case:
    """A case of ``values`` as a float32 tensor; a long one is shown as Python builds it, ``[1.0] * 100``."""
    shown = None
    if len(values) > 8:
        runs = [(value, len(list(group))) for value, group in itertools.groupby(values)]
        pieces = [f"[{value!r}] * {count}" if count > 1 else f"[{value!r}]" for value, count in runs]
        shown = f"x = torch.tensor({' + '.join(pieces)})"
    return Case((torch.tensor(values, dtype=torch.float32),), why, shown=shown)


def _sum_cases() -> list[Case]:
    return [
        _sum_case([BIG] + [1.0] * 100, "16777216 = 2**24, then 100 ones: float32 numbers near 2**24 are 2 apart, "
                   "so each 1 added to the running total rounds away and the sum stays 16777216"),
        _sum_case([1.0] * 100 + [BIG], "the same numbers, the ones first: they reach 100 before they meet 2**24, "
                   "and the sum is 16777316"),
        _sum_case([BIG, 1.0, -BIG], "2**24 + 1 rounds back to 2**24, so taking 2**24 away leaves 0, not 1 "
                   "(float32 all the way, not Python's float64)"),
        _sum_case([0.1, 0.2, 0.3], "chapter 9's three numbers, as float32"),
        _sum_case([], "no numbers at all: the sum of nothing is 0"),
        _sum_case([3.5], "one number: the sum is that number"),
    ]


def _decided_cases() -> list[Case]:
    two = torch.tensor(2.0)
    one_step = torch.nextafter(two, torch.tensor(3.0))  # the float32 after 2.0: 2 + 2**-22
    return [
        Case((TOY_LOGITS, 0.1), "'forward' leads 'toward' by 6.75 - 6.28 = 0.47, more than 2d = 0.2: decided"),
        Case((TOY_LOGITS, 0.3), "d = 0.3: each can move 0.3 towards the other, 0.6 in all, more than the gap of 0.47"),
        Case((torch.tensor([[3.0, 2.0, 1.5, 0.0]]), 0.5), "a gap of exactly 2d = 1: the two can meet in a tie, "
             "so not decided"),
        Case((torch.tensor([[1.0, 4.0, 4.0, 0.0]]), 0.25), "two tokens tie for the lead: the gap is 0 (the second "
             "largest logit is the other 4.0, not 1.0), never decided"),
        Case((torch.stack([two, one_step, torch.tensor(1.0)]).unsqueeze(0), 0.0), "chapter 9's float32 near-tie, "
             "2.0 against the next float32 (2 + 2**-22): decided, but only when there is no noise at all, d = 0"),
        Case((torch.tensor([[10.0, 8.0, 0.0]]), 0.75), "the noise is in the logits, not the probabilities: "
             "a gap of 2 against 2d = 1.5, decided"),
        Case((torch.tensor([[5.0, 1.0, 0.0, 0.0], [0.0, 2.5, 2.0, 0.0], [1.0, 1.0, -1.0, 0.0]]), 0.5),
             "a batch of three rows, gaps 4, 0.5 and 0 against 2d = 1: one answer per row"),
    ]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _draw_sum(g: torch.Generator) -> tuple[float, float, int]:
    """A big power of two, the small number half-way to the next float32 after it, and how many of them to add.

    The big number plus the small one lies half-way between two float32 numbers and rounds back to the big one
    (to the even neighbour), so left to right the small ones all vanish; two small ones added together first
    make a whole float32 step and stay. Any other order of the additions (blocks, right to left) adds some small
    ones together first, so it gives another sum, whatever the machine.
    """
    sign = 1.0 if _randint(g, 0, 1) else -1.0  # the same sign for both: -2**24 + 1 would be exact
    power = _randint(g, 24, 27)
    return sign * 2.0**power, sign * 2.0 ** (power - 24), _randint(g, 40, 160)  # float32 steps: 2**(power - 23)


def _drawn_sum_cases(g: torch.Generator) -> list[Case]:
    big, small, n = _draw_sum(g)
    big2, small2, n2 = _draw_sum(g)
    big3, small3, _ = _draw_sum(g)
    ordinary = (10 * torch.randn(_randint(g, 3, 8), generator=g)).round(decimals=2).tolist()
    return [
        _sum_case([big] + [small] * n, f"{big:.0f}, then {n} times {small:g}: float32 numbers near {abs(big):.0f} are "
                   f"{2 * abs(small):g} apart, so each {small:g} added to the running total rounds away and the sum "
                   f"stays {big:.0f}"),
        _sum_case([small2] * n2 + [big2], f"{n2} times {small2:g} first, then {big2:.0f}: the small ones add up "
                   "before they meet the big one"),
        _sum_case([big3, small3, -big3], f"{big3:.0f} + {small3:g} rounds back to {big3:.0f}, so taking it away "
                   "leaves 0 (float32 all the way, not Python's float64)"),
        _sum_case(ordinary, "ordinary numbers, as float32"),
        _sum_case([], "no numbers at all: the sum of nothing is 0"),
        _sum_case(ordinary[:1], "one number: the sum is that number"),
    ]


def _eighths(g: torch.Generator, low: float, high: float) -> float:
    """A random multiple of 1/8 from ``low`` to ``high``: exact in float32, so gaps and 2d compare exactly."""
    return _randint(g, int(8 * low), int(8 * high)) / 8


def _row(g: torch.Generator, vocabulary: int, gap: float) -> torch.Tensor:
    """One (V,) row whose two leading logits, at random places, are ``gap`` apart; the others at or below 0."""
    lead = _eighths(g, 4.0, 6.0)  # above every other logit by more than any gap drawn here (at most 3.75)
    values = [lead, lead - gap] + [_eighths(g, -4.0, 0.0) for _ in range(vocabulary - 2)]
    return torch.tensor(values)[torch.randperm(vocabulary, generator=g)]


def _drawn_decided_cases(g: torch.Generator) -> list[Case]:
    v = _randint(g, 5, 10)
    d = _eighths(g, 0.125, 0.875)  # 2d up to 1.75, and 2d + 1/8 + ... stays below the lead's margin
    big_d = _eighths(g, 0.5, 1.5)  # 2d >= 1, larger than any gap between two probabilities
    gaps = [2 * d + _eighths(g, 0.125, 1.0), 1.5 * d, 0.0]  # decided, fooled by d alone, a tie
    order = torch.randperm(3, generator=g).tolist()
    batch = torch.stack([_row(g, v, gaps[i]) for i in order])  # (3, V): the three kinds in a random order
    shown = ", ".join(f"{gaps[i]:g}" for i in order)
    lead = torch.tensor(_eighths(g, 1.0, 4.0))
    near_tie = torch.tensor([lead.item(), torch.nextafter(lead, torch.tensor(-10.0)).item()] + [-1.0] * (v - 2))
    return [
        Case((_row(g, v, gaps[0]).unsqueeze(0), d), f"a gap of {gaps[0]:g}, more than 2d = {2 * d:g}: decided"),
        Case((_row(g, v, gaps[1]).unsqueeze(0), d), f"d = {d:g}: each can move {d:g} towards the other, "
             f"{2 * d:g} in all, more than the gap of {gaps[1]:g}"),
        Case((_row(g, v, 2 * d).unsqueeze(0), d), f"a gap of exactly 2d = {2 * d:g}: the two can meet in a tie, "
             "so not decided"),
        Case((_row(g, v, 0.0).unsqueeze(0), d), "two tokens tie for the lead: the gap is 0, never decided"),
        Case((_row(g, v, 0.0).unsqueeze(0), 0.0), "two tokens tie for the lead and d = 0: still not decided, "
             "a tie has no single argmax"),
        Case((near_tie[torch.randperm(v, generator=g)].unsqueeze(0), 0.0), f"a float32 near-tie, {lead.item():g} "
             "against the float32 just below it: decided, but only when there is no noise at all, d = 0"),
        Case((_row(g, v, 2 * big_d + 0.125).unsqueeze(0), big_d), f"the noise is in the logits, not the "
             f"probabilities: a gap of {2 * big_d + 0.125:g} against 2d = {2 * big_d:g}, decided"),
        Case((batch, d), f"a batch of three rows, gaps {shown} against 2d = {2 * d:g}: one answer per row"),
    ]
