"""Answers to the exercises of chapter 11 (measuring decoders) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

import math
from collections import Counter
from functools import partial

import torch

from minigpt import metrics
from minigpt.exercises import which_method as ch11


def repeated_ngram_rate(tokens, n, *, first_copy_repeats=False, kinds=False, per_token=False, windows=0,
                        fixed_n=None, distinct=False, share=True):
    n = fixed_n or n
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1 + windows)]
    counts = Counter(grams)
    if first_copy_repeats:  # every copy of an n-gram that comes more than once
        repeats = sum(counts[gram] > 1 for gram in grams)
    elif kinds:  # the n-grams that come back, each counted once
        repeats = sum(count > 1 for count in counts.values())
    else:
        repeats = len(grams) - len(counts)
    if distinct:  # distinct-n, the other side of the same count
        return len(counts) / len(grams)
    if not share:
        return repeats
    return repeats / (len(tokens) if per_token else len(grams))


def rate_in_a_loop(tokens, n):
    """A different correct way: walk the n-grams and remember the ones seen."""
    seen, repeats = set(), 0
    for start in range(len(tokens) - n + 1):
        gram = tuple(tokens[start : start + n])
        repeats += gram in seen
        seen.add(gram)
    return repeats / (len(tokens) - n + 1)


def paired_difference(scores_a, scores_b, *, paired=True, divide_by_n=False, stderr=True, sign=1, absolute=False):
    if not paired:  # two independent means: their standard errors add in squares
        a, b = metrics.spread(scores_a), metrics.spread(scores_b)
        return a.mean - b.mean, math.sqrt(a.stderr**2 + b.stderr**2)
    differences = [sign * (a - b) for a, b in zip(scores_a, scores_b)]
    if absolute:
        differences = [abs(d) for d in differences]
    n = len(differences)
    mean = sum(differences) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n if divide_by_n else n - 1))
    return mean, std / math.sqrt(n) if stderr else std


def paired_difference_in_float32(scores_a, scores_b):
    """A different correct way: torch in float32 (std divides by n - 1 by default)."""
    differences = torch.tensor(scores_a) - torch.tensor(scores_b)
    return differences.mean().item(), (differences.std() / len(differences) ** 0.5).item()


CORRECT = [
    (ch11.check_repeated_ngram_rate, repeated_ngram_rate),
    (ch11.check_repeated_ngram_rate, rate_in_a_loop),
    (ch11.check_repeated_ngram_rate, metrics.repeated_ngram_rate),
    (ch11.check_repeated_ngram_rate, lambda tokens, n: 1 - metrics.distinct_n(tokens, n)),
    (ch11.check_paired_difference, paired_difference),
    (ch11.check_paired_difference, paired_difference_in_float32),
    (ch11.check_paired_difference, ch11.paired_difference),
]

# (checker, a typical wrong answer, text its message must contain)
WRONG = {
    "repeated n-gram rate counts the first copy too": (
        ch11.check_repeated_ngram_rate, partial(repeated_ngram_rate, first_copy_repeats=True), "a way out; 2 of 7 4-grams repeat"),
    "repeated n-gram rate counts each repeated n-gram once": (
        ch11.check_repeated_ngram_rate, partial(repeated_ngram_rate, kinds=True),
        "every copy after the first repeats, 4 of 5"),
    "repeated n-gram rate divides by the number of tokens": (
        ch11.check_repeated_ngram_rate, partial(repeated_ngram_rate, per_token=True), "a way out; 2 of 7 4-grams repeat"),
    "repeated n-gram rate misses the last n-gram": (
        ch11.check_repeated_ngram_rate, partial(repeated_ngram_rate, windows=-1), "a way out; 2 of 7 4-grams repeat"),
    "repeated n-gram rate always uses 4-grams": (
        ch11.check_repeated_ngram_rate, partial(repeated_ngram_rate, fixed_n=4), "one token five times"),
    "repeated n-gram rate returns distinct-n": (
        ch11.check_repeated_ngram_rate, partial(repeated_ngram_rate, distinct=True), "expected: 0.2857"),
    "repeated n-gram rate returns a count": (
        ch11.check_repeated_ngram_rate, partial(repeated_ngram_rate, share=False), "expected: 0.2857"),
    "paired difference adds the two standard errors (unpaired)": (
        ch11.check_paired_difference, partial(paired_difference, paired=False),
        "their standard errors do not add"),
    "paired difference divides the variance by n": (
        ch11.check_paired_difference, partial(paired_difference, divide_by_n=True), "item 1: wrong value"),
    "paired difference returns the standard deviation": (
        ch11.check_paired_difference, partial(paired_difference, stderr=False), "item 1: wrong value"),
    "paired difference subtracts a from b": (
        ch11.check_paired_difference, partial(paired_difference, sign=-1), "item 0: wrong value"),
    "paired difference averages |a - b|": (
        ch11.check_paired_difference, partial(paired_difference, absolute=True), "item 0: wrong value"),
}
