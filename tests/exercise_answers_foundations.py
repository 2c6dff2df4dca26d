"""Answers to the exercises of chapters 0 and 9 (tokens and logits, determinism) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

import math
from functools import partial

import numpy as np
import torch

from minigpt.exercises import determinism as ch9
from minigpt.exercises import tokens_and_logits as ch0

# ---- chapter 0: tokens and logits ----


def next_token_logits(model, ids, *, position=-1):
    with torch.no_grad():
        return model(ids)[:, position]


def next_token_logits_row_by_row(model, ids):
    with torch.no_grad():  # one prompt at a time: other matrix shapes, the same logits but for rounding
        return torch.cat([model(row.unsqueeze(0))[:, -1] for row in ids])


def continuation_log_prob(model, ids, continuation, *, shift=1, log=True, reduce="sum"):
    full = torch.cat([ids, continuation], dim=1)
    with torch.no_grad():
        logits = model(full)  # (B, T + N, V)
    start = ids.size(1) - shift  # shift = 1: position t scores the token at t + 1
    scores = logits[:, start : start + continuation.size(1)]  # (B, N, V)
    chosen = (torch.log_softmax(scores, dim=-1) if log else torch.softmax(scores, dim=-1)).gather(
        -1, continuation.unsqueeze(-1)).squeeze(-1)  # (B, N)
    if not log:
        return chosen.prod(dim=-1)
    return {"sum": chosen.sum(dim=-1), "mean": chosen.mean(dim=-1), "none": chosen}[reduce]


def continuation_log_prob_one_token_at_a_time(model, ids, continuation):
    total = torch.zeros(ids.size(0))
    for n in range(continuation.size(1)):  # the next token after the prompt and the n tokens before it
        with torch.no_grad():
            logits = model(torch.cat([ids, continuation[:, :n]], dim=1))[:, -1]  # (B, V)
        total += torch.log_softmax(logits, dim=-1).gather(-1, continuation[:, n : n + 1]).squeeze(-1)
    return total


def continuation_log_prob_from_the_prompt_only(model, ids, continuation):
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids)[:, -1], dim=-1)  # (B, V): every token scored after the prompt
    return log_probs.gather(-1, continuation).sum(dim=-1)


def continuation_raw_logits(model, ids, continuation):
    with torch.no_grad():
        logits = model(torch.cat([ids, continuation], dim=1))[:, ids.size(1) - 1 : -1]
    return logits.gather(-1, continuation.unsqueeze(-1)).squeeze(-1).sum(dim=-1)  # logits, not log-probabilities


# ---- chapter 9: determinism ----


def sum_left_to_right(x):
    total = torch.tensor(0.0)
    for value in x:
        total = total + value
    return total.item()


def sum_left_to_right_numpy(x):
    total = np.float32(0.0)
    for value in x.numpy():
        total = np.float32(total + value)
    return float(total)


def sum_in_float64_rounded_each_step(x):
    total = 0.0
    for value in x.tolist():  # a float64 sum of two float32 numbers, rounded back: the float32 sum exactly
        total = float(np.float32(total + value))
    return total


def sum_right_to_left(x):
    return sum_left_to_right(x.flip(0))


def argmax_is_decided(logits, d, *, factor=2, strict=True, probabilities=False):
    scores = torch.softmax(logits, dim=-1) if probabilities else logits
    top2 = scores.topk(2, dim=-1).values
    gap = top2[:, 0] - top2[:, 1]
    return gap > factor * d if strict else gap >= factor * d


def argmax_is_decided_sorted(logits, d):
    ordered = logits.sort(dim=-1, descending=True).values
    return (ordered[:, 0] - ordered[:, 1]) > 2 * d


def argmax_is_decided_second_below_the_max(logits, d):
    top = logits.max(dim=-1, keepdim=True).values
    second = logits.masked_fill(logits == top, float("-inf")).max(dim=-1).values  # skips every tied leader
    return top.squeeze(-1) - second > 2 * d


CORRECT = [
    (ch0.check_next_token_logits, next_token_logits),
    (ch0.check_next_token_logits, next_token_logits_row_by_row),
    (ch0.check_next_token_logits, lambda model, ids: model(ids, last_only=True)[:, -1]),
    (ch0.check_continuation_log_prob, continuation_log_prob),
    (ch0.check_continuation_log_prob, continuation_log_prob_one_token_at_a_time),
    (ch9.check_sum_left_to_right, sum_left_to_right),
    (ch9.check_sum_left_to_right, sum_left_to_right_numpy),
    (ch9.check_sum_left_to_right, sum_in_float64_rounded_each_step),
    (ch9.check_sum_left_to_right, lambda x: sum(x)),  # Python's sum over 0-d float32 tensors: a float32 loop
    (ch9.check_argmax_is_decided, argmax_is_decided),
    (ch9.check_argmax_is_decided, argmax_is_decided_sorted),
]

# (checker, a typical wrong answer, text its message must contain)
WRONG = {
    "next-token logits at position 0": (
        ch0.check_next_token_logits, partial(next_token_logits, position=0), "wrong value at position [0, 0]"),
    "next-token logits of every position": (
        ch0.check_next_token_logits, lambda model, ids: model(ids), "keep only the last position's, (B, V)"),
    "next-token logits: the last row of the batch": (
        ch0.check_next_token_logits, lambda model, ids: model(ids)[-1], "wrong shape: expected (1, 16), got (5, 16)"),
    "next-token logits of the first prompt only": (
        ch0.check_next_token_logits, lambda model, ids: model(ids)[0, -1], "wrong shape: expected (1, 16), got (16,)"),
    "next-token probabilities instead of logits": (
        ch0.check_next_token_logits, lambda model, ids: torch.softmax(model(ids)[:, -1], dim=-1),
        "these look like probabilities"),
    "continuation scored one position late": (
        ch0.check_continuation_log_prob, partial(continuation_log_prob, shift=0),
        "its log-probability is read at the prompt's last position"),
    "continuation: the mean, not the sum": (
        ch0.check_continuation_log_prob, partial(continuation_log_prob, reduce="mean"),
        "the log-probabilities add up"),
    "continuation: one log-probability per token": (
        ch0.check_continuation_log_prob, partial(continuation_log_prob, reduce="none"), "one number per row"),
    "continuation: probabilities multiplied": (
        ch0.check_continuation_log_prob, partial(continuation_log_prob, log=False), "expected: tensor([-"),
    "continuation: every token scored after the prompt": (
        ch0.check_continuation_log_prob, continuation_log_prob_from_the_prompt_only, "three tokens"),
    "continuation: raw logits, no log-softmax": (
        ch0.check_continuation_log_prob, continuation_raw_logits, "one token"),
    "sum in float64": (ch9.check_sum_left_to_right, lambda x: sum(x.tolist()), "got:      16777316.0"),
    "sum exactly (math.fsum)": (ch9.check_sum_left_to_right, lambda x: math.fsum(x.tolist()), "16777316.0"),
    "sum with torch.sum (blocks, not left to right)": (
        ch9.check_sum_left_to_right, lambda x: x.sum(), "the sum stays 16777216"),
    "sum right to left": (ch9.check_sum_left_to_right, sum_right_to_left, "the sum stays 16777216"),
    "decided: a gap larger than d": (
        ch9.check_argmax_is_decided, partial(argmax_is_decided, factor=1), "0.6 in all, more than the gap"),
    "decided: a gap of 2d counts": (
        ch9.check_argmax_is_decided, partial(argmax_is_decided, strict=False), "a gap of exactly 2d"),
    "decided: the gap of the probabilities": (
        ch9.check_argmax_is_decided, partial(argmax_is_decided, probabilities=True), "not the probabilities"),
    "decided: second largest skips a tied leader": (
        ch9.check_argmax_is_decided, argmax_is_decided_second_below_the_max, "two tokens tie for the lead"),
    "decided: the gap itself": (
        ch9.check_argmax_is_decided, lambda logits, d: logits.topk(2, dim=-1).values.diff(dim=-1).neg().squeeze(-1),
        "a bool tensor"),
}
