"""Checkers for chapter 5, controlling the loop (``notebooks/exercises/05_controlling_the_loop_exercises.ipynb``).

Three exercises, each checked against ``minigpt`` on hidden cases: the repetition penalty, the tokens a
no-repeat n-gram rule bans, and cutting a text at its first stop string. A ``seed`` checks on cases of the
same kinds drawn from it instead (``minigpt.exercises.grading``).

>>> result = check_banned_ngram_tokens(lambda ids, n: set())
✗ banned_ngram_tokens: hidden case 1 of 7 fails (the prefix is the last n - 1 = 2 tokens, [1, 2]: 3 followed it before)
  ids = [1, 2, 3, 1, 2], n = 3
  wrong tokens
  expected: {3}
  got:      set()
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check
from minigpt.generate import cut_at_stop
from minigpt.logits import no_repeat_ngram, repetition_penalty


def check_apply_repetition_penalty(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``apply_repetition_penalty(logits, input_ids, penalty)`` against ``minigpt.logits``.

    ``logits`` is (B, V), ``input_ids`` (B, T) the context of each row, prompt included. Every token of a
    row's context has its logit divided by ``penalty`` when positive and multiplied by it when negative,
    once however often it occurs. Return a new (B, V) tensor. A ``seed`` checks on cases drawn from it.

    >>> from minigpt.logits import repetition_penalty
    >>> result = check_apply_repetition_penalty(repetition_penalty)
    ✓ apply_repetition_penalty: all 7 hidden cases pass
    >>> result = check_apply_repetition_penalty(repetition_penalty, seed=1)
    ✓ apply_repetition_penalty: all 7 drawn cases pass
    """
    cases = cases_for(seed, _penalty_cases, _drawn_penalty_cases)
    return check("apply_repetition_penalty", student, repetition_penalty, cases, atol=1e-5)


def _penalty_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 4.0]])
    return [
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


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An int from ``low`` to ``high``, both included, drawn from ``g``."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _pick(g: torch.Generator, items: Sequence | torch.Tensor) -> object:
    """One item of ``items``, drawn from ``g``."""
    return items[_randint(g, 0, len(items) - 1)]


def _signed_logits(g: torch.Generator, rows: int, vocabulary: int) -> torch.Tensor:
    """(rows, vocabulary) logits rounded to 2 decimals, none of them 0, so that every penalty changes them."""
    logits = (3 * torch.randn(rows, vocabulary, generator=g)).round(decimals=2)
    return torch.where(logits.abs() < 0.1, 0.5 * logits.sign() + 0.25, logits)  # 0.25 if 0, never within 0.1 of 0


def _drawn_penalty_cases(g: torch.Generator) -> list[Case]:
    v = _randint(g, 6, 10)
    penalty = round(1.1 + 0.9 * float(torch.rand(1, generator=g)), 2)  # between 1.1 and 2
    below_one = round(0.3 + 0.6 * float(torch.rand(1, generator=g)), 2)  # between 0.3 and 0.9
    one_row = _signed_logits(g, 1, v)
    positive = one_row[0].gt(0).nonzero().flatten()
    negative = one_row[0].lt(0).nonzero().flatten()
    if len(positive) == 0 or len(negative) == 0:  # make both signs exist, at places drawn from g
        first, second = torch.randperm(v, generator=g)[:2].tolist()
        one_row[0, first], one_row[0, second] = one_row[0, first].abs(), -one_row[0, second].abs()
        positive, negative = torch.tensor([first]), torch.tensor([second])
    seen_positive, seen_negative = int(_pick(g, positive)), int(_pick(g, negative))
    repeated = _randint(g, 0, v - 1)
    copies = _randint(g, 2, 4)
    two_rows = _signed_logits(g, 2, v)
    contexts = torch.stack([torch.randperm(v, generator=g)[:3], torch.randperm(v, generator=g)[:3]])  # (2, 3)
    return [
        Case((one_row, torch.tensor([[seen_positive]]), penalty),
             f"a positive logit is divided by the penalty {penalty:g}"),
        Case((one_row, torch.tensor([[seen_negative, seen_positive]]), penalty),
             "a negative logit is multiplied by the penalty: dividing it would raise it towards 0"),
        Case((one_row, torch.tensor([[repeated] * copies]), penalty),
             f"a token seen {copies} times is penalised once, not {copies} times"),
        Case((two_rows, contexts, penalty), "each row is penalised for the tokens of its own context only"),
        Case((one_row, torch.tensor([[seen_positive, seen_negative]]), below_one),
             f"a penalty below 1 ({below_one:g}) uses the same rule and makes seen tokens more likely"),
        Case((one_row, torch.randperm(v, generator=g)[None], penalty), "every token was seen"),
        Case((_signed_logits(g, 3, v), torch.randint(0, v, (3, 6), generator=g), penalty),
             "random logits and contexts, 3 rows"),
    ]


def check_banned_ngram_tokens(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``banned_ngram_tokens(ids, n)`` against ``minigpt.logits.no_repeat_ngram``.

    ``ids`` is a list of token ids. A token is banned when it would complete an n-gram that already occurs
    in ``ids``: the last n - 1 ids are the prefix, and every token that followed that prefix before is
    banned. Return the banned tokens as a set (any collection of ints will do). A ``seed`` checks on cases
    drawn from it.

    >>> def banned(ids, n):
    ...     prefix = ids[len(ids) - n + 1:]
    ...     return {ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i:i + n - 1] == prefix}
    >>> result = check_banned_ngram_tokens(banned)
    ✓ banned_ngram_tokens: all 7 hidden cases pass
    >>> result = check_banned_ngram_tokens(banned, seed=1)
    ✓ banned_ngram_tokens: all 7 drawn cases pass
    """
    cases = cases_for(seed, _ngram_cases, _drawn_ngram_cases)
    return check("banned_ngram_tokens", student, _banned_ngram_tokens, cases, compare=_same_tokens)


def _ngram_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    return [
        Case(([1, 2, 3, 1, 2], 3), "the prefix is the last n - 1 = 2 tokens, [1, 2]: 3 followed it before"),
        Case(([1, 2, 3, 4], 2), "the prefix [4] never occurred before: nothing is banned"),
        Case(([5, 1, 5, 2, 5], 2), "the prefix [5] occurred twice, followed by 1 and by 2: both are banned"),
        Case(([7, 3, 7, 7], 2), "the n-gram that ends at the last token counts too: (7, 7) bans 7"),
        Case(([4, 9, 4], 1), "n = 1: the prefix is empty, so every token seen so far is banned"),
        Case(([1, 2], 3), "a sequence shorter than n holds no n-gram: nothing is banned"),
        Case((torch.randint(0, 4, (30,), generator=g).tolist(), 3), "a random sequence over 4 tokens"),
    ]


def _ids(g: torch.Generator, length: int, low: int, high: int) -> list[int]:
    """``length`` token ids from ``low`` to ``high - 1``, drawn from ``g``."""
    return torch.randint(low, high, (length,), generator=g).tolist()


def _filler(g: torch.Generator) -> list[int]:
    """One to three tokens from 20 to 29: ids that no prefix of the drawn cases holds."""
    return _ids(g, _randint(g, 1, 3), 20, 30)


def _drawn_ngram_cases(g: torch.Generator) -> list[Case]:
    # Token ranges that cannot meet by chance: the prefix from 0-4, the tokens that followed it from 5-9, the
    # token just before each occurrence of the prefix from 10-19, filler from 20-29. So the n tokens that end
    # the text (the token before the prefix, then the prefix) occur nowhere else, and the prefix occurs only
    # where it was put.
    n = _randint(g, 2, 4)
    prefix = _ids(g, n - 1, 0, 5)
    before = torch.randperm(10, generator=g)[:3].add(10).tolist()  # three different tokens
    followers = torch.randperm(5, generator=g)[:2].add(5).tolist()  # two different tokens
    once = [before[0], *prefix, followers[0], *_filler(g), before[1], *prefix]
    twice = [before[0], *prefix, followers[0], *_filler(g), before[1], *prefix, followers[1], *_filler(g),
             before[2], *prefix]
    unseen = [*_filler(g), *prefix, followers[0], *_filler(g), before[0], followers[1]]
    run_token = _randint(g, 10, 19)
    run = [*_filler(g), run_token, *_filler(g), *[run_token] * n]  # n copies at the end, one more before
    short_n = _randint(g, 3, 5)
    return [
        Case((once, n), f"the prefix is the last n - 1 = {n - 1} tokens, {prefix}: {followers[0]} followed it before"),
        Case((unseen, n), f"the prefix {unseen[len(unseen) - n + 1:]} never occurred before: nothing is banned"),
        Case((twice, n), f"the prefix {prefix} occurred twice, followed by {followers[0]} and by {followers[1]}: "
             "both are banned"),
        Case((run, n), f"the n-gram that ends at the last token counts too: {tuple([run_token] * n)} bans "
             f"{run_token}"),
        Case((_ids(g, _randint(g, 3, 8), 0, 10), 1), "n = 1: the prefix is empty, so every token seen so far is "
             "banned"),
        Case((_ids(g, short_n - 1, 0, 10), short_n), "a sequence shorter than n holds no n-gram: nothing is banned"),
        Case((_ids(g, _randint(g, 20, 30), 0, 4), n), f"a random sequence over 4 tokens, n = {n}"),
    ]


def _banned_ngram_tokens(ids: list[int], n: int) -> set[int]:
    """The library bans tokens by setting their logits to -inf: read the banned ones back from a row of zeros."""
    logits = no_repeat_ngram(torch.zeros(1, max(ids) + 1), torch.tensor([ids]), n)
    return set(torch.isinf(logits[0]).nonzero().flatten().tolist())


def _same_tokens(expected: set[int], got: object, atol: float) -> str | None:
    if not isinstance(got, Collection) or isinstance(got, (str, torch.Tensor)):
        return f"expected a set of token ids, got a {type(got).__name__}"
    return None if set(got) == expected else "wrong tokens"


def check_cut_at_stop(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``cut_at_stop(text, stop_strings)`` against ``minigpt.generate.cut_at_stop``.

    Return ``text`` up to, not including, the earliest place where any of ``stop_strings`` begins; the
    whole ``text`` when none occurs. The earliest in the text wins, whatever the order of ``stop_strings``.
    A ``seed`` checks on cases drawn from it.

    >>> def cut(text, stop_strings):
    ...     found = [text.find(s) for s in stop_strings if s in text]
    ...     return text[:min(found)] if found else text
    >>> result = check_cut_at_stop(cut)
    ✓ cut_at_stop: all 6 hidden cases pass
    >>> result = check_cut_at_stop(cut, seed=1)
    ✓ cut_at_stop: all 7 drawn cases pass
    """
    return check("cut_at_stop", student, cut_at_stop, cases_for(seed, _stop_cases, _drawn_stop_cases))


def _stop_cases() -> list[Case]:
    return [
        Case(("Good night, good night!\nParting", ["\n"]), "the text ends just before the stop string"),
        Case(("To be, or not to be", ["\n"]), "no stop string occurs: the whole text is kept"),
        Case(("Fair is foul. And foul is fair\n", ["\n", "."]), "the stop string that comes first in the text "
             "wins, not the first one in the list"),
        Case(("ROMEO: O, she doth teach", ["ROMEO"]), "a stop string at the very start leaves an empty text"),
        Case(("Exit, pursued by a bear", ["bear"]), "a stop string at the very end"),
        Case(("Parting is such sweet sorrow", ["sweet sorrow"]), "a stop string of several words"),
    ]


# Lines the drawn cases cut, from Shakespeare, as the visible cases are.
LINES = [
    "Now is the winter of our discontent made glorious summer",
    "But soft, what light through yonder window breaks?",
    "Friends, Romans, countrymen, lend me your ears",
    "The quality of mercy is not strained",
    "Shall I compare thee to a summer's day?",
    "What's in a name? That which we call a rose",
    "Once more unto the breach, dear friends, once more",
    "Uneasy lies the head that wears a crown",
]


def _words(line: str) -> list[str]:
    """The words of ``line``, punctuation included, that are at least 3 letters long and occur in it once (as
    part of another word neither), so that ``line.find(word)`` is where the word stands."""
    return [word for word in line.split() if len(word) >= 3 and line.count(word) == 1]


def _drawn_stop_cases(g: torch.Generator) -> list[Case]:
    first, second = _pick(g, LINES), _pick(g, LINES)
    text = _pick(g, LINES)
    absent = [word for word in _words(_pick(g, LINES)) if word not in text]  # may be empty: "\n" is absent anyway
    listed = _pick(g, LINES)
    middle = _words(listed)[1:-1]  # neither at the start nor at the end
    early, late = sorted(torch.randperm(len(middle), generator=g)[:2].tolist())
    opening = _pick(g, LINES)
    ending = _pick(g, [line for line in LINES if line.split()[-1] in _words(line)])
    words = _pick(g, LINES).split()
    at = _randint(g, 0, len(words) - 3)
    several = " ".join(words[at : at + _randint(g, 2, 3)])
    return [
        Case((f"{first}\n{second}", ["\n"]), "the text ends just before the stop string"),
        Case((text, ["\n", *absent[:1]]), "no stop string occurs: the whole text is kept"),
        Case((listed, [middle[late], middle[early]]), f"the stop string that comes first in the text "
             f"({middle[early]!r}) wins, not the first one in the list"),
        Case((f"{listed}\n{listed}", [_pick(g, middle)]), "the stop string occurs twice: cut at the first"),
        Case((opening, ["\n", opening.split()[0]]), "a stop string at the very start leaves an empty text"),
        Case((ending, [ending.split()[-1]]), "a stop string at the very end"),
        Case((" ".join(words), [several]), "a stop string of several words"),
    ]
