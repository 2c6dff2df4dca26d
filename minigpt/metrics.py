"""Measuring decoded text: how repetitive it is, how varied, and how likely the model finds it.

Chapter 11 compares decoding methods with three numbers per continuation:

- ``repeated_ngram_rate``: the share of its n-grams that repeat an earlier one (Welleck et al.'s seq-rep-n);
  degenerate loops ("I will, I will, I will") push it up;
- ``distinct_n``: the share of its n-grams that are different (Li et al.'s distinct-n, per continuation);
- ``mean_logprob``: the model's mean log-probability of the continuation given its prompt, in nats per
  token; greedy and beam search push it up, and human text is not at the top (Holtzman et al. 2020).

Over the same n, ``repeated_ngram_rate`` is ``1 - distinct_n``: the chapter reads repetition at n = 4
(loops of whole phrases) and variety at n = 2 (word pairs). The first two count token ids, so they need
no model and are exact.

Measurements (timings, sampled statistics) are compared with their spread: ``spread`` gives the mean and
its standard error, ``separated`` says whether two of them may be told apart, and ``interleaved_times``
times several methods in turns (``in_turns``, the one loop behind every timing in minigpt).

>>> tokens = [1, 2, 3, 1, 2, 3, 1, 2]
>>> distinct_n(tokens, 2), repeated_ngram_rate(tokens, 4)
(0.42857142857142855, 0.4)
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from minigpt.checks import check_int
from minigpt.generate import eval_mode
from minigpt.model import GPT

Tokens = Sequence[int] | torch.Tensor  # one sequence of token ids
K = TypeVar("K", bound=Hashable)  # what names a run: a method's name, or a (shape, kernel) pair
T = TypeVar("T")


def _ngrams(name: str, tokens: Tokens, n: int) -> list[tuple[int, ...]]:
    """Every n-gram of ``tokens`` in order, after checking both arguments."""
    check_int("n", n, 1)
    ids = _as_ids(name, tokens)
    if len(ids) < n:
        raise ValueError(f"{name} must hold at least n={n} tokens (one n-gram), got {len(ids)}")
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def _as_ids(name: str, tokens: Tokens) -> list[int]:
    if isinstance(tokens, torch.Tensor):
        if tokens.ndim != 1 or tokens.is_floating_point() or tokens.is_complex():
            raise TypeError(f"{name} must be a 1-D integer tensor or a list of ints, got a tensor of shape "
                            f"{tuple(tokens.shape)} and dtype {tokens.dtype}")
        return tokens.tolist()
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise TypeError(f"{name} must be a 1-D integer tensor or a list of ints, got {tokens!r}")
    return list(tokens)


def distinct_n(tokens: Tokens, n: int = 2) -> float:
    """The number of different n-grams in ``tokens`` divided by the number of n-grams (1.0: no n-gram repeats).

    >>> distinct_n([5, 6, 5, 6, 7], n=2)  # (5, 6) (6, 5) (5, 6) (6, 7): 3 different of 4
    0.75
    >>> distinct_n([5, 6, 5, 6, 7], n=1)  # 3 different tokens of 5
    0.6
    """
    grams = _ngrams("tokens", tokens, n)
    return len(set(grams)) / len(grams)


def repeated_ngram_rate(tokens: Tokens, n: int = 4) -> float:
    """The share of the n-grams in ``tokens`` that repeat an n-gram seen earlier in it (0.0: none repeats).

    This is ``1 - distinct_n(tokens, n)``: every n-gram after the first copy of its kind is a repeat.

    >>> repeated_ngram_rate([1, 2, 3, 4, 1, 2, 3, 4], n=4)  # 5 4-grams; (1, 2, 3, 4) comes again once
    0.2
    >>> repeated_ngram_rate([7, 7, 7, 7, 7], n=1)
    0.8
    """
    grams = _ngrams("tokens", tokens, n)
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


@torch.inference_mode()
def mean_logprob(model: GPT, prompt_ids: Tokens, continuation_ids: Tokens) -> float:
    """The model's mean log-probability (nats per token) of ``continuation_ids`` right after ``prompt_ids``.

    One forward pass over prompt + continuation; position t's log-softmax scores token t + 1, so the
    continuation's tokens are scored by the positions just before them. The raw distribution is used (no
    temperature, no filter): it measures how likely the *model* finds the text, whatever method wrote it.
    A model in train mode is scored in eval mode (dropout off) and gets its mode back.

    >>> from minigpt.model import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, n_embd=4))
    >>> torch.nn.init.zeros_(model.lm_head.weight)  # doctest: +ELLIPSIS
    Parameter containing:...
    >>> round(mean_logprob(model, [1, 2], [3, 4, 5]), 6)  # all 8 tokens equally likely: log(1/8)
    -2.079442
    """
    prompt, continuation = _as_ids("prompt_ids", prompt_ids), _as_ids("continuation_ids", continuation_ids)
    if not prompt or not continuation:
        raise ValueError(f"prompt_ids and continuation_ids must each hold at least one token, got "
                         f"{len(prompt)} and {len(continuation)}")
    total = len(prompt) + len(continuation)
    if total > model.config.block_size:
        raise ValueError(f"prompt_ids + continuation_ids must fit the model's context of "
                         f"{model.config.block_size} tokens, got {total}")
    vocab = model.config.vocab_size
    if not all(0 <= t < vocab for t in prompt + continuation):
        raise ValueError(f"prompt_ids and continuation_ids must be token ids in [0, {vocab})")
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + continuation], device=device)  # (1, T)
    with eval_mode(model):
        logits = model(ids)[0, len(prompt) - 1 : -1].float()  # (len(continuation), V): each predicts the next
    log_probs = logits.log_softmax(dim=-1)
    chosen = log_probs.gather(-1, ids[0, len(prompt) :, None])  # (len(continuation), 1)
    return chosen.mean().item()


# --- Measurements with their spread --------------------------------------------------------------------------
# A timing or a sampled statistic is a measurement: repeat it, show its spread, and name a winner only when
# the intervals separate (chapters 7, 8, 11 and 12 compare methods this way).


@dataclass(frozen=True)
class Spread:
    """The mean of repeated measurements, its standard error, and the smallest and largest reading.

    >>> s = spread([1.0, 2.0, 3.0])
    >>> s.mean, round(s.stderr, 6), s.low, s.high, s.n
    (2.0, 0.57735, 1.0, 3.0, 3)
    >>> str(s)
    '2 ± 0.577'
    """

    mean: float
    stderr: float  # sample standard deviation / sqrt(n)
    low: float
    high: float
    n: int

    def interval(self, z: float = 2.0) -> tuple[float, float]:
        """mean ± z standard errors: about 95% for z = 2 when the readings are roughly normal."""
        return self.mean - z * self.stderr, self.mean + z * self.stderr

    def __str__(self) -> str:
        return f"{self.mean:.3g} ± {self.stderr:.3g}"


def spread(values: Sequence[float]) -> Spread:
    """Summarise repeated measurements of one quantity (at least two, so that their spread shows).

    >>> spread([4.0, 4.0]).stderr
    0.0
    """
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"values must hold at least 2 measurements to show a spread, got {len(values)}")
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Spread(mean, math.sqrt(variance / n), min(values), max(values), n)


def separated(a: Spread, b: Spread, z: float = 2.0) -> bool:
    """True when the intervals mean ± z·stderr of ``a`` and ``b`` do not overlap: a winner may be named.

    >>> separated(spread([1.0, 1.1, 0.9]), spread([2.0, 2.1, 1.9]))
    True
    >>> separated(spread([1.0, 1.5, 0.5]), spread([1.2, 1.7, 0.7]))
    False
    """
    (a_low, a_high), (b_low, b_high) = a.interval(z), b.interval(z)
    return a_high < b_low or b_high < a_low


def in_turns(runs: dict[K, Callable[[], T]], repeats: int, *, warm_up: bool = True,
             between: Callable[[], object] | None = None) -> dict[K, list[T]]:
    """Call each of ``runs`` ``repeats`` times, in turns (a, b, c, a, b, c, ...); what each call returned, by run.

    The one loop behind every timing in minigpt (``interleaved_times`` here, the fast path's tuner, the
    bench's ``take_turns``). Taking turns spreads a slow moment of the machine (another program, a frequency
    change) over all the runs instead of charging it to whichever one ran then. With ``warm_up`` each run is
    called once first, its result dropped (caches, lazy initialisation); ``between()``, when given, runs
    before every turn (something measured right beside the runs, so that it sees the same spells).

    >>> order = []
    >>> in_turns({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 2, warm_up=False)
    {'a': [None, None], 'b': [None, None]}
    >>> order
    ['a', 'b', 'a', 'b']
    """
    check_int("repeats", repeats, 1)
    if warm_up:
        for run in runs.values():
            run()
    results: dict[K, list[T]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if between is not None:
                between()
            results[name].append(run())
    return results


def seconds(run: Callable[[], object]) -> float:
    """How long one call of ``run`` took, in seconds (``time.perf_counter``).

    >>> seconds(lambda: None) >= 0
    True
    """
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def interleaved_times(runs: dict[K, Callable[[], object]], repeats: int = 5) -> dict[K, Spread]:
    """Time each of ``runs`` ``repeats`` times, in turns (``in_turns``), and return seconds per run.

    Each run is called once first, untimed (warm-up: caches, lazy initialisation).

    >>> times = interleaved_times({"sum": lambda: sum(range(1000)), "max": lambda: max(range(1000))}, 3)
    >>> sorted(times), times["sum"].n
    (['max', 'sum'], 3)
    """
    check_int("repeats", repeats, 2)
    timers = {name: functools.partial(seconds, run) for name, run in runs.items()}
    return {name: spread(values) for name, values in in_turns(timers, repeats).items()}
