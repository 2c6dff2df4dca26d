# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 13 exercises — serving many users (solutions)
#
# Two exercises on [chapter 13](../13_serving_many_users.ipynb), one for each decision a server makes at every
# step. Its KV cache is a pool of fixed-size blocks, and each sequence keeps a block table, the list of the
# blocks that hold its keys and values: the first exercise finds where a sequence's next token goes, taking a
# free block when the last one is full. The second is the scheduler's step: which running requests must give
# their blocks back when the pool runs short, and how many waiting requests may join.
#
# Each exercise asks for one function; the cell after it checks your function on hidden cases against
# minigpt's own (`minigpt.serving`) and, when one fails, shows that input with the expected and the actual
# answer. In the [exercise notebook](../exercises/13_serving_many_users_exercises.ipynb) each function is a
# stub for you to fill in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/13_serving_many_users_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.serving import check_next_slot, check_schedule

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# A request arrives with a prompt of 21 tokens and asks for up to 40 new ones; it stops after 3, at an
# end-of-text token. A contiguous KV cache has to reserve room for the most the request may ever hold, up
# front. A paged cache takes a block of 16 token slots only when the last one is full.
#
# Before you run the next cell, write down your answers:
#
# 1. How many token slots does the contiguous cache reserve for this request? How many does the paged cache
#    hold once the request has stopped?
# 2. What fraction of the contiguous reservation never held a token?
# 3. Blocks of 1 token would waste no slot at all. What would they cost instead?
#
# The cell prints its answers under the same numbers.

# %%
from minigpt.serving import blocks_needed

prompt_len, max_new_tokens, generated = 21, 40, 3  # the request above
block_size = 16  # the engine's default
reserved = prompt_len + max_new_tokens  # a contiguous cache: the most the request may ever hold
written = prompt_len + generated  # the tokens whose keys and values exist when it stops
paged = blocks_needed(written, block_size) * block_size
print(f"1. contiguous: {reserved} slots reserved; paged: {blocks_needed(written, block_size)} blocks of "
      f"{block_size} = {paged} slots, for {written} tokens")
print(f"2. never used: {reserved - written} of {reserved} contiguous slots ({(reserved - written) / reserved:.0%}); "
      f"paged: {paged - written} of {paged} ({(paged - written) / paged:.0%})")
for size in (block_size, 1):
    print(f"3. blocks of {size:>2}: {blocks_needed(written, size):>2} block ids in the table to look up, "
          f"{blocks_needed(written, size) * size - written} slots empty")
assert paged < reserved  # the paged cache holds fewer slots than the contiguous one reserves

# %% [markdown]
# ## Exercise 1: where the next token goes
#
# A sequence holds `num_tokens` tokens; their keys and values sit in the blocks of its `block_table`, a list
# of block ids in order, `block_size` slots each: token p is in block `block_table[p // block_size]`, at
# offset `p % block_size`. Write `next_slot(block_table, num_tokens, free_blocks, block_size)`: the slot of the
# next token (token number `num_tokens`, counting from 0), as a tuple `(block, offset)`.
#
# - If the last block has room, the token goes there.
# - If it is full (or the table is empty), the token needs a new block: the lowest id in `free_blocks`, the one
#   `BlockAllocator.allocate` would hand out, at offset 0.
# - If it needs a new block and `free_blocks` is empty, return `None`: the pool is full, and the scheduler must
#   preempt someone (Exercise 2).
#
# Leave both lists as they are: the engine takes the block from the allocator and appends it to the table.
#
# *Hints:* the table holds `len(block_table) * block_size` slots. `min(free_blocks)` is the lowest free id.

# %% nbgrader={"grade": false, "grade_id": "next_slot", "locked": false, "schema_version": 3, "solution": true, "task": false}
def next_slot(block_table: list[int], num_tokens: int, free_blocks: list[int],
              block_size: int) -> tuple[int, int] | None:
    """The (block, offset) of token ``num_tokens`` of a sequence, or None when it needs a block and none is free."""
    ### BEGIN SOLUTION
    if num_tokens < len(block_table) * block_size:  # the last block has room (an empty table has none)
        return block_table[num_tokens // block_size], num_tokens % block_size
    if not free_blocks:  # a new block is needed and the pool is full: the scheduler must preempt someone
        return None
    return min(free_blocks), 0  # the lowest free id, as the allocator takes it; the token is its first
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_next_slot", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_next_slot(next_slot)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_next_slot, next_slot)
### END HIDDEN TESTS

# %% [markdown]
# ### Two sequences in one pool
#
# The blocks of a sequence need not be next to each other in the pool. The next cell lets two sequences grow
# in turns, a token each, in a pool of 6 blocks of 4, with minigpt's own `BlockAllocator` and `BlockTable`
# (so it runs before you have finished), and prints each block table at the end.

# %%
from minigpt.serving import BlockAllocator, BlockTable

pool = BlockAllocator(6)
tables = {"A": BlockTable(4), "B": BlockTable(4)}
for _ in range(9):  # each sequence writes 9 tokens, in turns
    for table in tables.values():
        if table.num_tokens == table.capacity:  # the last block is full: take the lowest free one
            table.blocks.append(pool.allocate())
        table.num_tokens += 1
for name, table in tables.items():
    print(f"{name}: {table.num_tokens} tokens in blocks {table.blocks}; its last token is at {table.slot(8)}")
print(f"free blocks left: {pool.num_free}")
assert tables["A"].blocks == [0, 2, 4] and tables["B"].blocks == [1, 3, 5]  # interleaved, not contiguous

# %% [markdown]
# ## Exercise 2: one step of the scheduler
#
# At every step the scheduler decides from plain numbers, which is what `minigpt.serving.schedule` takes:
#
# - `waiting[j]`: the blocks the j-th waiting request needs to start (the queue, first come first);
# - `running[i]`: the blocks the i-th running request needs for this step (oldest first): 1 when its last block
#   is full, else 0 (plus 1 when it must copy a block it shares with another request before writing into it);
# - `freed[i]`: the blocks the i-th running request would give back if it were preempted (those it holds);
# - `num_free` blocks are free, and at most `max_batch_size` requests may run together.
#
# Write `schedule(waiting, running, freed, num_free, max_batch_size)`, returning `(admit, preempt)`:
#
# 1. **Preempt, newest first.** While the running requests need more blocks than are free, preempt the newest
#    (the last index) that is not yet preempted: it no longer needs its blocks for this step, and it gives
#    back `freed[i]`. Never preempt the oldest, index 0 (any one request fits the pool alone).
#    `preempt` lists the indices in the order you preempt them.
# 2. **A step that preempts admits nobody**: memory is short.
# 3. **Otherwise admit, first come, first served**: take waiting requests from the front while the batch
#    (running and admitted) has fewer than `max_batch_size` requests and their blocks fit in what the running
#    leave free. The first one that does not fit stops the admission: nobody behind it overtakes it.
#    `admit` is how many join.
#
# Example: `schedule([2], [1, 1, 1], [3, 2, 4], 1, 4)` is `(0, [2])`: the three running need 3 blocks and 1 is
# free, so the newest (index 2) is preempted, which gives back 4; none joins in that step.
#
# *Hints:* keep two running totals, the blocks needed and the blocks free. `range(len(running) - 1, 0, -1)`
# counts down from the newest and stops before index 0.

# %% nbgrader={"grade": false, "grade_id": "schedule", "locked": false, "schema_version": 3, "solution": true, "task": false}
def schedule(waiting: list[int], running: list[int], freed: list[int], num_free: int,
             max_batch_size: int) -> tuple[int, list[int]]:
    """One step's decision: how many waiting requests to admit, and which running ones to preempt (newest first)."""
    ### BEGIN SOLUTION
    need, free, preempt = sum(running), num_free, []
    for i in range(len(running) - 1, 0, -1):  # the newest first; never index 0, the oldest
        if need <= free:
            break
        preempt.append(i)
        need -= running[i]  # it needs nothing this step any more
        free += freed[i]  # and gives back the blocks it holds
    if preempt:  # memory is short: nobody joins in this step
        return 0, preempt
    admit, batch = 0, len(running)
    for blocks in waiting:  # first come, first served
        if batch >= max_batch_size or need + blocks > free:
            break  # the first that does not fit stops the queue: no overtaking
        admit, batch, need = admit + 1, batch + 1, need + blocks
    return admit, preempt
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_schedule", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_schedule(schedule)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_schedule, schedule)
### END HIDDEN TESTS

# %% [markdown]
# ### What "first come, first served" costs, and what it protects
#
# A toy server with a pool of 8 blocks: a small request (2 blocks, 3 steps) arrives at every step from step 0
# to step 19, and a big one (6 blocks, 3 steps) at step 3, when the small ones hold most of the pool. Each
# takes its blocks when it starts and gives them back when it ends. The next cell serves this queue twice,
# with minigpt's `schedule` (first come, first served) and with a rule that lets any request that fits go
# ahead, and prints how many steps the requests waited.

# %%
from minigpt.serving import schedule as library_schedule

POOL, SMALL_UNTIL, BIG_AT = 8, 20, 3
# (name, arrival step, blocks, steps it runs): the big request first, so that it is ahead in the queue at its step
REQUESTS = [("big", BIG_AT, 6, 3)] + [(f"small {t}", t, 2, 3) for t in range(SMALL_UNTIL)]


def serve(overtake: bool) -> dict[str, int]:
    """How many steps each request waited, first come first served (minigpt's schedule) or overtaking."""
    queue, running, start, t = [], [], {}, 0
    while len(start) < len(REQUESTS):
        running = [(name, blocks, end) for name, blocks, end in running if end > t]  # the finished give back
        queue += [r for r in REQUESTS if r[1] == t]  # this step's arrivals, the big one first at its step
        free = POOL - sum(blocks for _, blocks, _ in running)
        if overtake:  # any request that fits goes, in queue order
            admitted = []
            for request in queue:
                if request[2] <= free:
                    admitted.append(request)
                    free -= request[2]
        else:  # running requests need no new block in this toy: each took all its blocks at the start
            decision = library_schedule([r[2] for r in queue], [0] * len(running), [b for _, b, _ in running],
                                        num_free=free, max_batch_size=POOL)
            admitted = queue[: decision.admit]
        for name, _, blocks, steps in admitted:
            queue = [r for r in queue if r[0] != name]
            start[name] = t
            running.append((name, blocks, t + steps))
        t += 1
    return {name: start[name] - arrival for name, arrival, _, _ in REQUESTS}


for overtake in (False, True):
    waits = serve(overtake)
    small = [wait for name, wait in waits.items() if name != "big"]
    rule = "overtaking" if overtake else "first come, first served"
    print(f"{rule}: the big request waits {waits['big']} step{'s' * (waits['big'] != 1)}; "
          f"the small ones {sum(small) / len(small):.2f} on average, at most {max(small)}")
fcfs, overtaking = serve(False), serve(True)
assert overtaking["big"] >= SMALL_UNTIL - BIG_AT - 2  # overtaken until the stream of small ones ends
assert fcfs["big"] < overtaking["big"] and max(fcfs.values()) < overtaking["big"]

# %% [markdown]
# ## To think about: an open question
#
# Your scheduler serves the queue first come, first served: a request that does not fit stops everyone
# behind it, even small requests that would fit at once. What does that rule cost, what does it protect, and
# would you let small requests overtake?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 13](../13_serving_many_users.ipynb) showed. The
# [solutions notebook](../solutions/13_serving_many_users_solutions.ipynb) ends with one worked answer.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# It costs the small requests some waiting, and it protects the big ones from waiting forever. In the toy
# server above, first come, first served made the small requests wait 0.65 steps on average and at most 3,
# because for a moment they queued behind the big one while it waited for enough blocks to come back. Letting
# any request that fits go ahead took that away (0.00 on average), but the big request then waited 18 steps
# instead of 1: every time blocks came back, a small request took them, and the big one only started when
# the stream of small requests ran out. With a stream that never ends, it would never start. That is
# starvation, and it hits exactly the long prompts, which are often the requests that matter most.
#
# So I would keep first come, first served as the rule, or let small requests overtake only within a bound:
# for example, for as long as the request at the front has waited less than some number of steps, or only
# when what the small request takes cannot delay the front one (it will finish before enough blocks are free
# anyway). Real servers add priorities and per-user limits on top. The measure to watch is not the average
# time to first token but its tail (p95 in chapter 13), because starvation hides in the tail while the
# average looks better.
#
# #### Rubric (1 point)
#
# - **1 point**: names both sides, supported by a number from this notebook or chapter 13: the rule makes small requests wait behind a big one (0.65 steps on average, at most 3, in the toy server), and it prevents starvation (with overtaking the big request waited 18 steps instead of 1, and would wait forever with an endless stream); then takes a position on overtaking with a reason (never, or within a bound such as an age limit).
# - **½ point**: one side only (the cost, or the starvation it prevents), or both sides without any number from the notebooks.
# - **0 points**: says overtaking is always better because the average wait falls, without mentioning the request left behind, or no answer.
