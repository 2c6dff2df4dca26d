"""Answers to the exercises of chapters 1-4 (greedy, temperature, top-k, top-p) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

from functools import partial

import torch

from minigpt import generate
from minigpt import logits as L
from minigpt.exercises import greedy as ch1
from minigpt.exercises import temperature as ch2
from minigpt.exercises import top_k as ch3
from minigpt.exercises import top_p as ch4

NEG_INF = float("-inf")

# ---- chapter 1: greedy decoding ----


def greedy_generate(model, ids, max_new_tokens, *, position=-1, append=True):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            next_ids = model(ids)[:, position].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_ids], dim=1) if append else next_ids
    return ids


def greedy_generate_first_row_only(model, ids, max_new_tokens):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            next_id = model(ids)[0, -1].argmax()  # the first row's choice, given to every row
        ids = torch.cat([ids, next_id.expand(ids.size(0), 1)], dim=1)
    return ids


def library_greedy(model, ids, max_new_tokens):
    return generate(model, ids, max_new_tokens=max_new_tokens, temperature=0).ids  # with the KV cache


# ---- chapter 2: temperature ----


def softmax_with_temperature(logits, temperature, *, row_max=True, row_sum=True):
    scaled = logits / temperature
    scaled = scaled - (scaled.max(dim=-1, keepdim=True).values if row_max else scaled.max())
    weights = scaled.exp()
    return weights / (weights.sum(dim=-1, keepdim=True) if row_sum else weights.sum())


def softmax_then_power(logits, temperature):
    probs = torch.softmax(logits, dim=-1) ** (1 / temperature)  # renormalised, p ** (1/T) is softmax(z / T)
    return probs / probs.sum(dim=-1, keepdim=True)


def entropy(probs, *, log=torch.log, sign=-1):
    return sign * torch.where(probs > 0, probs * log(probs), 0.0).sum(dim=-1)


# ---- chapter 3: top-k ----


def top_k_filter(logits, k, *, below="<", clamp=True):
    k = min(k, logits.size(-1)) if clamp else k
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]
    drop = logits < kth_largest if below == "<" else logits <= kth_largest
    return logits.masked_fill(drop, NEG_INF)


def top_k_by_indices(logits, k):
    kept = torch.topk(logits, min(k, logits.size(-1)), dim=-1).indices  # exactly k: one of a tie is dropped
    return torch.full_like(logits, NEG_INF).scatter(-1, kept, logits.gather(-1, kept))


def top_k_probs(logits, k, temperature, *, renormalise=True):
    if renormalise:
        return torch.softmax(top_k_filter(logits / temperature, k), dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return probs.masked_fill(top_k_filter(logits, k) == NEG_INF, 0.0)


# ---- chapter 4: top-p and min-p ----


def top_p_filter(logits, p, *, keep_crossing=True, descending=True, map_back=True):
    sorted_probs, order = torch.sort(torch.softmax(logits, dim=-1), descending=descending, dim=-1)
    cumulative = sorted_probs.cumsum(dim=-1)
    drop_sorted = cumulative - sorted_probs >= p if keep_crossing else cumulative > p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted) if map_back else drop_sorted
    return logits.masked_fill(drop, NEG_INF)


def min_p_filter(logits, min_p, *, scores="probs", scaled=True):
    x = torch.softmax(logits, dim=-1) if scores == "probs" else logits
    threshold = min_p * x.max(dim=-1, keepdim=True).values if scaled else min_p
    return logits.masked_fill(x < threshold, NEG_INF)


CORRECT = [
    (ch1.check_greedy_next_token, lambda x: torch.argmax(x, dim=-1)),
    (ch1.check_greedy_generate, greedy_generate),
    (ch1.check_greedy_generate, library_greedy),
    (ch2.check_softmax_with_temperature, softmax_with_temperature),
    (ch2.check_softmax_with_temperature, lambda x, t: torch.softmax(L.apply_temperature(x, t), dim=-1)),
    (ch2.check_softmax_with_temperature, softmax_then_power),
    (ch2.check_entropy, entropy),
    (ch2.check_entropy, lambda p: torch.distributions.Categorical(probs=p).entropy()),
    (ch3.check_top_k_filter, top_k_filter),
    (ch3.check_top_k_filter, L.top_k_filter),
    (ch3.check_top_k_probs, top_k_probs),
    (ch4.check_top_p_filter, top_p_filter),
    (ch4.check_top_p_filter, L.top_p_filter),
    (ch4.check_min_p_filter, min_p_filter),
    (ch4.check_min_p_filter, L.min_p_filter),
]

# (checker, a typical wrong answer, text its message must contain)
WRONG = {
    "argmax over the batch dimension": (
        ch1.check_greedy_next_token, lambda x: x.argmax(dim=0), "wrong shape: expected (1,), got (9,)"),
    "max value instead of its index": (
        ch1.check_greedy_next_token, lambda x: x.max(dim=-1).values, "return indices, not logits"),
    "loop reads position 0": (
        ch1.check_greedy_generate, partial(greedy_generate, position=0), "the argmax of the logits at the last position"),
    "loop forgets to append": (
        ch1.check_greedy_generate, partial(greedy_generate, append=False), "wrong shape: expected (1, 5), got (1, 1)"),
    "loop hard-codes the visible prompt's length": (
        ch1.check_greedy_generate, partial(greedy_generate, position=3),
        "eight new tokens: each one is appended and the longer sequence fed back in"),
    "loop gives every row the first row's token": (
        ch1.check_greedy_generate, greedy_generate_first_row_only, "each row continues with its own argmax"),
    "temperature after softmax, divided": (
        ch2.check_softmax_with_temperature, lambda x, t: torch.softmax(x, dim=-1) / t, "row 0 sums to 2.0"),
    "temperature after softmax, as a power": (
        ch2.check_softmax_with_temperature, lambda x, t: torch.softmax(x, dim=-1) ** (1 / t),
        "T = 0.5 sharpens: divide the logits by T before the softmax"),
    "temperature multiplies": (
        ch2.check_softmax_with_temperature, lambda x, t: torch.softmax(x * t, dim=-1), "expected: tensor([[0.0081,"),
    "softmax along the batch dimension": (
        ch2.check_softmax_with_temperature, lambda x, t: torch.softmax(x / t, dim=0), "row 0 sums to 9.0"),
    "softmax without the max subtracted": (
        ch2.check_softmax_with_temperature, lambda x, t: (x / t).exp() / (x / t).exp().sum(-1, keepdim=True),
        "exp(675) overflows to inf"),
    "softmax normalised over the whole batch": (
        ch2.check_softmax_with_temperature, partial(softmax_with_temperature, row_sum=False),
        "softmax along the last dimension, each row sums to 1"),
    "softmax with the batch's max": (
        ch2.check_softmax_with_temperature, partial(softmax_with_temperature, row_max=False),
        "subtract each row's own largest logit"),
    "entropy in bits": (ch2.check_entropy, partial(entropy, log=torch.log2), "expected: tensor([2.1972])"),
    "entropy without the minus sign": (ch2.check_entropy, partial(entropy, sign=1), "got:      tensor([-2.1972])"),
    "entropy NaN at p = 0": (
        ch2.check_entropy, lambda p: -(p * p.log()).sum(dim=-1), "0 · log 0 counts as 0 (not NaN)"),
    "top-k keeps exactly k": (
        ch3.check_top_k_filter, top_k_by_indices, "a tie at the k-th largest logit: both tied tokens must be kept"),
    "top-k drops the k-th itself": (
        ch3.check_top_k_filter, partial(top_k_filter, below="<="), "the 3rd largest included"),
    "top-k with k > V": (
        ch3.check_top_k_filter, partial(top_k_filter, clamp=False), "raised RuntimeError: selected index k out of range"),
    "top-k probabilities not renormalised": (
        ch3.check_top_k_probs, partial(top_k_probs, renormalise=False), "row 0 sums to 0.9906"),
    "top-k probabilities with temperature after softmax": (
        ch3.check_top_k_probs, lambda x, k, t: torch.softmax(top_k_filter(x, k), dim=-1) ** (1 / t),
        "divide the logits by T, before the softmax"),
    "top-p drops the crossing token": (
        ch4.check_top_p_filter, partial(top_p_filter, keep_crossing=False), "crosses p on its own and is kept"),
    "top-p cuts the wrong end": (
        ch4.check_top_p_filter, partial(top_p_filter, descending=False),
        "got:      tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])"),
    "top-p left in sorted order": (
        ch4.check_top_p_filter, partial(top_p_filter, map_back=False),
        "got:      tensor([[4.51, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf]])"),
    "min-p compares logits": (
        ch4.check_min_p_filter, partial(min_p_filter, scores="logits"), "'closer' (0.061) is just above 0.1 × 0.572"),
    "min-p without the top probability": (
        ch4.check_min_p_filter, partial(min_p_filter, scaled=False), "'closer' (0.061) is just above 0.1 × 0.572"),
}
