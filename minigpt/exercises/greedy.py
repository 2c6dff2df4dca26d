"""Checkers for chapter 1, greedy decoding (``notebooks/exercises/01_greedy_exercises.ipynb``).

Two exercises: pick the greedy next token of every row of a batch of logits, then write the whole argmax
loop that ``minigpt.generate`` runs when it decodes greedily.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, check, compare_values
from minigpt.exercises.models import TOY_CONFIG, TOY_LOGITS, toy_model, toy_model_case
from minigpt.generate import generate
from minigpt.model import GPT


def check_greedy_next_token(student: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``greedy_next_token(logits)``: the id of the largest logit in each row of the (B, V) ``logits``.

    The answer is a (B,) tensor of integer token ids, one per row, not the largest values themselves.

    >>> result = check_greedy_next_token(lambda logits: logits.argmax(dim=-1))
    ✓ greedy_next_token: all 4 hidden cases pass
    >>> result = check_greedy_next_token(lambda logits: logits.max(dim=-1).values)
    ✗ greedy_next_token: hidden case 1 of 4 fails (the nine-word example: 'forward' (id 3) has the largest logit)
      logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])
      expected integer token ids (torch.long), got a torch.float32 tensor: return indices, not logits
      expected: tensor([3])
      got:      tensor([6.75])
    """
    return check("greedy_next_token", student, _argmax_ids, _next_token_cases(), compare=_compare_ids)


def check_greedy_generate(student: Callable[[GPT, torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Check ``greedy_generate(model, ids, max_new_tokens)``: the argmax loop, without a KV cache.

    ``ids`` is a (B, T) batch of prompts; the answer is the (B, T + max_new_tokens) ids, prompt first. The
    hidden cases run on a small random GPT (``models.toy_model``), where reading the wrong position or
    feeding back the wrong sequence changes the tokens; the expected ids come from ``minigpt.generate``.

    >>> def library(model, ids, max_new_tokens):
    ...     return generate(model, ids, max_new_tokens=max_new_tokens, temperature=0).ids
    >>> result = check_greedy_generate(library)
    ✓ greedy_generate: all 4 hidden cases pass
    """
    return check("greedy_generate", student, _library_greedy, _generate_cases(), compare=_compare_ids)


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
