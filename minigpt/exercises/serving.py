"""Checkers for chapter 13, serving many users (``notebooks/exercises/13_serving_many_users_exercises.ipynb``).

Two exercises on the two decisions a paged, continuously batched server makes: where the next token of a
sequence goes in the block pool (its block table, taking the lowest free block when the last one is full:
``minigpt.serving.BlockTable`` and ``BlockAllocator``), and one step of the scheduler, which running requests
to preempt and how many waiting ones to admit (``minigpt.serving.schedule``). A ``seed`` checks on cases of
the same kinds drawn from it (``minigpt.exercises.grading``): random tables, block sizes and free lists,
random queues, pools and batch limits.

>>> result = check_next_slot(_next_slot)
✓ next_slot: all 8 hidden cases pass
>>> result = check_schedule(_schedule)
✓ schedule: all 9 hidden cases pass
>>> result = check_schedule(_schedule, seed=1)
✓ schedule: all 9 drawn cases pass
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_values
from minigpt.serving import BlockAllocator, BlockTable, schedule


def _next_slot(
    block_table: list[int], num_tokens: int, free_blocks: list[int], block_size: int
) -> tuple[int, int] | None:
    """The reference, from the library's pieces: the slot of token ``num_tokens``, or None when the pool is full."""
    table = BlockTable(block_size, list(block_table), num_tokens)
    if num_tokens == table.capacity:  # the last block is full (or there is none): the allocator hands out one
        if not free_blocks:
            return None
        pool = BlockAllocator(max([*block_table, *free_blocks]) + 1)
        for _ in range(pool.num_blocks):  # every block in use, then the free ones given back
            pool.allocate()
        for block in free_blocks:
            pool.free(block)
        table.blocks.append(pool.allocate())  # the lowest free id, the allocator's rule
    return table.slot(num_tokens)


def check_next_slot(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``next_slot(block_table, num_tokens, free_blocks, block_size)``: where the next token's key goes.

    A sequence holds ``num_tokens`` tokens in the blocks ``block_table`` (block ids, in order; ``block_size``
    tokens each, the last one possibly part full). Its next token is token ``num_tokens``: return ``(block,
    offset)``, the block id and the place in it. When the last block is full (or the table is empty), the token
    needs a new block: the lowest id in ``free_blocks`` (as ``BlockAllocator.allocate`` takes), at offset 0; when
    no block is free then, return None (the scheduler must preempt someone). Leave both lists as they are: the
    engine does the bookkeeping. A ``seed`` checks on cases drawn from it.

    >>> def first_free_block(block_table, num_tokens, free_blocks, block_size):
    ...     if num_tokens < len(block_table) * block_size:
    ...         return block_table[num_tokens // block_size], num_tokens % block_size
    ...     return (free_blocks[0], 0) if free_blocks else None
    >>> result = check_next_slot(first_free_block)
    ✗ next_slot: hidden case 2 of 8 fails (the last block is full, 8 tokens in 2 blocks of 4: take the LOWEST \
free block, 1, at offset 0)
      block_table = [3, 7], num_tokens = 8, free_blocks = [5, 1, 6], block_size = 4
      block: wrong value
      expected: (1, 0)
      got:      (5, 0)
    """
    cases = cases_for(seed, _slot_cases, _drawn_slot_cases)
    return check("next_slot", student, _next_slot, cases, compare=_compare_slot)


def _compare_slot(expected: tuple[int, int] | None, got: object, atol: float) -> str | None:
    """Like ``compare_values``, but name the part that is wrong, and say what None means when one side is None."""
    if expected is None and got is not None:
        return "the last block is full and no block is free: return None, the pool has no room for the token"
    if expected is not None and got is None:
        return "returned None, but the token has a place: in the last block, or in a free block"
    if expected is not None and isinstance(got, (tuple, list)) and len(got) == 2:
        for name, e, g in zip(("block", "offset"), expected, got):
            problem = compare_values(e, g, atol)
            if problem is not None:
                return f"{name}: {problem}"
        return None
    return compare_values(expected, got, atol)


def _slot_cases() -> list[Case]:
    return [
        Case(([3, 7], 5, [0, 1, 2], 4), "room in the last block: token 5 goes to block 7, the 2nd of the table, at "
             "offset 5 % 4 = 1"),
        Case(([3, 7], 8, [5, 1, 6], 4), "the last block is full, 8 tokens in 2 blocks of 4: take the LOWEST free "
             "block, 1, at offset 0"),
        Case(([], 0, [4, 2], 4), "an empty sequence: its first token needs a block, the lowest free one, 2"),
        Case(([3, 7], 7, [], 4), "no free block, but the last block has room for this token: offset 3"),
        Case(([3, 7], 8, [], 4), "the last block is full and no block is free: None, the scheduler must preempt"),
        Case(([2, 0, 5], 3, [6, 1, 4], 1), "block_size 1: every token takes a new block, here the lowest free, 1"),
        Case(([0, 9, 4], 37, [8, 3], 16), "block_size 16, the engine's default: token 37 is in block 37 // 16 = 2 "
             "of the table, 4, at offset 37 % 16 = 5"),
        Case(([6], 15, [2], 16), "the last place of a block: offset 15, not a new block yet"),
    ]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An int from ``low`` to ``high``, both included, drawn from ``g``."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _pool(g: torch.Generator, used: int, free: int) -> tuple[list[int], list[int]]:
    """A table of ``used`` block ids and a free list of ``free`` others, from a pool of up to 20, both shuffled;
    the free list never starts or ends with its lowest id (taking the first or the last is a different answer)."""
    ids = torch.randperm(20, generator=g)[: used + free].tolist()
    table, free_blocks = ids[:used], ids[used:]
    if len(free_blocks) >= 3:
        lowest = free_blocks.pop(free_blocks.index(min(free_blocks)))
        free_blocks.insert(_randint(g, 1, len(free_blocks) - 1), lowest)
    return table, free_blocks


def _drawn_slot_cases(g: torch.Generator) -> list[Case]:
    bs = _randint(g, 3, 8)
    n = _randint(g, 2, 4)  # blocks in the table
    room = _randint(g, 1, bs - 1)  # tokens written in the last block, which has room
    table, free = _pool(g, n, _randint(g, 3, 5))
    full_table, full_free = _pool(g, n, _randint(g, 3, 5))
    empty_free = _pool(g, 0, 3)[1]
    ones_table, ones_free = _pool(g, _randint(g, 1, 4), 3)
    big = _randint(g, 2, 5)  # blocks of 16
    big_table, big_free = _pool(g, big, 2)
    big_tokens = 16 * (big - 1) + _randint(g, 1, 14)
    last_place = _pool(g, n, 2)
    tokens = (n - 1) * bs + room
    return [
        Case((table, tokens, free, bs), f"room in the last block: token {tokens} goes to block {table[-1]}, at "
             f"offset {tokens} % {bs} = {room}"),
        Case((full_table, n * bs, full_free, bs), f"the last block is full, {n * bs} tokens in {n} blocks of {bs}: "
             f"take the LOWEST free block, {min(full_free)}, at offset 0"),
        Case(([], 0, empty_free, bs), f"an empty sequence: its first token needs a block, the lowest free one, "
             f"{min(empty_free)}"),
        Case((table, tokens, [], bs), f"no free block, but the last block has room for this token: offset {room}"),
        Case((full_table, n * bs, [], bs), "the last block is full and no block is free: None, the scheduler must "
             "preempt"),
        Case((ones_table, len(ones_table), ones_free, 1), f"block_size 1: every token takes a new block, here the "
             f"lowest free, {min(ones_free)}"),
        Case((big_table, big_tokens, big_free, 16), f"block_size 16, the engine's default: token {big_tokens} is in "
             f"block {big_tokens} // 16 = {big - 1} of the table, {big_table[-1]}, at offset {big_tokens % 16}"),
        Case((last_place[0], n * bs - 1, last_place[1], bs), f"the last place of a block: offset {bs - 1}, not a new "
             "block yet"),
    ]


def _schedule(
    waiting: list[int], running: list[int], freed: list[int], num_free: int, max_batch_size: int
) -> tuple[int, list[int]]:
    """The reference: the library's ``schedule``, its answer as ``(admit, preempt)``."""
    decision = schedule(waiting, running, freed, num_free=num_free, max_batch_size=max_batch_size)
    return decision.admit, decision.preempt


def check_schedule(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``schedule(waiting, running, freed, num_free, max_batch_size)`` against ``minigpt.serving.schedule``.

    ``waiting[j]``: the blocks the j-th waiting request needs to start (first come first); ``running[i]``: the
    blocks the i-th running request needs this step (oldest first), ``freed[i]`` the blocks it gives back if it
    is preempted; ``num_free`` blocks are free. Return ``(admit, preempt)``. First the running: while they need
    more blocks than are free, preempt the NEWEST (never the oldest), which frees its blocks; ``preempt`` lists
    their indices, newest first. A step that preempts admits nobody. Otherwise admit waiting requests in order
    while the batch (running + admitted) has fewer than ``max_batch_size`` and their blocks fit after the
    running's; the first that does not fit stops the admission. ``admit`` is how many. A ``seed`` checks on
    cases drawn from it.

    >>> def lets_smaller_ones_overtake(waiting, running, freed, num_free, max_batch_size):
    ...     admit, preempt = _schedule([], running, freed, num_free, max_batch_size)
    ...     free, batch = num_free - sum(running), len(running)
    ...     for blocks in waiting:  # a request that does not fit is skipped, not waited for
    ...         if not preempt and batch < max_batch_size and blocks <= free:
    ...             admit, free, batch = admit + 1, free - blocks, batch + 1
    ...     return admit, preempt
    >>> result = check_schedule(lets_smaller_ones_overtake)
    ✗ schedule: hidden case 2 of 9 fails (first come, first served: the first waiting request (3 blocks) does \
not fit in the 2 left, and the one behind it must not overtake it)
      waiting = [3, 1], running = [1], freed = [2], num_free = 3, max_batch_size = 4
      admit: wrong value
      expected: (0, [])
      got:      (1, [])
    """
    cases = cases_for(seed, _schedule_cases, _drawn_schedule_cases)
    return check("schedule", student, _schedule, cases, compare=_compare_schedule)


def _compare_schedule(expected: tuple[int, list[int]], got: object, atol: float) -> str | None:
    """Compare ``(admit, preempt)``, naming the part that is wrong, and say so when only the order of ``preempt`` is."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return "return two things, admit and preempt: `return admit, preempt`"
    problem = compare_values(expected[0], got[0], atol)
    if problem is not None:
        return f"admit: {problem}"
    if not isinstance(got[1], (tuple, list)):
        return f"preempt: expected a list of indices, got a {type(got[1]).__name__}"
    preempt = list(got[1])  # a tuple of indices is as good as a list
    if preempt != expected[1] and sorted(preempt) == sorted(expected[1]):
        return "preempt: the right requests, in the wrong order: the newest is preempted first, so list it first"
    problem = compare_values(expected[1], preempt, atol)
    return None if problem is None else f"preempt: {problem}"


def _schedule_cases() -> list[Case]:
    return [
        Case(([2, 1, 3], [], [], 4, 4), "nothing runs: admit first come, first served while the blocks fit: 2 + 1 "
             "of the 4 free, then 3 more do not fit"),
        Case(([3, 1], [1], [2], 3, 4), "first come, first served: the first waiting request (3 blocks) does not fit "
             "in the 2 left, and the one behind it must not overtake it"),
        Case(([1, 1], [1, 0, 0], [2, 1, 1], 5, 4), "the batch holds at most 4: 3 run, so only 1 more is admitted"),
        Case(([2], [1, 1], [1, 1], 3, 4), "the running come first: they need 2 of the 3 free blocks, so a request "
             "of 2 does not fit"),
        Case(([2], [1, 1, 1], [3, 2, 4], 1, 4), "the running need 3 blocks, 1 is free: preempt the NEWEST (index 2), "
             "which frees 4; and admit nobody in a step that preempts"),
        Case(([], [1, 1, 1, 1], [2, 1, 1, 1], 1, 4), "preempt two, newest first: index 3 frees 1, still short, then "
             "index 2"),
        Case(([], [1, 1, 1], [4, 4, 4], 0, 4), "a preempted request gives back the blocks it holds (freed), not "
             "the ones it needed this step"),
        Case(([1], [1, 1], [2, 2], 2, 4), "the running need exactly the 2 free blocks: nobody is preempted, and "
             "nobody fits in after them"),
        Case(([5], [], [], 4, 4), "nothing runs and the first waiting request needs 5 blocks of the 4 free: it "
             "waits"),
    ]


def _drawn_schedule_cases(g: torch.Generator) -> list[Case]:
    r = _randint
    # admission: several waiting, nothing running; the first k fit together, the next does not fit on top
    first, second = r(g, 1, 3), r(g, 1, 3)
    third = r(g, 2, first + second)  # fits the free blocks alone, not after the first two
    free = first + second + r(g, 0, third - 1)
    # overtaking: the first waiting does not fit in what the running leave, a 1-block request behind it would
    left = r(g, 1, 3)
    running_need = r(g, 0, 2)
    overtake = ([left + r(g, 1, 3), 1], [running_need], [running_need + r(g, 1, 3)], left + running_need, 4)
    # the batch limit: the batch is nearly full, two 1-block requests wait, the blocks are plenty
    limit = r(g, 3, 5)
    in_batch = [r(g, 0, 1) for _ in range(limit - 1)]
    batch = ([1, 1], in_batch, [x + 1 for x in in_batch], sum(in_batch) + r(g, 3, 6), limit)
    # the running come first: each request fits the free blocks alone, not after the running's
    running = [r(g, 1, 2) for _ in range(r(g, 1, 3))]
    spare = r(g, 0, 2)
    behind = ([spare + r(g, 1, sum(running))], running, [x + r(g, 0, 2) for x in running], sum(running) + spare, 4)
    # preempt the newest: a big freed count for it, so admitting in the same step would look possible
    n = r(g, 3, 4)
    need = [1] * n
    freed = [r(g, 1, 3) for _ in range(n - 1)] + [r(g, 4, 6)]
    newest = ([r(g, 1, 2)], need, freed, n - 1, 8)  # room in the batch: only the rule stops admission
    # preempt two, newest first: the newest frees 1, which is not enough
    two = ([], [1] * n, [r(g, 2, 4) for _ in range(n - 2)] + [1, 1], n - 3, 4)
    # freed, not needed: every running needs 1 and holds several; nothing is free
    holds = ([], [1] * n, [r(g, 3, 5) for _ in range(n)], 0, 4)
    # exactly enough: the running need all the free blocks
    exact_need = [r(g, 1, 2) for _ in range(r(g, 2, 3))]
    exact = ([1], exact_need, [x + 1 for x in exact_need], sum(exact_need), 4)
    # nothing runs, the first waiting needs more than is free
    pool = r(g, 2, 6)
    too_big = ([pool + r(g, 1, 3), 1], [], [], pool, 4)
    return [
        Case(([first, second, third], [], [], free, 4), f"nothing runs: admit first come, first served while the "
             f"blocks fit: {first} + {second} of the {free} free, then {third} more do not fit"),
        Case(overtake, f"first come, first served: the first waiting request ({overtake[0][0]} blocks) does not fit "
             f"in the {left} left, and the one behind it must not overtake it"),
        Case(batch, f"the batch holds at most {limit}: {limit - 1} run, so only 1 more is admitted"),
        Case(behind, f"the running come first: they need {sum(running)} of the {behind[3]} free blocks, so a "
             f"request of {behind[0][0]} does not fit"),
        Case(newest, f"the running need {n} blocks, {n - 1} free: preempt the NEWEST (index {n - 1}), which frees "
             f"{freed[-1]}; and admit nobody in a step that preempts"),
        Case(two, f"preempt two, newest first: index {n - 1} frees 1, still short, then index {n - 2}"),
        Case(holds, "a preempted request gives back the blocks it holds (freed), not the ones it needed this step"),
        Case(exact, f"the running need exactly the {sum(exact_need)} free blocks: nobody is preempted, and nobody "
             "fits in after them"),
        Case(too_big, f"nothing runs and the first waiting request needs {too_big[0][0]} blocks of the {pool} free: "
             "it waits, and the one behind it does not overtake it"),
    ]
