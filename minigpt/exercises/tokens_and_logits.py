"""Checkers for chapter 0, tokens and logits (``notebooks/exercises/00_tokens_and_logits_exercises.ipynb``).

Two exercises on the model's (B, T, V) output: the next-token logits of every row, read at the last
position, then the log-probability the model gives a continuation, where position t's logits score the
token at t + 1. Both run on a small random GPT (``small_model``: the toy model of ``models``, 16 tokens) and
are compared with the library.

>>> result = check_next_token_logits(lambda model, ids: model(ids)[:, -1])
✓ next_token_logits: all 4 hidden cases pass
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_values, show
from minigpt.exercises.models import TOY_CONFIG, toy_model
from minigpt.model import GPT

# The student's forward pass may be batched differently from the library's (row by row, or last_only=True):
# float32 sums in another order differ by ~1e-6 on logits of size ~5 (chapter 9), far below any real mistake.
ATOL = 1e-4


# The chapters' toy GPT with its vocabulary cut to 16 tokens, so that a row of logits fits in a failure message
SMALL_CONFIG = replace(TOY_CONFIG, vocab_size=16)
SMALL_MODEL = "a random GPT (vocabulary of 16 tokens, 2 layers, 2 heads, width 32, context of 32 tokens)"


def small_model(seed: int = 0) -> GPT:
    """``models.toy_model(seed)`` keeping only its first 16 tokens: the same weights, a 16-token vocabulary.

    >>> small_model(1)(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 16])
    """
    toy = toy_model(seed)
    with torch.random.fork_rng(devices=[]):  # GPT's own init draws from the global generator: give it back
        model = GPT(SMALL_CONFIG).eval()
    vocabulary_rows = {"transformer.wte.weight", "lm_head.weight"}  # tied: one (V, C) matrix under two names
    model.load_state_dict({name: value[: SMALL_CONFIG.vocab_size] if name in vocabulary_rows else value
                           for name, value in toy.state_dict().items()})
    return model


def check_next_token_logits(
    student: Callable[[GPT, torch.Tensor], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``next_token_logits(model, ids)``: the (B, V) logits of the token after each row of the (B, T) ``ids``.

    The model returns (B, T, V) logits, one row of V scores per position; the next token after the whole
    prompt is scored at the last position. A ``seed`` checks on cases drawn from it instead.

    >>> result = check_next_token_logits(lambda model, ids: model(ids)[:, 0])
    ✗ next_token_logits: hidden case 1 of 4 fails (one prompt of 5 tokens: the logits at its last position, ...)
      model = a random GPT (vocabulary of 16 tokens, ...), ids = tensor([[...]])
      wrong value at position [0, 0]
      expected: tensor([[...]])
      got:      tensor([[...]])
    """
    cases = cases_for(seed, _next_token_cases, _drawn_next_token_cases)
    return check("next_token_logits", student, _next_token_logits, cases, atol=ATOL, compare=_compare_logits)


def check_continuation_log_prob(
    student: Callable[[GPT, torch.Tensor, torch.Tensor], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``continuation_log_prob(model, ids, continuation)``: log P(continuation | ids), one number per row.

    ``ids`` is a (B, T) batch of prompts and ``continuation`` (B, N) the tokens that follow each one; the
    answer is a (B,) tensor, the sum over the N tokens of the log-probability the model gives each one after
    the prompt and the continuation's tokens before it. A ``seed`` checks on cases drawn from it instead.

    >>> def library(model, ids, continuation):
    ...     logits = model(torch.cat([ids, continuation], dim=1))[:, ids.size(1) - 1 : -1]
    ...     return torch.log_softmax(logits, dim=-1).gather(-1, continuation.unsqueeze(-1)).sum(dim=(1, 2))
    >>> result = check_continuation_log_prob(library)
    ✓ continuation_log_prob: all 5 hidden cases pass
    """
    cases = cases_for(seed, _log_prob_cases, _drawn_log_prob_cases)
    return check("continuation_log_prob", student, _continuation_log_prob, cases, atol=ATOL,
                 compare=_compare_log_probs)


def _next_token_logits(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, last_only=True)[:, -1]  # (B, V): the head runs on the last position only


def _continuation_log_prob(model: GPT, ids: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.cat([ids, continuation], dim=1))  # (B, T + N, V)
    # position t scores the token at t + 1: the N positions from the prompt's last to the one before the end
    log_probs = torch.log_softmax(logits[:, ids.size(1) - 1 : -1], dim=-1)  # (B, N, V)
    return log_probs.gather(-1, continuation.unsqueeze(-1)).squeeze(-1).sum(dim=-1)  # (B,)


def _compare_logits(expected: torch.Tensor, got: object, atol: float) -> str | None:
    """Name the two usual slips, every position's logits and probabilities, before comparing the values."""
    if isinstance(got, torch.Tensor) and got.dim() == 3 and got.shape[::2] == expected.shape:
        return (f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}: these are the logits of "
                "every position (B, T, V); keep only the last position's, (B, V)")
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and _looks_like_probabilities(got):
        return "every row sums to 1: these look like probabilities; return the logits, before any softmax"
    return compare_values(expected, got, atol)


def _compare_log_probs(expected: torch.Tensor, got: object, atol: float) -> str | None:
    """Name the usual slip, one log-probability per token instead of their sum, before comparing the values."""
    if isinstance(got, torch.Tensor) and got.dim() == 2 and got.size(0) == expected.size(0):
        return (f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}: one number per row, the "
                "sum of the tokens' log-probabilities (a product of probabilities is a sum of logs)")
    return compare_values(expected, got, atol)


def _looks_like_probabilities(x: torch.Tensor) -> bool:
    return x.is_floating_point() and bool((x >= 0).all()) and bool(((x.sum(dim=-1) - 1).abs() < 1e-4).all())


def _next_token_cases() -> list[Case]:
    model = small_model(seed=3)
    g = torch.Generator().manual_seed(3)
    settings = [
        ((1, 5), "one prompt of 5 tokens: the logits at its last position, one row of V = 16 scores"),
        ((3, 6), "a batch of three prompts: each row's logits at its own last position"),
        ((1, 1), "a prompt of one token: its only position is the last"),
        ((4, 4), "a batch of four prompts of four tokens (B = T): the positions are dimension 1, not 0"),
    ]
    return [_model_case(model, why, ids=_random_ids(g, shape)) for shape, why in settings]


def _log_prob_cases() -> list[Case]:
    model = small_model(seed=3)
    g = torch.Generator().manual_seed(4)
    settings = [
        ((1, 4), (1, 1), "one token: its log-probability is read at the prompt's last position"),
        ((1, 4), (1, 3), "three tokens: each is scored at the position before it, and the log-probabilities add up"),
        ((2, 5), (2, 3), "a batch of two prompts: one total per row"),
        ((1, 1), (1, 4), "a prompt of one token: the first new token is scored at position 0"),
    ]
    cases = [_model_case(model, why, ids=_random_ids(g, prompt), continuation=_random_ids(g, new))
             for prompt, new, why in settings]
    repeated = torch.tensor([[7, 7, 7]])
    cases.append(_model_case(model, "the same token three times: each time after a longer context, so each "
                                "log-probability is read at its own position", ids=_random_ids(g, (1, 3)),
                                continuation=repeated))
    return cases


def _model_case(model: GPT, why: str, **args: object) -> Case:
    """A case whose first argument is the small ``model``, described in words rather than printed."""
    shown = ", ".join([f"model = {SMALL_MODEL}", *(f"{name} = {show(value)}" for name, value in args.items())])
    return Case((model, *args.values()), why, shown=shown)


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _random_ids(g: torch.Generator, shape: tuple[int, int]) -> torch.Tensor:
    """(B, T) random token ids of the toy vocabulary, rows all different (a batch bug then changes the answer)."""
    while True:
        ids = torch.randint(0, SMALL_CONFIG.vocab_size, shape, generator=g)
        if ids.unique(dim=0).size(0) == ids.size(0):
            return ids


def _drawn_next_token_cases(g: torch.Generator) -> list[Case]:
    model = small_model(seed=_randint(g, 0, 10_000))
    b, t = _randint(g, 2, 5), _randint(g, 2, 12)
    t = t + (t == b)  # B = T has its own case
    square = _randint(g, 2, 6)
    settings = [
        ((1, t), f"one prompt of {t} tokens: the logits at its last position, one row of V = 16 scores"),
        ((b, t), f"a batch of {b} prompts of {t} tokens: each row's logits at its own last position"),
        ((1, 1), "a prompt of one token: its only position is the last"),
        ((square, square), f"a batch of {square} prompts of {square} tokens (B = T): the positions are dimension 1"),
    ]
    return [_model_case(model, why, ids=_random_ids(g, shape)) for shape, why in settings]


def _drawn_log_prob_cases(g: torch.Generator) -> list[Case]:
    model = small_model(seed=_randint(g, 0, 10_000))
    t, n, b = _randint(g, 2, 10), _randint(g, 2, 6), _randint(g, 2, 4)
    token = _randint(g, 0, SMALL_CONFIG.vocab_size - 1)
    settings = [
        ((1, t), (1, 1), "one token: its log-probability is read at the prompt's last position"),
        ((1, t), (1, n), f"{n} tokens: each is scored at the position before it, and the log-probabilities add up"),
        ((b, t), (b, n), f"a batch of {b} prompts: one total per row"),
        ((1, 1), (1, n), "a prompt of one token: the first new token is scored at position 0"),
    ]
    cases = [_model_case(model, why, ids=_random_ids(g, prompt), continuation=_random_ids(g, new))
             for prompt, new, why in settings]
    cases.append(_model_case(model, f"the same token {n} times: each time after a longer context, so each "
                                "log-probability is read at its own position", ids=_random_ids(g, (1, t)),
                                continuation=torch.full((1, n), token)))
    return cases
