"""Checkers for chapter 8, speculative decoding (``notebooks/exercises/08_speculative_decoding_exercises.ipynb``).

Three exercises: the greedy verification of a round of drafts, and the two pieces of the sampling
version, the probability of accepting a draft token and the distribution to draw from after a rejection.

>>> result = check_accept_probability(lambda p_x, q_x: p_x / q_x)
✗ accept_probability: hidden case 2 of 7 fails (the target likes x more than the draft: probability 1, not 2)
  p_x = 0.6, q_x = 0.3
  wrong value
  expected: 1.0
  got:      2.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, check
from minigpt.speculative import residual, verify_greedy


def check_verify_greedy(student: Callable) -> CheckResult:
    """Check ``verify_greedy(drafts, target_logits)`` against ``minigpt.speculative``.

    ``drafts`` are the m tokens the draft proposed; ``target_logits`` (m + 1, V) the target's logits after
    the sequence and after each prefix of the drafts (row i scores the token at draft position i). Keep the
    drafts while each is the target's argmax; at the first miss, or after the last draft, add the
    target's own argmax. Return the kept tokens as a list: between 1 and m + 1 of them.

    >>> def verify_greedy(drafts, target_logits):
    ...     best = target_logits.argmax(dim=-1).tolist()
    ...     n = 0
    ...     while n < len(drafts) and drafts[n] == best[n]:
    ...         n += 1
    ...     return drafts[:n] + [best[n]]
    >>> result = check_verify_greedy(verify_greedy)
    ✓ verify_greedy: all 5 hidden cases pass
    """
    settings = [
        ([3, 1, 2], [3, 1, 2, 0], "every draft is the target's choice: keep them all, plus the target's next "
         "token as a bonus"),
        ([3, 1, 2], [3, 4, 2, 0], "the first miss ends the round: the target's token replaces it, and later "
         "drafts are dropped even when they match"),
        ([5, 1], [2, 1, 0], "the first draft is wrong: the round still yields one token, the target's"),
        ([], [4], "no drafts: one token, the target's greedy choice"),
    ]
    cases = [Case((drafts, _logits_preferring(best)), why) for drafts, best, why in settings]
    logits = torch.randn(5, 8, generator=torch.Generator().manual_seed(8))
    best = logits.argmax(dim=-1).tolist()
    drafts = best[:2] + [(best[2] + 1) % 8, best[3]]  # the third draft misses
    cases.append(Case((drafts, logits), "random logits: the third draft misses"))
    return check("verify_greedy", student, verify_greedy, cases)


def _logits_preferring(tokens: list[int]) -> torch.Tensor:
    """Readable (len(tokens), 8) logits: row i's best token is ``tokens[i]``, the next id a close second."""
    logits = torch.zeros(len(tokens), 8)
    rows = torch.arange(len(tokens))
    logits[rows, (torch.tensor(tokens) + 1) % 8] = 1.0
    logits[rows, tokens] = 2.0
    return logits


def check_accept_probability(student: Callable) -> CheckResult:
    """Check ``accept_probability(p_x, q_x)``: how likely the target keeps a draft token x.

    ``p_x`` is the target's probability of x, ``q_x`` the draft's (x was drawn from the draft, so q_x > 0).
    Speculative sampling keeps x with probability min(1, p_x / q_x); return it as a float.

    >>> result = check_accept_probability(lambda p_x, q_x: min(1.0, p_x / q_x))
    ✓ accept_probability: all 7 hidden cases pass
    """
    g = torch.Generator().manual_seed(8)
    cases = [
        Case((0.2, 0.5), "the target likes x less than the draft: keep it with probability p/q = 0.4"),
        Case((0.6, 0.3), "the target likes x more than the draft: probability 1, not 2"),
        Case((0.3, 0.3), "target and draft agree: always keep x"),
        Case((0.0, 0.25), "the target would never produce x: always reject it"),
    ]
    cases += [Case(tuple(torch.rand(2, generator=g).tolist()), "random probabilities") for _ in range(3)]
    return check("accept_probability", student, _accept_probability, cases)


def _accept_probability(p_x: float, q_x: float) -> float:
    # minigpt.speculative draws u uniform in [0, 1) and keeps x when u * q_x < p_x: P = min(1, p_x / q_x)
    return min(1.0, p_x / q_x)


def check_residual_distribution(student: Callable) -> CheckResult:
    """Check ``residual_distribution(p, q)`` against ``minigpt.speculative``: what to draw from after a rejection.

    ``p`` and ``q`` are (V,) probabilities, the target's and the draft's. Return max(p - q, 0), the mass the
    target has and the draft lacks, divided by its sum so it adds up to 1. When nothing is left over (p
    equals q), return ``p``.

    >>> def residual_distribution(p, q):
    ...     leftover = (p - q).clamp(min=0)
    ...     return leftover / leftover.sum() if leftover.sum() > 0 else p
    >>> result = check_residual_distribution(residual_distribution)
    ✓ residual_distribution: all 6 hidden cases pass
    """
    g = torch.Generator().manual_seed(8)
    cases = [
        Case((torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.3, 0.5, 0.2])), "p - q = [0.2, -0.2, 0.0]: the "
             "negative entry becomes 0, then [0.2, 0, 0] is divided by its sum"),
        Case((torch.tensor([0.4, 0.4, 0.1, 0.1]), torch.tensor([0.1, 0.2, 0.3, 0.4])), "the leftover "
             "[0.3, 0.2, 0, 0] must add up to 1"),
        Case((torch.tensor([0.1, 0.0, 0.9]), torch.tensor([0.0, 0.5, 0.5])), "a token the draft never "
             "proposes keeps all its target probability in the leftover"),
    ]
    cases += [Case((_random_distribution(g), _random_distribution(g)), "random distributions") for _ in range(2)]
    cases.append(Case((torch.tensor([0.25, 0.75]), torch.tensor([0.25, 0.75])), "p equals q: nothing is left "
                      "over, return p"))
    return check("residual_distribution", student, _residual_distribution, cases, atol=1e-5)


def _residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    leftover = residual(p, q)  # unnormalised, as torch.multinomial takes it
    return leftover / leftover.sum()


def _random_distribution(g: torch.Generator) -> torch.Tensor:
    return (torch.randn(8, generator=g) * 2).softmax(-1)
