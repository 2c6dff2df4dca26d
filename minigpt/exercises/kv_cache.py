"""Checkers for chapter 7, the KV cache (``notebooks/exercises/07_kv_cache_exercises.ipynb``).

Three exercises: greedy decoding with a KV cache (token for token what ``minigpt.generate`` produces),
the memory a cache needs, and the attention mask of new tokens that follow cached ones.

>>> from minigpt.kv_cache import KVCache
>>> result = check_kv_cache_bytes(KVCache.bytes_needed)
✓ kv_cache_bytes: all 5 hidden cases pass
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, check
from minigpt.exercises.models import toy_model, toy_model_case
from minigpt.generate import generate
from minigpt.kv_cache import KVCache
from minigpt.model import GPT, causal_mask


def check_greedy_with_cache(student: Callable) -> CheckResult:
    """Check ``greedy_with_cache(model, prompt_ids, max_new_tokens)`` against ``minigpt.generate``.

    Decode greedily from ``prompt_ids`` (B, T) with a ``KVCache``: feed the whole prompt once, then only
    each new token, at the position that follows the cached ones. Return the prompt and the new tokens,
    (B, T + max_new_tokens). The hidden cases run on a small random model, where wrong positions or a
    wrongly fed cache change the tokens.

    >>> result = check_greedy_with_cache(lambda model, prompt_ids, max_new_tokens: prompt_ids)
    ✗ greedy_with_cache: hidden case 1 of 5 fails (a single new token: only the prompt goes through the model)
      model = a random GPT (...), prompt_ids = tensor([[1, 2, 3, 4]]), max_new_tokens = 1
      wrong shape: expected (1, 5), got (1, 4)
    ...
    """
    model = toy_model(seed=7)
    g = torch.Generator().manual_seed(7)
    settings = [
        (torch.tensor([[1, 2, 3, 4]]), 1, "a single new token: only the prompt goes through the model"),
        (torch.tensor([[1, 2, 3, 4]]), 8, "after the prompt, feed only the new token, at the position after the "
         "cached ones (4, 5, …): not at 0, and not the whole sequence again"),
        (torch.tensor([[5]]), 10, "a one-token prompt"),
        (torch.randint(0, 64, (2, 6), generator=g), 8, "a batch of two prompts: one cache row each"),
        (torch.randint(0, 64, (1, 12), generator=g), 20, "a long run that fills the model's whole context of 32"),
    ]
    cases = [toy_model_case(model, why, prompt_ids=ids, max_new_tokens=n) for ids, n, why in settings]
    return check("greedy_with_cache", student, _greedy_with_cache, cases)


def _greedy_with_cache(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    return generate(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=0).ids


def check_kv_cache_bytes(student: Callable) -> CheckResult:
    """Check ``kv_cache_bytes(n_layer, batch_size, seq_len, n_embd, dtype)`` against ``KVCache.bytes_needed``.

    Every layer keeps a key and a value vector of ``n_embd`` numbers (all heads together) for each of the
    ``seq_len`` positions of each of the ``batch_size`` sequences; each number takes the size of ``dtype``
    in bytes. Return the total as an int.

    >>> def kv_cache_bytes(n_layer, batch_size, seq_len, n_embd, dtype):
    ...     return 2 * n_layer * batch_size * seq_len * n_embd * dtype.itemsize
    >>> result = check_kv_cache_bytes(kv_cache_bytes)
    ✓ kv_cache_bytes: all 5 hidden cases pass
    """
    cases = [
        Case((12, 1, 1024, 768, torch.float32), "GPT-2 small, full context: 2 (keys AND values) × 12 × 1 × 1024 "
             "× 768 × 4 bytes = 72 MiB"),
        Case((12, 1, 1024, 768, torch.bfloat16), "bfloat16 takes 2 bytes per number, half of float32"),
        Case((24, 8, 512, 1024, torch.float16), "a batch of 8 sequences needs 8 times the memory"),
        Case((1, 1, 1, 64, torch.float64), "one layer, one position: a key and a value of 64 numbers of 8 bytes"),
        Case((48, 4, 2048, 1600, torch.float32), "GPT-2 XL: the cache grows past the size of small models"),
    ]
    return check("kv_cache_bytes", student, _kv_cache_bytes, cases)


def _kv_cache_bytes(n_layer: int, batch_size: int, seq_len: int, n_embd: int, dtype: torch.dtype) -> int:
    return KVCache.bytes_needed(n_layer, batch_size, seq_len, n_embd, dtype)


def check_causal_mask_with_cache(student: Callable) -> CheckResult:
    """Check ``causal_mask_with_cache(past_length, new_length)`` against ``minigpt.model.causal_mask``.

    ``past_length`` tokens are in the cache and ``new_length`` new tokens are fed now. Return a boolean
    (new_length, past_length + new_length) tensor, True where new token i (at position past_length + i)
    may attend to key j: itself and everything before it, nothing after.

    >>> def causal_mask_with_cache(past_length, new_length):
    ...     return torch.ones(new_length, past_length + new_length, dtype=torch.bool).tril(diagonal=past_length)
    >>> result = check_causal_mask_with_cache(causal_mask_with_cache)
    ✓ causal_mask_with_cache: all 5 hidden cases pass
    """
    cases = [
        Case((0, 4), "no cache: the usual lower-triangular mask"),
        Case((5, 1), "one new token after 5 cached ones sees all 6 keys, its own included"),
        Case((2, 3), "new token i sits at position 2 + i: it sees keys 0 … 2 + i"),
        Case((0, 1), "a single token with nothing cached sees itself"),
        Case((7, 4), "four new tokens after seven cached ones (a speculative-decoding check)"),
    ]
    return check("causal_mask_with_cache", student, _causal_mask_with_cache, cases)


def _causal_mask_with_cache(past_length: int, new_length: int) -> torch.Tensor:
    return causal_mask(new_length, past_length)[0, 0]  # (1, 1, T, past + T) -> (T, past + T)
