"""Checkers for chapter 14, watermarks (``notebooks/exercises/14_watermarks_exercises.ipynb``).

Two exercises: the green list that the previous token seeds (``minigpt.logits.greenlist``, the "lefthash"
scheme of Kirchenbauer et al. and transformers), then the detector's z-score of a text: how many of its tokens
are green, against the γ·T a text written without the watermark would have (``minigpt.watermark.detect``).
A ``seed`` checks on cases of the same kinds drawn from it (``minigpt.exercises.grading``): small vocabularies,
texts of several tokens, γ whose γ·V is not a whole number, keys, watermarked texts, repeated pairs.

>>> result = check_greenlist(_greenlist)
✓ greenlist: all 7 hidden cases pass
>>> result = check_watermark_z_score(_watermark_z_score)
✓ watermark_z_score: all 7 hidden cases pass
>>> result = check_watermark_z_score(_watermark_z_score, seed=1)
✓ watermark_z_score: all 7 drawn cases pass
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_values
from minigpt.logits import WatermarkSettings, greenlist
from minigpt.tokenizer import VOCAB_SIZE, encode
from minigpt.watermark import detect

KEY = WatermarkSettings().hashing_key  # transformers' default hashing key, 15485863 (the millionth prime)
# a line of the held-out play, as GPT-2 tokens: a real text for the detector exercise
LINE = encode("ROMEO: But, soft! what light through yonder window breaks?")
Z_TOL = 1e-5  # a z of about 10 computed in float32 is off by about 1e-6; any real mistake is off by far more


def _greenlist(ids: list[int], vocab_size: int, greenlist_ratio: float, hashing_key: int) -> torch.Tensor:
    """The reference: the library's green list for these settings (lefthash, one token of context)."""
    settings = WatermarkSettings(greenlist_ratio=greenlist_ratio, hashing_key=hashing_key)
    return greenlist(ids, settings, vocab_size=vocab_size)


def check_greenlist(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``greenlist(ids, vocab_size, greenlist_ratio, hashing_key)`` against ``minigpt.logits.greenlist``.

    The green list of the token that follows ``ids`` (a list of token ids): seed a ``torch.Generator`` with
    ``hashing_key * ids[-1]`` (only the last token: "lefthash"), draw ``torch.randperm(vocab_size)`` from it,
    and keep its first ``int(vocab_size * greenlist_ratio)`` ids, as a 1-D tensor of integers. Their order
    does not matter. A ``seed`` checks on cases drawn from it.

    >>> def seeded_by_the_first_token(ids, vocab_size, greenlist_ratio, hashing_key):
    ...     return _greenlist(ids[:1], vocab_size, greenlist_ratio, hashing_key)
    >>> result = check_greenlist(seeded_by_the_first_token)
    ✗ greenlist: hidden case 2 of 7 fails (only the LAST token seeds the list (lefthash): 2, not 5 or 9)
      ids = [5, 9, 2], vocab_size = 12, greenlist_ratio = 0.25, hashing_key = 15485863
      wrong green tokens: 0 and 4 should be green; 6 and 8 are not green
      expected: tensor([0, 4, 2])
      got:      tensor([8, 2, 6])
    """
    cases = cases_for(seed, _greenlist_cases, _drawn_greenlist_cases)
    return check("greenlist", student, _greenlist, cases, compare=_compare_green)


def _greenlist_cases() -> list[Case]:
    return [
        Case(([3], 12, 0.25, KEY), "one previous token: seed with hashing_key * 3, keep the first int(12 * 0.25) = "
             "3 ids of the permutation"),
        Case(([5, 9, 2], 12, 0.25, KEY), "only the LAST token seeds the list (lefthash): 2, not 5 or 9"),
        Case(([4], 12, 0.25, KEY), "another previous token, another list: 4 seeds it"),
        Case(([6], 11, 0.25, KEY), "int(11 * 0.25) = int(2.75) = 2 green tokens: int() rounds down"),
        Case(([6], 12, 0.5, 7), "another key and γ = 0.5: half the vocabulary is green, seeded with 7 * 6"),
        Case(([0], 12, 0.25, KEY), "token 0: the seed is hashing_key * 0 = 0, still a seed"),
        Case((LINE[:6], VOCAB_SIZE, 0.0002, KEY), f"GPT-2's vocabulary of {VOCAB_SIZE:,} tokens: int({VOCAB_SIZE} * "
             f"0.0002) = 10 green tokens, seeded by the last token, {LINE[5]}"),
    ]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An int from ``low`` to ``high``, both included, drawn from ``g``."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _key(g: torch.Generator) -> int:
    """A hashing key: the default half of the time, else a random one up to 2**31, never 1 (which would hide
    a key left out of the seed)."""
    return KEY if _randint(g, 0, 1) else _randint(g, 2, 2**31)


def _distinct(g: torch.Generator, count: int, vocab_size: int) -> list[int]:
    """``count`` different token ids below ``vocab_size``, in a random order."""
    return torch.randperm(vocab_size, generator=g)[:count].tolist()


def _drawn_greenlist_cases(g: torch.Generator) -> list[Case]:
    v = 4 * _randint(g, 3, 4)  # 12 or 16: γ = 0.25 makes a whole number of green tokens
    a, b, d, e = _distinct(g, 4, v)
    odd = 4 * _randint(g, 2, 3) + 3  # 11 or 15: V * 0.25 ends in .75, so round() and int() differ
    c = _randint(g, 0, odd - 1)
    key, other_key = _key(g), _randint(g, 2, 2**31)
    long_text = [*_distinct(g, _randint(g, 2, 4), v), a]
    gpt2 = encode(" ".join(["ROMEO:", "JULIET:", "But", "soft", "what", "light", "breaks"][i]
                           for i in torch.randperm(7, generator=g)[:4].tolist()))
    return [
        Case(([a], v, 0.25, key), f"one previous token: seed with hashing_key * {a}, keep the first "
             f"int({v} * 0.25) = {v // 4} ids of the permutation"),
        Case((long_text, v, 0.25, key), f"only the LAST token seeds the list (lefthash): {a}, not the ones before"),
        Case(([b], v, 0.25, key), f"another previous token, another list: {b} seeds it"),
        Case(([c], odd, 0.25, key), f"int({odd} * 0.25) = int({odd / 4}) = {odd // 4} green tokens: int() rounds "
             "down"),
        Case(([d], v, 0.5, other_key), f"another key and γ = 0.5: half the vocabulary is green, seeded with "
             f"{other_key} * {d}"),
        Case(([e, 0], v, 0.25, key), "token 0 last: the seed is hashing_key * 0 = 0, still a seed"),
        Case((gpt2, VOCAB_SIZE, 0.0002, key), f"GPT-2's vocabulary of {VOCAB_SIZE:,} tokens: int({VOCAB_SIZE} * "
             f"0.0002) = 10 green tokens, seeded by the last token, {gpt2[-1]}"),
    ]


def _and(items: list[int]) -> str:
    """``[1, 3, 7]`` as "1, 3 and 7"."""
    words = [str(i) for i in items]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _compare_green(expected: torch.Tensor, got: object, atol: float) -> str | None:
    """None when ``got`` holds the same green ids as ``expected``, in any order; else what differs."""
    if not isinstance(got, torch.Tensor):
        return f"return a tensor of token ids (a slice of torch.randperm), got a {type(got).__name__}"
    if got.is_floating_point() or got.dtype == torch.bool or got.dim() != 1:
        return f"return a 1-D tensor of integer token ids, got a {got.dim()}-D tensor of {got.dtype}"
    if len(got) != len(expected):
        return f"wrong number of green tokens: expected {len(expected)}, got {len(got)}"
    if len(set(got.tolist())) != len(got):
        return "a token appears twice in the list: each green token is in it once"
    expected_ids, got_ids = set(expected.tolist()), set(got.tolist())
    missing, extra = sorted(expected_ids - got_ids), sorted(got_ids - expected_ids)
    if missing:
        return (f"wrong green tokens: {_and(missing)} should be green; {_and(extra)} "
                f"{'is' if len(extra) == 1 else 'are'} not green")
    return None


def _watermark_z_score(ids: list[int], vocab_size: int, greenlist_ratio: float, hashing_key: int) -> float:
    """The reference: the library's detector on these settings (lefthash, one token of context)."""
    settings = WatermarkSettings(greenlist_ratio=greenlist_ratio, hashing_key=hashing_key)
    return detect(ids, settings, vocab_size=vocab_size).z_score


def check_watermark_z_score(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``watermark_z_score(ids, vocab_size, greenlist_ratio, hashing_key)``: the detector's z of a text.

    Every token after the first is scored: it is green when it is in the green list that the token before it
    seeds. With T scored tokens, G of them green and γ the green-list ratio, z = (G − γT) / √(Tγ(1 − γ)),
    every occurrence counted (repeated pairs too, as transformers' detector does by default). Compared with
    ``minigpt.watermark.detect`` to 1e-5. A ``seed`` checks on cases drawn
    from it.

    >>> from minigpt.watermark import z_score
    >>> def first_token_scored_too(ids, vocab_size, greenlist_ratio, hashing_key):
    ...     settings = WatermarkSettings(greenlist_ratio=greenlist_ratio, hashing_key=hashing_key)
    ...     green = sum(ids[t] in greenlist(ids[:t], settings, vocab_size) for t in range(1, len(ids)))
    ...     return z_score(green, len(ids), greenlist_ratio)  # len(ids) - 1 tokens are scored
    >>> result = check_watermark_z_score(first_token_scored_too)
    ✗ watermark_z_score: hidden case 1 of 7 fails (10 tokens, 9 scored, 3 of them green: the first has no \
token before it to seed its green list)
      ids = [8, 4, 1, 1, 9, 6, 7, 6, 8, 9], vocab_size = 12, greenlist_ratio = 0.25, hashing_key = 15485863
      wrong value
      expected: 0.5774
      got:      0.3651
    """
    cases = cases_for(seed, _z_cases, _drawn_z_cases)
    return check("watermark_z_score", student, _watermark_z_score, cases, atol=Z_TOL, compare=compare_values)


def _text(g: torch.Generator, length: int, vocab_size: int, greenlist_ratio: float, hashing_key: int,
          green: int) -> list[int]:
    """A text of ``length`` tokens of which exactly ``green`` of the scored ones (all but the first) are green,
    at random places: each token drawn from the green list its previous token seeds, or from the rest."""
    settings = WatermarkSettings(greenlist_ratio=greenlist_ratio, hashing_key=hashing_key)
    places = set(torch.randperm(length - 1, generator=g)[:green].add(1).tolist())
    ids = [_randint(g, 0, vocab_size - 1)]
    for t in range(1, length):
        listed = set(greenlist(ids, settings, vocab_size=vocab_size).tolist())
        choices = sorted(listed if t in places else set(range(vocab_size)) - listed)
        ids.append(choices[_randint(g, 0, len(choices) - 1)])
    return ids


def _z_cases() -> list[Case]:
    g = torch.Generator().manual_seed(14)
    return [
        Case((_text(g, 10, 12, 0.25, KEY, 3), 12, 0.25, KEY), "10 tokens, 9 scored, 3 of them green: the first has "
             "no token before it to seed its green list"),
        Case((_text(g, 12, 12, 0.25, KEY, 11), 12, 0.25, KEY), "a watermarked text: all 11 scored tokens are green, "
             "z = (11 - 0.25 * 11) / √(11 * 0.25 * 0.75)"),
        Case((_text(g, 9, 12, 0.25, KEY, 0), 12, 0.25, KEY), "no green token at all: z is negative"),
        Case((_text(g, 2, 12, 0.25, KEY, 1), 12, 0.25, KEY), "the shortest text: 2 tokens, 1 scored, and it is green"),
        Case(([2, 7, 5, 2, 7, 9, 2, 7, 1], 12, 0.25, KEY), "the pair 2, 7 comes 3 times: each time counts, repeats "
             "included"),
        Case((_text(g, 10, 16, 0.5, 7, 8), 16, 0.5, 7), "γ = 0.5 and another key: half of the 9 scored tokens "
             "are expected green, 8 are"),
        Case((LINE, VOCAB_SIZE, 0.25, KEY), f"a line of the play in GPT-2 tokens ({len(LINE)}), written without the "
             "watermark: z is small"),
    ]


def _drawn_z_cases(g: torch.Generator) -> list[Case]:
    v = 4 * _randint(g, 3, 4)  # 12 or 16
    key = _key(g)
    length = _randint(g, 8, 14)
    mixed = _randint(g, 2, length - 3)  # neither none nor all of the scored tokens green
    watermarked = _randint(g, 8, 14)
    a, b = _distinct(g, 2, v)
    tail = _distinct(g, 3, v)
    repeated = [a, b, tail[0], a, b, tail[1], a, b, tail[2]]
    half_key = _randint(g, 2, 2**31)
    words = ["ROMEO:", "JULIET:", "But", "soft", "what", "light", "through", "yonder", "window", "breaks", "It",
             "is", "the", "east", "and", "sun"]
    line = encode(" ".join(words[i] for i in torch.randperm(len(words), generator=g)[:_randint(g, 6, 10)].tolist()))
    return [
        Case((_text(g, length, v, 0.25, key, mixed), v, 0.25, key), f"{length} tokens, {length - 1} scored, {mixed} "
             "of them green: the first has no token before it to seed its green list"),
        Case((_text(g, watermarked, v, 0.25, key, watermarked - 1), v, 0.25, key), f"a watermarked text: all "
             f"{watermarked - 1} scored tokens are green"),
        Case((_text(g, _randint(g, 6, 10), v, 0.25, key, 0), v, 0.25, key), "no green token at all: z is negative"),
        Case((_text(g, 2, v, 0.25, key, 1), v, 0.25, key), "the shortest text: 2 tokens, 1 scored, and it is green"),
        Case((repeated, v, 0.25, key), f"the pair {a}, {b} comes 3 times: each time counts, repeats included"),
        Case((_text(g, 10, 16, 0.5, half_key, 7), 16, 0.5, half_key), "γ = 0.5 and another key: half of the 9 "
             "scored tokens are expected green, 7 are"),
        Case((line, VOCAB_SIZE, 0.25, key), f"words of the play in GPT-2 tokens ({len(line)}), written without the "
             "watermark"),
    ]
