"""Checkers for chapter 1, greedy decoding (``notebooks/exercises/01_greedy_exercises.ipynb``).

Two exercises: pick the greedy next token of every row of a batch of logits, then write the whole argmax
loop that ``minigpt.generate`` runs when it decodes greedily. Each checker runs the visible cases, or with
a ``seed`` cases of the same kinds drawn from it (``minigpt.exercises.grading``).

>>> result = check_greedy_next_token(lambda logits: logits.argmax(dim=-1), seed=3)
✓ greedy_next_token: all 5 drawn cases pass
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_values
from minigpt.exercises.models import TOY_CONFIG, TOY_LOGITS, toy_model, toy_model_case
from minigpt.generate import generate
from minigpt.model import GPT

# The smallest gap between the largest and the second largest logit at every step of a drawn greedy case. A
# loop with or without a KV cache, batched or not, computes the logits in a different order of float
# operations (differences near 1e-6); a wider gap means each of them picks the same token on any machine.
MARGIN = 1e-3


def check_greedy_next_token(
    student: Callable[[torch.Tensor], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``greedy_next_token(logits)``: the id of the largest logit in each row of the (B, V) ``logits``.

    The answer is a (B,) tensor of integer token ids, one per row, not the largest values themselves. A
    ``seed`` checks on cases drawn from it instead.

    >>> result = check_greedy_next_token(lambda logits: logits.argmax(dim=-1))
    ✓ greedy_next_token: all 4 hidden cases pass
    >>> result = check_greedy_next_token(lambda logits: logits.max(dim=-1).values)
    ✗ greedy_next_token: hidden case 1 of 4 fails (the nine-word example: 'forward' (id 3) has the largest logit)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])
      expected integer token ids (torch.long), got a torch.float32 tensor: return indices, not logits
      expected: tensor([3])
      got:      tensor([6.75])
    """
    cases = cases_for(seed, _next_token_cases, _drawn_next_token_cases)
    return check("greedy_next_token", student, _argmax_ids, cases, compare=_compare_ids)


def check_greedy_generate(
    student: Callable[[GPT, torch.Tensor, int], torch.Tensor], *, seed: int | None = None
) -> CheckResult:
    """Check ``greedy_generate(model, ids, max_new_tokens)``: the argmax loop, without a KV cache.

    ``ids`` is a (B, T) batch of prompts; the answer is the (B, T + max_new_tokens) ids, prompt first. The
    hidden cases run on a small random GPT (``models.toy_model``), where reading the wrong position or
    feeding back the wrong sequence changes the tokens; the expected ids come from ``minigpt.generate``. A
    ``seed`` draws the model, the prompts and their lengths instead.

    >>> def library(model, ids, max_new_tokens):
    ...     return generate(model, ids, max_new_tokens=max_new_tokens, temperature=0).ids
    >>> result = check_greedy_generate(library)
    ✓ greedy_generate: all 4 hidden cases pass
    >>> result = check_greedy_generate(library, seed=3)
    ✓ greedy_generate: all 5 drawn cases pass
    """
    cases = cases_for(seed, _generate_cases, _drawn_generate_cases)
    return check("greedy_generate", student, _library_greedy, cases, compare=_compare_ids)


def _argmax_ids(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)  # the rule generate's greedy step applies to its (B, V) logits


def _library_greedy(model: GPT, ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    # no cache, like the student's loop: both recompute the whole sequence, so their logits agree exactly
    return generate(model, ids, max_new_tokens=max_new_tokens, temperature=0, use_cache=False).ids


def _compare_ids(expected: torch.Tensor, got: object, atol: float) -> str | None:
    """Token ids must be an integer tensor: a float tensor is usually the largest logit instead of its index."""
    if isinstance(got, torch.Tensor) and got.is_floating_point():
        return f"expected integer token ids (torch.long), got a {got.dtype} tensor: return indices, not logits"
    return compare_values(expected, got, atol)


def _next_token_cases() -> list[Case]:
    batch = torch.tensor([[0.1, 2.0, -1.0, 0.5, 0.0], [3.0, 1.0, 2.0, 0.0, -3.0], [0.0, 0.3, 0.2, 0.1, 1.5]])
    masked = torch.tensor([[float("-inf"), -2.5, -0.7, float("-inf"), -1.2, -0.9]])
    seeded = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    return [
        Case((TOY_LOGITS,), "the nine-word example: 'forward' (id 3) has the largest logit"),
        Case((batch,), "a batch of three rows: one id per row, the argmax along the vocabulary (last) dimension"),
        Case((masked,), "negative logits and -inf (removed tokens): the largest is still the one to pick"),
        Case((seeded,), "random logits, 4 rows of 10"),
    ]


def _generate_cases() -> list[Case]:
    model = toy_model(seed=1)
    prompt = torch.tensor([[5, 17, 42, 8]])
    two_prompts = torch.randint(0, TOY_CONFIG.vocab_size, (2, 3), generator=torch.Generator().manual_seed(2))
    settings = [
        (prompt, 1, "one new token: the argmax of the logits at the last position"),
        (prompt, 8, "eight new tokens: each one is appended and the longer sequence fed back in"),
        (two_prompts, 5, "a batch of two prompts: each row continues with its own argmax"),
        (prompt, 0, "max_new_tokens = 0: the prompt comes back unchanged"),
    ]
    return [toy_model_case(model, why, ids=ids, max_new_tokens=n) for ids, n, why in settings]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _random_logits(g: torch.Generator, rows: int, vocabulary: int) -> torch.Tensor:
    """(rows, vocabulary) logits rounded to 2 decimals, no two equal in a row (a tie would make either id right)."""
    while True:
        logits = (3 * torch.randn(rows, vocabulary, generator=g)).round(decimals=2)
        if all(len(set(row.tolist())) == vocabulary for row in logits):
            return logits


def _drawn_next_token_cases(g: torch.Generator) -> list[Case]:
    v = _randint(g, 6, 12)
    rows = _randint(g, 3, 5)
    masked = _random_logits(g, 1, v)
    masked = masked - masked.max() - _randint(g, 1, 5)  # every logit -1 or below
    masked[0, torch.randperm(v, generator=g)[: v // 2]] = float("-inf")  # half the tokens removed by a filter
    last = _random_logits(g, 1, v)
    last[0, -1] = last.max() + 0.5  # the largest logit in the last place of the row
    return [
        Case((_random_logits(g, 1, v),), f"random logits, one row of {v}"),
        Case((_random_logits(g, rows, v + rows),), f"a batch of {rows} rows: one id per row, the argmax along "
             "the vocabulary (last) dimension"),
        Case((masked,), "negative logits and -inf (removed tokens): the largest is still the one to pick"),
        Case((last,), f"the largest logit is the last one, id {v - 1}"),
        Case((_random_logits(g, 2, v) + 20,), "a batch of two rows of large positive logits"),
    ]


def _greedy_logits(model: GPT, ids: torch.Tensor, max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The library's greedy ids (B, T + n) and the logits (B, n, V) each new token was the argmax of."""
    out = _library_greedy(model, ids, max_new_tokens)
    with torch.no_grad():  # a causal model: one pass over the whole output gives every step's logits
        logits = model(out)[:, ids.size(1) - 1 : out.size(1) - 1]
    return out, logits


def _clear_margins(logits: torch.Tensor) -> bool:
    top2 = logits.topk(2, dim=-1).values
    return bool((top2[..., 0] - top2[..., 1] >= MARGIN).all())


def _draw_prompt(
    g: torch.Generator, model: GPT, shape: tuple[int, int], max_new_tokens: int, wanted: Callable
) -> torch.Tensor:
    """Random prompt ids of ``shape`` whose greedy continuation has a clear argmax at every step and is ``wanted``.

    ``wanted(out, logits, prompt_logits)`` says whether the case shows what it is meant to show (a bug that
    would go unnoticed on these ids must not).
    """
    while True:
        ids = torch.randint(0, TOY_CONFIG.vocab_size, shape, generator=g)
        out, logits = _greedy_logits(model, ids, max_new_tokens)
        with torch.no_grad():
            prompt_logits = model(ids)
        if _clear_margins(logits) and wanted(out, logits, prompt_logits):
            return ids


def _drawn_generate_cases(g: torch.Generator) -> list[Case]:
    model = toy_model(seed=_randint(g, 0, 10_000))
    length, n, rows = _randint(g, 5, 8), _randint(g, 5, 9), _randint(g, 2, 3)

    def last_position_only(out, logits, prompt_logits):  # no earlier position picks the same token
        picks = prompt_logits[0].argmax(dim=-1)
        return _clear_margins(prompt_logits) and bool((picks[:-1] != picks[-1]).all())

    def keeps_changing(out, logits, prompt_logits):  # a loop that feeds the prompt alone repeats one token
        return bool((out[0, length:] != out[0, length]).any())

    def rows_differ(out, logits, prompt_logits):  # each row's own first token, not row 0's
        return bool((out[1:, length] != out[0, length]).all())

    settings = [
        ((1, length), 1, last_position_only, "one new token: the argmax of the logits at the last position "
         "(every earlier position would pick another token)"),
        ((1, length), n, keeps_changing, f"{n} new tokens: each one is appended and the longer sequence fed "
         "back in"),
        ((rows, length), n, rows_differ, f"a batch of {rows} prompts: each row continues with its own argmax"),
        ((1, 1), n, lambda *_: True, "a one-token prompt"),
        ((1, length), 0, lambda *_: True, "max_new_tokens = 0: the prompt comes back unchanged"),
    ]
    return [toy_model_case(model, why, ids=_draw_prompt(g, model, shape, steps, wanted), max_new_tokens=steps)
            for shape, steps, wanted, why in settings]
