"""Checkers for chapter 7, the KV cache (``notebooks/exercises/07_kv_cache_exercises.ipynb``).

Four exercises: greedy decoding with a KV cache (token for token what ``minigpt.generate`` produces),
the memory a cache needs, the attention mask of new tokens that follow cached ones, and a whole sampler
(repetition penalty, temperature, top-k, top-p and min-p, with a cache) that draws what ``minigpt.generate``
draws from the same generator.

>>> from minigpt.kv_cache import KVCache
>>> result = check_kv_cache_bytes(KVCache.bytes_needed)
✓ kv_cache_bytes: all 5 hidden cases pass
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_values, show
from minigpt.exercises.models import toy_model, toy_model_case
from minigpt.generate import generate
from minigpt.kv_cache import KVCache
from minigpt.logits import (
    LogitsSettings,
    apply_temperature,
    min_p_filter,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from minigpt.model import GPT, causal_mask

# A drawn greedy step must beat the runner-up by this much: a correct loop written another way (no cache, a
# batch split in rows) computes logits that differ in the last bits, which must not change an argmax
MARGIN = 1e-3
CONTEXT = 32  # the toy model's context (block_size)


def check_greedy_with_cache(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``greedy_with_cache(model, prompt_ids, max_new_tokens)`` against ``minigpt.generate``.

    Decode greedily from ``prompt_ids`` (B, T) with a ``KVCache``: feed the whole prompt once, then only
    each new token, at the position that follows the cached ones. Return the prompt and the new tokens,
    (B, T + max_new_tokens). The hidden cases run on a small random model, where wrong positions or a
    wrongly fed cache change the tokens. A ``seed`` draws the model and the prompts instead.

    >>> result = check_greedy_with_cache(lambda model, prompt_ids, max_new_tokens: prompt_ids)
    ✗ greedy_with_cache: hidden case 1 of 5 fails (a single new token: only the prompt goes through the model)
      model = a random GPT (...), prompt_ids = tensor([[1, 2, 3, 4]]), max_new_tokens = 1
      wrong shape: expected (1, 5), got (1, 4)
    ...
    """
    return check("greedy_with_cache", student, _greedy_with_cache, cases_for(seed, _greedy_cases, _drawn_greedy_cases))


def _greedy_with_cache(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    return generate(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=0).ids


def _greedy_cases() -> list[Case]:
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
    return [toy_model_case(model, why, prompt_ids=ids, max_new_tokens=n) for ids, n, why in settings]


def _drawn_greedy_cases(g: torch.Generator) -> list[Case]:
    model = toy_model(seed=_randint(g, 0, 2**31))
    length = _randint(g, 3, 6)
    new = _randint(g, 6, 10)
    rows = _randint(g, 2, 3)
    long = _randint(g, 8, 14)
    settings = [
        (1, _randint(g, 2, 6), 1, "a single new token: only the prompt goes through the model"),
        (1, length, new, f"after the prompt, feed only the new token, at the position after the cached ones "
         f"({length}, {length + 1}, …): not at 0, and not the whole sequence again"),
        (1, 1, _randint(g, 6, 12), "a one-token prompt"),
        (rows, _randint(g, 3, 6), new, f"a batch of {rows} prompts: one cache row each"),
        (1, long, CONTEXT - long, f"a long run that fills the model's whole context of {CONTEXT}"),
    ]
    cases = []
    for batch, length, n, why in settings:
        ids = _clear_greedy_prompt(model, g, batch, length, n)
        cases.append(toy_model_case(model, why, prompt_ids=ids, max_new_tokens=n))
    return cases


def _clear_greedy_prompt(model: GPT, g: torch.Generator, batch: int, length: int, new: int) -> torch.Tensor:
    """A (batch, length) prompt whose ``new`` greedy steps each beat the runner-up by ``MARGIN`` (redrawn till then)."""
    while True:
        ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=g)
        out = generate(model, ids, max_new_tokens=new, temperature=0, use_cache=False).ids  # (B, T + new)
        with torch.no_grad():
            logits = model(out[:, :-1])[:, length - 1 :]  # (B, new, V): the logits each new token was chosen from
        best = logits.topk(2, dim=-1).values
        if bool((best[..., 0] - best[..., 1] >= MARGIN).all()):
            return ids


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An int in [low, high], both included, drawn from ``g``."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def check_kv_cache_bytes(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``kv_cache_bytes(n_layer, batch_size, seq_len, n_embd, dtype)`` against ``KVCache.bytes_needed``.

    Every layer keeps a key and a value vector of ``n_embd`` numbers (all heads together) for each of the
    ``seq_len`` positions of each of the ``batch_size`` sequences; each number takes the size of ``dtype``
    in bytes. Return the total as an int. A ``seed`` draws the sizes instead.

    >>> def kv_cache_bytes(n_layer, batch_size, seq_len, n_embd, dtype):
    ...     return 2 * n_layer * batch_size * seq_len * n_embd * dtype.itemsize
    >>> result = check_kv_cache_bytes(kv_cache_bytes)
    ✓ kv_cache_bytes: all 5 hidden cases pass
    """
    return check("kv_cache_bytes", student, _kv_cache_bytes, cases_for(seed, _bytes_cases, _drawn_bytes_cases))


def _kv_cache_bytes(n_layer: int, batch_size: int, seq_len: int, n_embd: int, dtype: torch.dtype) -> int:
    return KVCache.bytes_needed(n_layer, batch_size, seq_len, n_embd, dtype)


def _bytes_cases() -> list[Case]:
    return [
        Case((12, 1, 1024, 768, torch.float32), "GPT-2 small, full context: 2 (keys AND values) × 12 × 1 × 1024 "
             "× 768 × 4 bytes = 72 MiB"),
        Case((12, 1, 1024, 768, torch.bfloat16), "bfloat16 takes 2 bytes per number, half of float32"),
        Case((24, 8, 512, 1024, torch.float16), "a batch of 8 sequences needs 8 times the memory"),
        Case((1, 1, 1, 64, torch.float64), "one layer, one position: a key and a value of 64 numbers of 8 bytes"),
        Case((48, 4, 2048, 1600, torch.float32), "GPT-2 XL: the cache grows past the size of small models"),
    ]


def _drawn_bytes_cases(g: torch.Generator) -> list[Case]:
    n_layer, seq_len, n_embd = _randint(g, 2, 36), 2 ** _randint(g, 6, 12), 64 * _randint(g, 2, 24)
    batch = _randint(g, 2, 16)
    half = (torch.bfloat16, torch.float16)[_randint(g, 0, 1)]
    return [
        Case((n_layer, 1, seq_len, n_embd, torch.float32), f"2 (keys AND values) × {n_layer} layers × 1 × {seq_len} "
             f"× {n_embd} × 4 bytes"),
        Case((n_layer, 1, seq_len, n_embd, half), f"{str(half).removeprefix('torch.')} takes 2 bytes per number, "
             "half of float32"),
        Case((n_layer, batch, seq_len, n_embd, torch.float16), f"a batch of {batch} sequences needs {batch} times "
             "the memory"),
        Case((1, 1, 1, n_embd, torch.float64), f"one layer, one position: a key and a value of {n_embd} numbers of "
             "8 bytes"),
        Case((_randint(g, 40, 96), _randint(g, 2, 8), 2 ** _randint(g, 11, 14), 64 * _randint(g, 25, 80),
              torch.float32), "a large model: the cache grows past the size of small models"),
    ]


def check_causal_mask_with_cache(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``causal_mask_with_cache(past_length, new_length)`` against ``minigpt.model.causal_mask``.

    ``past_length`` tokens are in the cache and ``new_length`` new tokens are fed now. Return a boolean
    (new_length, past_length + new_length) tensor, True where new token i (at position past_length + i)
    may attend to key j: itself and everything before it, nothing after. A ``seed`` draws the lengths.

    >>> def causal_mask_with_cache(past_length, new_length):
    ...     return torch.ones(new_length, past_length + new_length, dtype=torch.bool).tril(diagonal=past_length)
    >>> result = check_causal_mask_with_cache(causal_mask_with_cache)
    ✓ causal_mask_with_cache: all 5 hidden cases pass
    """
    cases = cases_for(seed, _mask_cases, _drawn_mask_cases)
    return check("causal_mask_with_cache", student, _causal_mask_with_cache, cases)


def _causal_mask_with_cache(past_length: int, new_length: int) -> torch.Tensor:
    return causal_mask(new_length, past_length)[0, 0]  # (1, 1, T, past + T) -> (T, past + T)


def _mask_cases() -> list[Case]:
    return [
        Case((0, 4), "no cache: the usual lower-triangular mask"),
        Case((5, 1), "one new token after 5 cached ones sees all 6 keys, its own included"),
        Case((2, 3), "new token i sits at position 2 + i: it sees keys 0 … 2 + i"),
        Case((0, 1), "a single token with nothing cached sees itself"),
        Case((7, 4), "four new tokens after seven cached ones (a speculative-decoding check)"),
    ]


def _drawn_mask_cases(g: torch.Generator) -> list[Case]:
    past, new = _randint(g, 1, 5), _randint(g, 2, 5)
    one_after = _randint(g, 2, 9)
    many_after, drafts = _randint(g, 6, 12), _randint(g, 2, 6)
    return [
        Case((0, _randint(g, 2, 6)), "no cache: the usual lower-triangular mask"),
        Case((one_after, 1), f"one new token after {one_after} cached ones sees all {one_after + 1} keys, its own "
             "included"),
        Case((past, new), f"new token i sits at position {past} + i: it sees keys 0 … {past} + i"),
        Case((0, 1), "a single token with nothing cached sees itself"),
        Case((many_after, drafts), f"{drafts} new tokens after {many_after} cached ones (a speculative-decoding "
             "check)"),
    ]


# ---- exercise 4: the whole sampler ----


def check_sample(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``sample(model, prompt_ids, max_new_tokens, settings, generator)`` against ``minigpt.generate``.

    ``settings`` is a ``minigpt.logits.LogitsSettings``; each of ``repetition_penalty``, ``temperature``,
    ``top_k``, ``top_p`` and ``min_p`` may be set (None: off). At every step the (B, V) logits of the last
    position go through them in the library's order (the repetition penalty over the prompt and the tokens
    so far, then temperature, top-k, top-p, min-p), then one ``torch.multinomial(probs, 1,
    generator=generator)`` draws the next token of every row. The model runs with a ``KVCache``: the prompt
    once, then only the newest token. Return the prompt and the new tokens, (B, T + max_new_tokens); with
    the same generator seed they must be ``minigpt.generate``'s tokens, one for one. A ``seed`` draws the
    model, prompts, settings and generator seeds instead.

    >>> from minigpt.logits import apply_temperature, top_k_filter
    >>> def sample_without_cache(model, prompt_ids, max_new_tokens, settings, generator):
    ...     ids = prompt_ids
    ...     for _ in range(max_new_tokens):  # settings hold only a temperature and a top-k here
    ...         logits = top_k_filter(apply_temperature(model(ids)[:, -1], settings.temperature), settings.top_k)
    ...         ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1, generator=generator)], dim=1)
    ...     return ids
    >>> result = check_sample(sample_without_cache)  # doctest: +ELLIPSIS
    ✗ sample: hidden case 1 of 7 fails (temperature alone: divide the logits by T, softmax, then one draw ...)
    ...
    """
    cases = cases_for(seed, _sample_cases, _drawn_sample_cases)
    return check("sample", _watched(student), _watched(_sample), cases, compare=_compare_samples)


def _sample(
    model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, settings: LogitsSettings, generator: torch.Generator
) -> torch.Tensor:
    return generate(model, prompt_ids, max_new_tokens=max_new_tokens, do_sample=True, logits=settings,
                    generator=generator).ids


@dataclass
class _Sampled:
    """What a sampler returned, and how it got there: the positions it fed the model, the generators it drew from."""

    ids: object
    positions_fed: int
    drew_global: bool  # torch's global generator moved during the call
    drew_generator: bool  # the generator passed in moved

    def __repr__(self) -> str:  # a failure message shows the tokens only
        return show(self.ids)


def _watched(sampler: Callable) -> Callable:
    """``sampler`` with the same arguments, returning a ``_Sampled``: its ids and what it did to produce them."""

    def sample(
        model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, settings: LogitsSettings, generator: torch.Generator
    ) -> _Sampled:
        fed = []  # positions per forward pass: the token embedding sees every position fed to the model
        hook = model.transformer.wte.register_forward_hook(lambda module, inputs, out: fed.append(inputs[0].size(1)))
        global_before, own_before = torch.get_rng_state(), generator.get_state()
        try:
            ids = sampler(model, prompt_ids, max_new_tokens, settings, generator)
        finally:
            hook.remove()
        return _Sampled(ids, sum(fed), not torch.equal(torch.get_rng_state(), global_before),
                        not torch.equal(generator.get_state(), own_before))

    return sample


def _compare_samples(expected: _Sampled, got: _Sampled, atol: float) -> str | None:
    """None when ``got`` has the library's tokens, drawn from the generator alone, with a cache; else why not."""
    if got.drew_global:
        return ("drew from torch's global random generator: pass generator=generator to torch.multinomial, so "
                "that the same generator gives the same tokens")
    problem = compare_values(expected.ids, got.ids, atol)
    if problem is not None and not got.drew_generator:
        return f"{problem}; the generator was never drawn from: torch.multinomial(probs, 1, generator=generator)"
    if problem is not None:
        return problem
    if got.positions_fed > expected.positions_fed + 1:  # one pass more (the last token fed for nothing) is fine
        return (f"the right tokens, but the model was fed {got.positions_fed} positions in all where a KV cache "
                f"needs {expected.positions_fed} (the prompt once, then each new token once): keep one KVCache "
                "and feed it only the tokens it has not seen")
    return None


# the toy model has 64 tokens: keep the prompts to the first 16 ids and the repetition penalty has repeats to
# work on, in the prompt and in what the model writes
_PROMPT_IDS = 16
# the length of the drawn prompts of the repetition-penalty cases, which are the model's own greedy text
_PENALTY_PROMPT = 5
# the settings' transforms, and orders other than the library's that a drawn case must tell apart from it
_TRANSFORMS = {
    "repetition_penalty": lambda logits, ids, s: repetition_penalty(logits, ids, s.repetition_penalty),
    "temperature": lambda logits, ids, s: apply_temperature(logits, s.temperature),
    "top_k": lambda logits, ids, s: top_k_filter(logits, s.top_k),
    "top_p": lambda logits, ids, s: top_p_filter(logits, s.top_p),
    "min_p": lambda logits, ids, s: min_p_filter(logits, s.min_p),
}
_TEMPERATURE_LAST = ("repetition_penalty", "top_k", "top_p", "min_p", "temperature")
_TOP_P_FIRST = ("repetition_penalty", "temperature", "top_p", "top_k", "min_p")
_PENALTY_LAST = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def _sample_cases() -> list[Case]:
    model = toy_model(seed=7)
    g = torch.Generator().manual_seed(7)
    prompt = torch.tensor([[1, 2, 3, 4]])
    settings = [
        (prompt, 8, LogitsSettings(temperature=0.8), 0, "temperature alone: divide the logits by T, softmax, then "
         "one draw per step with torch.multinomial(probs, 1, generator=generator)"),
        (prompt, 10, LogitsSettings(temperature=1.5, top_p=0.6), 1, "temperature BEFORE top-p: top-p measures the "
         "probabilities at T = 1.5, not at T = 1"),
        (prompt, 10, LogitsSettings(temperature=2.0, min_p=0.3), 2, "temperature BEFORE min-p: min-p compares the "
         "probabilities at T = 2, not at T = 1"),
        (prompt, 10, LogitsSettings(top_k=4, top_p=0.5), 3, "top-k BEFORE top-p: top-p measures the mass of the 4 "
         "survivors, renormalised, not of the whole vocabulary"),
        (prompt, 10, LogitsSettings(repetition_penalty=3.0, top_k=3), 4, "the repetition penalty comes FIRST, over "
         "the prompt and the new tokens: it can push a token already seen out of the top 3"),
        (torch.randint(0, _PROMPT_IDS, (2, 5), generator=g), 8,
         LogitsSettings(repetition_penalty=1.5, temperature=0.9, top_k=10, top_p=0.9, min_p=0.05), 5,
         "a batch of two prompts, every setting on: one (2, V) draw per step, each row penalised for its own tokens"),
        (torch.randint(0, _PROMPT_IDS, (1, 12), generator=g), 20,
         LogitsSettings(repetition_penalty=1.3, temperature=1.2, top_p=0.8), 6,
         "a long run that fills the model's whole context of 32: the cache holds every position"),
    ]
    return [_sample_case(model, *setting) for setting in settings]


def _sample_case(model: GPT, ids: torch.Tensor, n: int, settings: LogitsSettings, seed: int, why: str) -> Case:
    case = toy_model_case(model, why, prompt_ids=ids, max_new_tokens=n, settings=settings,
                          generator=torch.Generator().manual_seed(seed))
    case.shown = case.shown.replace(f"generator = {show(case.args[-1])}", f"generator seeded with {seed}")
    return case


def _drawn_sample_cases(g: torch.Generator) -> list[Case]:
    model = toy_model(seed=_randint(g, 0, 2**31))
    t_hot, t_cold = _uniform(g, 1.4, 2.0), _uniform(g, 0.6, 0.9)
    k, p, min_p = _randint(g, 3, 6), _uniform(g, 0.4, 0.6), _uniform(g, 0.2, 0.4)
    penalty = _uniform(g, 2.0, 4.0)
    rows, long = _randint(g, 2, 3), _randint(g, 8, 14)
    settings = [
        (1, _randint(g, 2, 6), 8, LogitsSettings(temperature=t_cold), "temperature alone: divide the logits by T, "
         "softmax, then one draw per step with torch.multinomial(probs, 1, generator=generator)", None),
        (1, 4, 10, LogitsSettings(temperature=t_hot, top_p=p), f"temperature BEFORE top-p: top-p measures the "
         f"probabilities at T = {t_hot:g}, not at T = 1", _TEMPERATURE_LAST),
        (1, 4, 10, LogitsSettings(temperature=t_hot, min_p=min_p), f"temperature BEFORE min-p: min-p compares the "
         f"probabilities at T = {t_hot:g}, not at T = 1", _TEMPERATURE_LAST),
        (1, 4, 10, LogitsSettings(top_k=k, top_p=p), f"top-k BEFORE top-p: top-p measures the mass of the {k} "
         "survivors, renormalised, not of the whole vocabulary", _TOP_P_FIRST),
        (1, _PENALTY_PROMPT, 10, LogitsSettings(repetition_penalty=penalty, top_k=k), f"the repetition penalty "
         f"comes FIRST, over the prompt and the new tokens: it can push a token already seen out of the top {k}",
         _PENALTY_LAST),
        (rows, _PENALTY_PROMPT, 8, LogitsSettings(
            repetition_penalty=_uniform(g, 1.2, 2.0), temperature=t_cold, top_k=_randint(g, 6, 12),
            top_p=_uniform(g, 0.8, 0.95), min_p=_uniform(g, 0.02, 0.1)), f"a batch of {rows} prompts, every setting "
         f"on: one ({rows}, V) draw per step, each row penalised for its own tokens", None),
        (1, long, CONTEXT - long, LogitsSettings(repetition_penalty=_uniform(g, 1.2, 2.0), temperature=t_hot,
                                                 top_p=_uniform(g, 0.7, 0.9)),
         f"a long run that fills the model's whole context of {CONTEXT}: the cache holds every position", None),
    ]
    return [_sample_case(model, *_steady_draw(model, g, rows, length, n, s, wrong), why)
            for rows, length, n, s, why, wrong in settings]


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    """A number in [low, high], rounded to 2 decimals so that a failure message shows it exactly."""
    return round(low + (high - low) * float(torch.rand(1, generator=g)), 2)


def _steady_draw(
    model: GPT, g: torch.Generator, rows: int, length: int, n: int, settings: LogitsSettings,
    wrong_order: tuple[str, ...] | None,
) -> tuple[torch.Tensor, int, LogitsSettings, int]:
    """A (rows, length) prompt and a generator seed the library samples the same tokens from with and without
    its cache, and other tokens than a sampler that applies the settings in ``wrong_order``: the case is drawn
    to catch that misconception, and does, whatever the seed. The prompt, ``n``, the settings and the seed, as
    ``_sample_case`` takes them.

    A prompt of ``_PENALTY_PROMPT`` tokens (the cases of the repetition penalty) is what the model writes
    greedily after a random token, so that its tokens are among those the model likes next and penalising them
    changes the draws. The two ways compute logits that differ in the last bits; a draw or a filter's cut-off
    that sat on such a boundary would make a correct solution's tokens depend on how it computed them. Redrawn
    till then.
    """
    while True:
        if length == _PENALTY_PROMPT:
            ids = _likely_prompt(model, g, rows, length)
        else:
            ids = torch.randint(0, _PROMPT_IDS, (rows, length), generator=g)
        seed = _randint(g, 0, 2**31)
        runs = [generate(model, ids, max_new_tokens=n, do_sample=True, logits=settings, use_cache=use_cache,
                         seed=seed).ids for use_cache in (True, False)]
        caught = wrong_order is None or not torch.equal(runs[0], _sample_in_order(model, ids, n, settings, seed,
                                                                                    wrong_order))
        if torch.equal(*runs) and caught:
            return ids, n, settings, seed


def _likely_prompt(model: GPT, g: torch.Generator, rows: int, length: int) -> torch.Tensor:
    """(rows, length): a random first token each, then what the model writes greedily after it."""
    start = torch.randint(0, _PROMPT_IDS, (rows, 1), generator=g)
    return generate(model, start, max_new_tokens=length - 1, temperature=0).ids


def _sample_in_order(
    model: GPT, ids: torch.Tensor, n: int, settings: LogitsSettings, seed: int, order: tuple[str, ...]
) -> torch.Tensor:
    """The (B, T + n) ids a sampler draws that applies the settings' transforms in ``order`` (no cache: it only
    tells a case's tokens from a misconception's)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        with torch.no_grad():
            logits = model(ids)[:, -1]  # (B, V)
        for name in order:
            if getattr(settings, name) is not None:
                logits = _TRANSFORMS[name](logits, ids, settings)
        ids = torch.cat([ids, torch.multinomial(logits.softmax(dim=-1), 1, generator=g)], dim=1)
    return ids
