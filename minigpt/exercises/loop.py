"""Checkers for chapter 5, controlling the loop (``notebooks/exercises/05_controlling_the_loop_exercises.ipynb``).

Three exercises, each checked against ``minigpt`` on hidden cases: the repetition penalty, the tokens a
no-repeat n-gram rule bans, and cutting a text at its first stop string.

>>> result = check_banned_ngram_tokens(lambda ids, n: set())
✗ banned_ngram_tokens: hidden case 1 of 7 fails (the prefix is the last n - 1 = 2 tokens, [1, 2]: 3 followed it before)
  ids = [1, 2, 3, 1, 2], n = 3
  wrong tokens
  expected: {3}
  got:      set()
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from minigpt.exercises.checking import Case, CheckResult, check
from minigpt.generate import cut_at_stop
from minigpt.logits import no_repeat_ngram, repetition_penalty


def check_apply_repetition_penalty(student: Callable) -> CheckResult:
    """Check ``apply_repetition_penalty(logits, input_ids, penalty)`` against ``minigpt.logits``.

    ``logits`` is (B, V), ``input_ids`` (B, T) the context of each row, prompt included. Every token of a
    row's context has its logit divided by ``penalty`` when positive and multiplied by it when negative,
    once however often it occurs. Return a new (B, V) tensor.

    >>> from minigpt.logits import repetition_penalty
    >>> result = check_apply_repetition_penalty(repetition_penalty)
    ✓ apply_repetition_penalty: all 7 hidden cases pass
    """
    g = torch.Generator().manual_seed(5)
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 4.0]])
    cases = [
        Case((logits, torch.tensor([[0, 4]]), 2.0), "a positive logit is divided by the penalty"),
        Case((logits, torch.tensor([[1, 0]]), 2.0), "a negative logit is multiplied by the penalty: dividing it "
             "would raise it towards 0 and make the token MORE likely"),
        Case((logits, torch.tensor([[3, 3, 3]]), 2.0), "a token seen three times is penalised once, not three times"),
        Case((torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), torch.tensor([[0, 0], [2, 1]]), 1.5),
             "each row is penalised for the tokens of its own context only"),
        Case((logits, torch.tensor([[0, 1]]), 0.5), "a penalty below 1 uses the same rule and makes seen tokens "
             "more likely"),
        Case((logits, torch.tensor([[2, 4, 2, 1, 0, 3]]), 1.3), "every token was seen"),
        Case((torch.randn(3, 8, generator=g) * 3, torch.randint(0, 8, (3, 5), generator=g), 1.2),
             "random logits and contexts"),
    ]
    return check("apply_repetition_penalty", student, repetition_penalty, cases, atol=1e-5)


def check_banned_ngram_tokens(student: Callable) -> CheckResult:
    """Check ``banned_ngram_tokens(ids, n)`` against ``minigpt.logits.no_repeat_ngram``.

    ``ids`` is a list of token ids. A token is banned when it would complete an n-gram that already occurs
    in ``ids``: the last n - 1 ids are the prefix, and every token that followed that prefix before is
    banned. Return the banned tokens as a set (any collection of ints will do).

    >>> def banned(ids, n):
    ...     prefix = ids[len(ids) - n + 1:]
    ...     return {ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i:i + n - 1] == prefix}
    >>> result = check_banned_ngram_tokens(banned)
    ✓ banned_ngram_tokens: all 7 hidden cases pass
    """
    g = torch.Generator().manual_seed(7)
    cases = [
        Case(([1, 2, 3, 1, 2], 3), "the prefix is the last n - 1 = 2 tokens, [1, 2]: 3 followed it before"),
        Case(([1, 2, 3, 4], 2), "the prefix [4] never occurred before: nothing is banned"),
        Case(([5, 1, 5, 2, 5], 2), "the prefix [5] occurred twice, followed by 1 and by 2: both are banned"),
        Case(([7, 3, 7, 7], 2), "the n-gram that ends at the last token counts too: (7, 7) bans 7"),
        Case(([4, 9, 4], 1), "n = 1: the prefix is empty, so every token seen so far is banned"),
        Case(([1, 2], 3), "a sequence shorter than n holds no n-gram: nothing is banned"),
        Case((torch.randint(0, 4, (30,), generator=g).tolist(), 3), "a random sequence over 4 tokens"),
    ]
    return check("banned_ngram_tokens", student, _banned_ngram_tokens, cases, compare=_same_tokens)


def _banned_ngram_tokens(ids: list[int], n: int) -> set[int]:
    """The library bans tokens by setting their logits to -inf: read the banned ones back from a row of zeros."""
    logits = no_repeat_ngram(torch.zeros(1, max(ids) + 1), torch.tensor([ids]), n)
    return set(torch.isinf(logits[0]).nonzero().flatten().tolist())


def _same_tokens(expected: set[int], got: object, atol: float) -> str | None:
    if not isinstance(got, Collection) or isinstance(got, (str, torch.Tensor)):
        return f"expected a set of token ids, got a {type(got).__name__}"
    return None if set(got) == expected else "wrong tokens"


def check_cut_at_stop(student: Callable) -> CheckResult:
    """Check ``cut_at_stop(text, stop_strings)`` against ``minigpt.generate.cut_at_stop``.

    Return ``text`` up to, not including, the earliest place where any of ``stop_strings`` begins; the
    whole ``text`` when none occurs. The earliest in the text wins, whatever the order of ``stop_strings``.

    >>> def cut(text, stop_strings):
    ...     found = [text.find(s) for s in stop_strings if s in text]
    ...     return text[:min(found)] if found else text
    >>> result = check_cut_at_stop(cut)
    ✓ cut_at_stop: all 6 hidden cases pass
    """
    cases = [
        Case(("Good night, good night!\nParting", ["\n"]), "the text ends just before the stop string"),
        Case(("To be, or not to be", ["\n"]), "no stop string occurs: the whole text is kept"),
        Case(("Fair is foul. And foul is fair\n", ["\n", "."]), "the stop string that comes first in the text "
             "wins, not the first one in the list"),
        Case(("ROMEO: O, she doth teach", ["ROMEO"]), "a stop string at the very start leaves an empty text"),
        Case(("Exit, pursued by a bear", ["bear"]), "a stop string at the very end"),
        Case(("Parting is such sweet sorrow", ["sweet sorrow"]), "a stop string of several words"),
    ]
    return check("cut_at_stop", student, cut_at_stop, cases)
