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

>>> tokens = [1, 2, 3, 1, 2, 3, 1, 2]
>>> distinct_n(tokens, 2), repeated_ngram_rate(tokens, 4)
(0.42857142857142855, 0.4)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minigpt.checks import check_int
from minigpt.generate import eval_mode
from minigpt.model import GPT

Tokens = Sequence[int] | torch.Tensor  # one sequence of token ids


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
