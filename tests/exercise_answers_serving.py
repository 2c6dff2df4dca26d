"""Answers to the exercises of chapters 13 and 14 (serving many users, watermarks) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

import math
from functools import partial

import torch

from minigpt import serving
from minigpt.exercises import serving as ch13
from minigpt.exercises import watermark as ch14
from minigpt.logits import WatermarkSettings
from minigpt.logits import greenlist as library_greenlist
from minigpt.watermark import z_score

# ---- chapter 13: serving many users ----


def next_slot(block_table, num_tokens, free_blocks, block_size, *, full=">=", pick=min, position=0, modulo=True,
              free_first=False):
    """Where token ``num_tokens`` goes; each keyword turns one typical mistake on."""
    if free_first and not free_blocks:
        return None
    capacity = len(block_table) * block_size
    needs_block = num_tokens >= capacity if full == ">=" else num_tokens > capacity
    index = num_tokens + position
    if not needs_block:
        return block_table[index // block_size], index % block_size if modulo else index
    if not free_blocks and pick is min:
        return None
    return pick(free_blocks), 0


def next_slot_by_blocks(block_table, num_tokens, free_blocks, block_size):
    """Written differently: count the blocks the tokens need, with the library's blocks_needed."""
    if serving.blocks_needed(num_tokens + 1, block_size) > len(block_table):
        return (sorted(free_blocks)[0], 0) if free_blocks else None
    return block_table[-1], num_tokens % block_size


def schedule(waiting, running, freed, num_free, max_batch_size, *, newest_first=True, admit_when_preempting=False,
             overtake=False, batch_from_zero=False, running_first=True, gives_back="freed", strict=False,
             order=True, accumulate=True):
    """One scheduler step; each keyword turns one typical mistake on."""
    need, free, preempt = sum(running), num_free, []
    candidates = list(reversed(range(1, len(running)))) if newest_first else list(range(len(running) - 1))
    for i in candidates:
        if (need < free) if strict else (need <= free):
            break
        preempt.append(i)
        need -= running[i]
        free += {"freed": freed[i], "needed": running[i], "nothing": 0}[gives_back]
    if preempt and not admit_when_preempting:
        return 0, preempt if order else sorted(preempt)
    admit, batch = 0, 0 if batch_from_zero else len(running)
    used = need if running_first else 0
    for blocks in waiting:
        if batch >= max_batch_size or used + blocks > free:
            if overtake:
                continue
            break
        admit, batch = admit + 1, batch + 1
        if accumulate:
            used += blocks
    return admit, preempt if order else sorted(preempt)


def library_schedule(waiting, running, freed, num_free, max_batch_size):
    decision = serving.schedule(waiting, running, freed, num_free=num_free, max_batch_size=max_batch_size)
    return decision.admit, tuple(decision.preempt)  # a tuple of indices is as good as a list


# ---- chapter 14: watermarks ----


def greenlist(ids, vocab_size, greenlist_ratio, hashing_key, *, which=-1, key=True, token=True, combine="*",
              size=int, part="first", as_list=False):
    """The green list the text ``ids`` seeds for its next token; each keyword turns one typical mistake on."""
    previous = ids[which] if token else 1
    seed = (hashing_key if key else 1) * previous if combine == "*" else hashing_key + previous
    generator = torch.Generator().manual_seed(seed % (2**64 - 1))
    permutation = torch.randperm(vocab_size, generator=generator)
    n = size(vocab_size * greenlist_ratio)
    green = {"first": permutation[:n], "last": permutation[vocab_size - n:], "rest": permutation[n:]}[part]
    return green.tolist() if as_list else green


def library_greenlist_sorted(ids, vocab_size, greenlist_ratio, hashing_key):
    settings = WatermarkSettings(greenlist_ratio=greenlist_ratio, hashing_key=hashing_key)
    return library_greenlist(ids, settings, vocab_size=vocab_size).sort().values  # the order does not matter


def watermark_z_score(ids, vocab_size, greenlist_ratio, hashing_key, *, first_scored=False, seed_with="previous",
                      unique=False, root=True, spread=True, fraction=False):
    """The detector's z-score of ``ids``; each keyword turns one typical mistake on."""
    pairs = [(ids[:t] if seed_with == "previous" else ids[: t + 1], ids[t]) for t in range(1, len(ids))]
    if unique:  # each distinct (previous, token) pair once
        pairs = list({(tuple(prefix[-1:]), token): (prefix, token) for prefix, token in pairs}.values())
    green = sum(token in greenlist(prefix, vocab_size, greenlist_ratio, hashing_key).tolist() for prefix, token in pairs)
    scored = len(pairs) + (1 if first_scored else 0)
    if fraction:
        return green / scored
    gamma = greenlist_ratio
    variance = scored * gamma * (1 - gamma) if spread else scored * gamma
    return (green - gamma * scored) / (math.sqrt(variance) if root else variance)


def watermark_z_score_float32(ids, vocab_size, greenlist_ratio, hashing_key):
    """Written with tensors: the membership test in one go, the z in float32."""
    settings = WatermarkSettings(greenlist_ratio=greenlist_ratio, hashing_key=hashing_key)
    is_green = torch.tensor([bool((library_greenlist(ids[:t], settings, vocab_size=vocab_size) == ids[t]).any())
                             for t in range(1, len(ids))])
    T, gamma = torch.tensor(float(len(is_green))), torch.tensor(greenlist_ratio)
    return (is_green.sum() - gamma * T) / torch.sqrt(T * gamma * (1 - gamma))


def library_z_score(ids, vocab_size, greenlist_ratio, hashing_key):
    settings = WatermarkSettings(greenlist_ratio=greenlist_ratio, hashing_key=hashing_key)
    green = sum(ids[t] in library_greenlist(ids[:t], settings, vocab_size=vocab_size) for t in range(1, len(ids)))
    return z_score(green, len(ids) - 1, greenlist_ratio)


CORRECT = [
    (ch13.check_next_slot, next_slot),
    (ch13.check_next_slot, next_slot_by_blocks),
    (ch13.check_schedule, schedule),
    (ch13.check_schedule, library_schedule),
    (ch14.check_greenlist, greenlist),
    (ch14.check_greenlist, library_greenlist_sorted),
    (ch14.check_watermark_z_score, watermark_z_score),
    (ch14.check_watermark_z_score, watermark_z_score_float32),
    (ch14.check_watermark_z_score, library_z_score),
]

# (checker, a typical wrong answer, text its message must contain)
WRONG = {
    "next slot takes the first free block, not the lowest": (
        ch13.check_next_slot, partial(next_slot, pick=lambda free: free[0]), "take the LOWEST free block"),
    "next slot takes the last free block": (
        ch13.check_next_slot, partial(next_slot, pick=lambda free: free[-1]), "take the LOWEST free block"),
    "next slot opens a new block one token late": (
        ch13.check_next_slot, partial(next_slot, full=">"), "raised IndexError"),
    "next slot counts positions from 1": (
        ch13.check_next_slot, partial(next_slot, position=1), "offset 5 % 4 = 1"),
    "next slot forgets the modulo": (
        ch13.check_next_slot, partial(next_slot, modulo=False), "offset 5 % 4 = 1"),
    "next slot gives up when no block is free, even with room": (
        ch13.check_next_slot, partial(next_slot, free_first=True), "returned None, but the token has a place"),
    "next slot fails on a full pool": (
        ch13.check_next_slot, partial(next_slot, pick=lambda free: min(free)), "raised ValueError"),
    "schedule preempts the oldest first": (
        ch13.check_schedule, partial(schedule, newest_first=False), "preempt the NEWEST"),
    "schedule admits in a step that preempts": (
        ch13.check_schedule, partial(schedule, admit_when_preempting=True), "admit nobody in a step that preempts"),
    "schedule lets smaller requests overtake": (
        ch13.check_schedule, partial(schedule, overtake=True), "must not overtake it"),
    "schedule forgets the running in the batch limit": (
        ch13.check_schedule, partial(schedule, batch_from_zero=True), "the batch holds at most 4"),
    "schedule admits as if the running needed nothing": (
        ch13.check_schedule, partial(schedule, running_first=False), "does not fit in the 2 left"),
    "schedule frees what a preempted request needed, not what it holds": (
        ch13.check_schedule, partial(schedule, gives_back="needed"), "gives back the blocks it holds"),
    "schedule frees nothing when it preempts": (
        ch13.check_schedule, partial(schedule, gives_back="nothing"), "which frees 4"),
    "schedule preempts when the blocks are exactly enough": (
        ch13.check_schedule, partial(schedule, strict=True), "need exactly the 2 free blocks"),
    "schedule lists the preempted oldest first": (
        ch13.check_schedule, partial(schedule, order=False), "in the wrong order"),
    "schedule checks each request alone against the free blocks": (
        ch13.check_schedule, partial(schedule, accumulate=False), "then 3 more do not fit"),
    "greenlist seeded by the first token": (
        ch14.check_greenlist, partial(greenlist, which=0), "only the LAST token seeds the list"),
    "greenlist seeded by the key alone": (
        ch14.check_greenlist, partial(greenlist, token=False), "seed with hashing_key * 3"),
    "greenlist seeded by the token alone": (
        ch14.check_greenlist, partial(greenlist, key=False), "seed with hashing_key * 3"),
    "greenlist seeded by key + token": (
        ch14.check_greenlist, partial(greenlist, combine="+"), "seed with hashing_key * 3"),
    "greenlist rounds the size": (
        ch14.check_greenlist, partial(greenlist, size=round), "int() rounds down"),
    "greenlist rounds the size up": (
        ch14.check_greenlist, partial(greenlist, size=math.ceil), "int() rounds down"),
    "greenlist keeps the end of the permutation": (
        ch14.check_greenlist, partial(greenlist, part="last"), "wrong green tokens"),
    "greenlist returns the red tokens": (
        ch14.check_greenlist, partial(greenlist, part="rest"), "wrong number of green tokens: expected 3, got 9"),
    "greenlist returns a list": (
        ch14.check_greenlist, partial(greenlist, as_list=True), "return a tensor of token ids"),
    "z-score scores the first token too": (
        ch14.check_watermark_z_score, partial(watermark_z_score, first_scored=True), "the first has no token before"),
    "z-score seeds a token's list with the token itself": (
        ch14.check_watermark_z_score, partial(watermark_z_score, seed_with="itself"), "expected: "),
    "z-score counts a repeated pair once": (
        ch14.check_watermark_z_score, partial(watermark_z_score, unique=True), "expected: 5.7446"),
    "z-score without the square root": (
        ch14.check_watermark_z_score, partial(watermark_z_score, root=False), "the first has no token before"),
    "z-score without 1 - γ": (
        ch14.check_watermark_z_score, partial(watermark_z_score, spread=False), "the first has no token before"),
    "z-score returns the green fraction": (
        ch14.check_watermark_z_score, partial(watermark_z_score, fraction=True), "the first has no token before"),
}
