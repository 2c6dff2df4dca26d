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
# # Chapter 13 — Serving many users
#
# Every chapter so far decoded for one person: one prompt (or one batch of prompts, all handed over at once),
# one loop, done. A server is different. Requests arrive one by one, at times nobody chose, and each wants a
# different number of tokens. How do we keep the model busy for all of them, without making anyone wait for
# somebody else's long answer, and without running out of memory for their KV caches (chapter 7)?
#
# This chapter builds the two ideas every modern serving engine rests on, by hand first, then from
# `minigpt.serving`:
#
# - **continuous batching** (iteration-level scheduling): at *every* step, finished requests leave the batch
#   and waiting ones join it;
# - **a paged KV cache**: the cache is one pool of small fixed-size blocks, and each sequence keeps a list of
#   the blocks it uses (its block table), so memory is taken as the tokens come and given back the moment a
#   request ends.
#
# Then it measures both on the shipped model, and ends with what to do when one machine is not enough.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
seed = 0  # the traces: arrival times, prompt and answer lengths, each request's sampling seed
num_requests = 8  # requests in the trace that is served and measured (Steps 5-7)
max_batch_size = 4  # sequences decoded together at most
block_size = 4  # tokens per KV block
rounds = 3  # how many times each policy serves the trace in Step 6 (at least 2, for a spread)

# %%
# %matplotlib inline
import copy
import dataclasses
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display
from matplotlib.patches import Patch

import minigpt
from minigpt.export import export_hf
from minigpt.kv_cache import KVCache
from minigpt.logits import LogitsSettings
from minigpt.metrics import in_turns, separated, spread
from minigpt.serving import (
    BlockAllocator,
    BlockTable,
    Engine,
    blocks_needed,
    make_trace,
    paged_attention,
    read_blocks,
    schedule,
)
from minigpt.tokenizer import encode
from minigpt.viz import DROPPED, OKABE_ITO, save_figure

# the numbers this chapter pins (asserts under `if default_run:`) are those of its default inputs
default_run = (seed, num_requests, max_batch_size, block_size, rounds) == (0, 8, 4, 4, 3)
torch.manual_seed(seed)
torch.set_num_threads(1)  # the timed sections compare two policies on the same one core
model = minigpt.load_model("shakespeare")
c = model.config
print(f"{model.num_parameters():,} parameters: {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, "
      f"context {c.block_size} tokens")

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: why a server cannot just batch
#
# Chapter 5 decoded a batch of prompts together: one forward pass gives every row its next token, and the
# weights are read once for all of them (chapter 12 measured what that saves). A server could do the same:
# collect a few requests, decode them as one batch, return the answers, take the next few. That is
# **static batching**. Here is a small trace of requests, counted in decode steps: when each arrives, and
# how many tokens it wants.

# %%
rng = torch.Generator().manual_seed(seed)
toy_requests = 8
toy_arrivals = torch.randint(0, 12, (toy_requests,), generator=rng).sort().values.tolist()  # in steps
toy_lengths = torch.randint(2, 17, (toy_requests,), generator=rng).tolist()  # tokens each request wants
for r, (arrival, length) in enumerate(zip(toy_arrivals, toy_lengths)):
    print(f"request {r}: arrives at step {arrival:2}, wants {length:2} tokens")

# %% [markdown]
# Say one step gives every sequence in the batch one token, and the batch holds at most `max_batch_size`
# sequences. Static batching fills an empty batch with the requests that are waiting (first come, first
# served), and takes no one else until its *longest* request is done. **Continuous batching** decides at
# every step instead: a request that has finished leaves at once, and a waiting one takes its place. One
# function plays both, step by step:

# %%
def simulate(arrivals, lengths, batch_size, policy):
    """Each request's [first step, step it is done, step its slot is given back]: one token per step each."""
    spans, running, waiting, step = {}, [], list(range(len(arrivals))), 0
    while waiting or running:
        if policy == "continuous" or not running:  # static batching admits only into an empty batch
            while waiting and arrivals[waiting[0]] <= step and len(running) < batch_size:
                r = waiting.pop(0)
                running.append(r)
                spans[r] = [step, None, None]
        step += 1  # one forward pass: every running request that is not done gets a token
        for r in running:
            if spans[r][1] is None and step - spans[r][0] == lengths[r]:
                spans[r][1] = step
        done = [r for r in running if spans[r][1] is not None]
        if policy == "continuous" or len(done) == len(running):  # static: the slots come back together
            for r in done:
                spans[r][2] = step
                running.remove(r)
    return spans


toy = {policy: simulate(toy_arrivals, toy_lengths, max_batch_size, policy) for policy in ("static", "continuous")}
for policy, spans in toy.items():
    busy = sum(end - start for start, end, _ in spans.values())  # slot-steps that made a token
    held = sum(release - start for start, _, release in spans.values())  # slot-steps a request held its slot
    wait = [spans[r][0] - toy_arrivals[r] for r in spans]
    last = max(end for _, end, _ in spans.values())
    print(f"{policy:>10}: all done after step {last:2}; slots held {held:3} slot-steps for {busy} tokens "
          f"({held - busy:2} idle); waits before the first token: {sorted(wait)}")
    assert busy == sum(toy_lengths)  # both make every token asked for
toy_last = {policy: max(end for _, end, _ in spans.values()) for policy, spans in toy.items()}
assert all(end == release for _, end, release in toy["continuous"].values())  # never holds a finished slot

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, sharey=True)
for ax, (policy, spans) in zip(axes, toy.items()):
    for r, (start, end, release) in spans.items():
        ax.barh(r, start - toy_arrivals[r], left=toy_arrivals[r], color=DROPPED, height=0.6)  # waiting
        ax.barh(r, end - start, left=start, color=OKABE_ITO["blue"], height=0.6)  # making tokens
        if release > end:  # done, but its slot is held until the batch ends
            ax.barh(r, release - end, left=end, color="white", edgecolor=OKABE_ITO["vermillion"], hatch="///",
                    height=0.6)
    ax.set_title(f"{policy} batching: all done after step {toy_last[policy]}")
    ax.set_xlabel("decode step")
axes[0].set_ylabel("request")
axes[0].invert_yaxis()
fig.legend(handles=[Patch(color=DROPPED, label="waiting"), Patch(color=OKABE_ITO["blue"], label="decoding"),
                        Patch(facecolor="white", edgecolor=OKABE_ITO["vermillion"], hatch="///",
                              label="finished, slot held")], loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0))
fig.suptitle(f"The same {toy_requests} requests, at most {max_batch_size} decoded at once")
fig.tight_layout(rect=(0, 0.08, 1, 1))
save_figure(fig, "13_static_vs_continuous")
plt.show()

# %% [markdown]
# In static batching, a request that wants few tokens finishes early and then sits in the batch, its slot
# held (hatched), until the longest request of its batch is done; the requests behind it wait meanwhile
# (grey). Continuous batching gives the slot away at once. The scheduling is the whole difference: each
# request makes the same tokens in both.

# %%
static_idle = sum(release - end for _, end, release in toy["static"].values())
if default_run:
    assert toy_last["continuous"] < toy_last["static"] and static_idle > 0
display(Markdown(f"On this trace continuous batching is done after step {toy_last['continuous']}, static "
                 f"batching after step {toy_last['static']}."))

# %% [markdown]
# ## Step 2: a paged KV cache, by hand
#
# Continuous batching needs one more thing: memory for each request's KV cache, taken when it joins and given
# back when it leaves. Chapter 7's `KVCache` allocates one buffer per batch, `max_len` positions for every
# row, up front. A server that did that per request would have to reserve, for each one, room for the
# longest answer it *might* give, and much of it would stay empty (Step 7 counts how much).
#
# vLLM's answer is the one operating systems give for a process's memory: pages. Cut the cache into
# **blocks** of `block_size` positions, all in one **pool**; hand a sequence a block when its last block is
# full, and keep, per sequence, a **block table**: the ids of its blocks, in order. The blocks of one
# sequence need not sit side by side.
#
# First the allocator. It only needs to know, for each block, how many sequences use it (Step 3 lets two
# sequences share a block); a count of 0 means the block is free.

# %%
class ToyAllocator:
    """A pool of ``num_blocks`` KV blocks: hands out the lowest free id; counts the sequences using each block."""

    def __init__(self, num_blocks):
        self.refcounts = [0] * num_blocks  # 0: free

    def allocate(self):
        if self.num_free == 0:
            raise RuntimeError("the pool is full")
        block = self.refcounts.index(0)  # the lowest free id
        self.refcounts[block] = 1
        return block

    def share(self, block):
        self.refcounts[block] += 1  # one more sequence reads this block

    def free(self, block):
        self.refcounts[block] -= 1  # back in the pool when no sequence uses it any more

    @property
    def num_free(self):
        return self.refcounts.count(0)


def blocks_for(num_tokens, block_size):
    return -(-num_tokens // block_size)  # ceil: a partly filled last block is still a whole block


def show_pool(allocator, tables):
    """One letter per block: the sequence that holds it ('.' free)."""
    owner = ["."] * len(allocator.refcounts)
    for name, table in tables.items():
        for block in table:
            owner[block] = name
    print("  block:", " ".join(f"{b:>2}" for b in range(len(owner))), " | free:", allocator.num_free)
    print("  owner:", " ".join(f"{o:>2}" for o in owner), " |", "  ".join(f"{n}: {t}" for n, t in tables.items()))


pool = ToyAllocator(8)
tables = {}
for name, tokens in (("A", 10), ("B", 5)):
    tables[name] = [pool.allocate() for _ in range(blocks_for(tokens, block_size))]
print(f"A has {10} tokens, B has {5}, in blocks of {block_size} positions:")
show_pool(pool, tables)
for block in tables.pop("A"):  # A is done: its blocks go back to the pool
    pool.free(block)
tables["C"] = [pool.allocate() for _ in range(blocks_for(13, block_size))]
print(f"A finished; C arrives with {13} tokens and gets A's old blocks, then the next free one:")
show_pool(pool, tables)
b_tokens = 5
while blocks_for(b_tokens + 1, block_size) == len(tables["B"]):  # B decodes while its blocks have room
    b_tokens += 1
tables["B"].append(pool.allocate())  # its next token starts a new block
print(f"B decoded to {b_tokens} tokens, and the next one needs a new block, wherever one is free:")
show_pool(pool, tables)

# %% [markdown]
# Where does position p of a sequence live? In block `table[p // block_size]`, at offset `p % block_size`:

# %%
def slot(table, position, block_size):
    return table[position // block_size], position % block_size


print("B's positions:", {p: slot(tables["B"], p, block_size) for p in range(0, len(tables["B"]) * block_size, 3)})

# %% [markdown]
# Now the keys and values themselves. The pool holds, for every layer, a tensor of shape
# (`num_blocks`, `n_head`, `block_size`, `head_size`). A `PagedCache` is one sequence's view of it: it has
# the three things the model asks a cache for (chapter 7: `update`, `advance`, `length`), so the model runs
# on it unchanged. `update` writes the new positions into their slots, then *gathers* all the sequence's
# keys and values through the block table into one (1, nh, T, hs) tensor, and attention proceeds exactly
# as before.

# %%
class PagedCache:
    """One sequence's keys and values, kept in the blocks of a shared pool through its block table."""

    def __init__(self, pool_keys, pool_values, allocator, block_size):
        self.pool_keys, self.pool_values = pool_keys, pool_values  # per layer: (num_blocks, nh, block_size, hs)
        self.allocator, self.block_size = allocator, block_size
        self.table = []  # block ids, in the order of the positions they hold
        self.length = 0  # positions written

    def make_room(self, start, end):
        """Give the sequence blocks for positions up to ``end`` (those from ``start`` on are about to be written)."""
        while len(self.table) * self.block_size < end:
            self.table.append(self.allocator.allocate())

    def slots(self, start, end):
        """Blocks and offsets of positions start .. end - 1: two (end - start,) tensors."""
        positions = torch.arange(start, end)
        return torch.tensor(self.table)[positions // self.block_size], positions % self.block_size

    def update(self, layer, k, v):  # k, v: (1, nh, T_new, hs)
        self.make_room(self.length, self.length + k.size(2))
        blocks, offsets = self.slots(self.length, self.length + k.size(2))
        self.pool_keys[layer][blocks, :, offsets] = k[0].transpose(0, 1)  # (T_new, nh, hs): one slot each
        self.pool_values[layer][blocks, :, offsets] = v[0].transpose(0, 1)
        blocks, offsets = self.slots(0, self.length + k.size(2))  # every position so far
        keys = self.pool_keys[layer][blocks, :, offsets].transpose(0, 1)[None]  # gathered: (1, nh, T, hs)
        values = self.pool_values[layer][blocks, :, offsets].transpose(0, 1)[None]
        return keys, values

    def advance(self, n):
        self.length += n


num_blocks, head_size = 32, c.n_embd // c.n_head
pool_keys = [torch.zeros(num_blocks, c.n_head, block_size, head_size) for _ in range(c.n_layer)]
pool_values = [torch.zeros(num_blocks, c.n_head, block_size, head_size) for _ in range(c.n_layer)]
allocator = ToyAllocator(num_blocks)
print(f"the pool: {c.n_layer} layers x 2 (keys, values) x {tuple(pool_keys[0].shape)}, "
      f"{sum(t.numel() for t in pool_keys + pool_values) * 4 / 2**20:.2f} MiB")

# %% [markdown]
# Two sequences share that pool and take turns: first both prompts, then one token each, alternately, so
# their blocks interleave. Each token is the one greedy decoding picked (`minigpt.generate`), fed to the
# model as the next input, and each step's logits are compared with those of chapter 7's contiguous
# `KVCache`, one per sequence:

# %%
prompts = ["ROMEO:\nI", "KING:\nMy lord, the queen"]
texts = [minigpt.generate(model, p, max_new_tokens=12).ids[0] for p in prompts]  # prompt + 12 greedy tokens
paged = [PagedCache(pool_keys, pool_values, allocator, block_size) for _ in prompts]
contiguous = [KVCache.for_model(model, batch_size=1) for _ in prompts]
worst = 0.0
with torch.no_grad():
    lengths = [len(encode(p)) for p in prompts]
    feeds = [[(0, n)] + [(p, p + 1) for p in range(n, len(t) - 1)] for n, t in zip(lengths, texts)]
    for step in range(max(map(len, feeds))):  # the prompt first, then one token per step, the two in turns
        for i, feed in enumerate(feeds):
            if step < len(feed):
                start, end = feed[step]
                x = texts[i][None, start:end]  # (1, T_new)
                ours, theirs = model(x, kv_cache=paged[i]), model(x, kv_cache=contiguous[i])  # (1, T_new, V)
                worst = max(worst, (ours - theirs).abs().max().item())
assert worst < 1e-5
for name, cache in zip("XY", paged):
    print(f"sequence {name}: {cache.length} positions in blocks {cache.table}")
print("every step's logits: paged == contiguous KVCache (to within 1e-5)")
assert sorted(paged[0].table + paged[1].table) == list(range(len(paged[0].table) + len(paged[1].table)))

# %% [markdown]
# The two sequences' blocks interleave in the pool (neither table is a run of consecutive ids), and the
# model cannot tell: the gather puts every key and value back in position order before attention reads them.
# Which blocks a sequence holds is bookkeeping; what attention computes does not change.

# %% [markdown]
# ### The library's
#
# `minigpt.serving` has the same pieces: `BlockAllocator` (with `refcount(block)` and `num_free`),
# `blocks_needed` and `BlockTable` (a sequence's block ids and how many of its tokens are written, with
# `slot(position)`). Replayed on the same requests, its allocator hands out the same blocks:

# %%
ours, theirs = ToyAllocator(8), BlockAllocator(8)
history = {}
for event, name, tokens in (("arrive", "A", 10), ("arrive", "B", 5), ("leave", "A", 0), ("arrive", "C", 13)):
    for allocator, tag in ((ours, "ours"), (theirs, "library")):
        if event == "arrive":
            history[tag, name] = [allocator.allocate() for _ in range(blocks_for(tokens, block_size))]
        else:
            for block in history.pop((tag, name)):
                allocator.free(block)
assert all(blocks_needed(n, block_size) == blocks_for(n, block_size) for n in range(50))
for name in "BC":
    assert history["ours", name] == history["library", name]
    table = BlockTable(block_size, blocks=history["library", name])
    assert all(table.slot(p) == slot(history["ours", name], p, block_size) for p in range(table.capacity))
    print(f"{name}: blocks {history['library', name]} (ours and the library's), slots equal")
assert ours.num_free == theirs.num_free

# %% [markdown]
# Its attention is `paged_attention(q, keys_pool, values_pool, tables, mask)`: queries of several sequences at
# once, each reading its own blocks (`read_blocks` gathers them; a shorter table is padded, and the mask hides
# what lies past a sequence's length). Here it is on our pool from above, with both sequences X and Y in one
# batch and a random query per sequence, against plain attention over each one's contiguous `KVCache`:

# %%
tables = [cache.table for cache in paged]
width = max(map(len, tables))
padded = torch.tensor([t + [0] * (width - len(t)) for t in tables])  # (2, width): block 0 as filler
lengths = [cache.length for cache in paged]
mask = (torch.arange(width * block_size)[None, :] < torch.tensor(lengths)[:, None]).view(2, 1, 1, -1)  # (2,1,1,K)
q = torch.randn(2, c.n_head, 1, head_size, generator=torch.Generator().manual_seed(seed))  # (2, nh, 1, hs)
worst = 0.0
for layer in range(c.n_layer):
    out = paged_attention(q, pool_keys[layer], pool_values[layer], padded, mask)  # (2, nh, 1, hs)
    for i, (cache, n) in enumerate(zip(contiguous, lengths)):
        K, V = cache.keys[layer][0, :, :n], cache.values[layer][0, :, :n]  # (nh, n, hs): chapter 7's cache
        plain = torch.softmax(q[i] @ K.transpose(-2, -1) / math.sqrt(head_size), dim=-1) @ V  # (nh, 1, hs)
        worst = max(worst, (out[i] - plain).abs().max().item())
        assert torch.equal(read_blocks(pool_keys[layer], padded)[i, :, :n], K)  # the gather is exact
assert worst < 1e-5
print(f"paged_attention over tables {tables}: == attention over the contiguous caches (to within 1e-5)")

# %% [markdown]
# The library's `Engine` keeps the pool (per layer, keys and values of shape (`num_blocks`, `n_head`,
# `block_size`, `head_size`)) and runs the model itself: one step feeds every running sequence its new
# tokens (a whole prompt for a newcomer, one token for the others) in one padded batch, writes each new key
# and value into its slot, and reads every sequence's keys and values back through its block table, as
# `PagedCache` did. After one step over the two prompts of above, the keys it holds, read through each
# sequence's table, are the contiguous cache's:

# %%
engine = Engine(model, num_blocks=num_blocks, block_size=block_size)
for text in prompts:
    engine.add_request(text, max_new_tokens=12)
record = engine.step()  # both prompts in one pass; each gets its first token
print("pool, layer 0:", tuple(engine.keys[0].shape), f"| after one step, {len(record.tokens)} requests have a token")
worst = 0.0
for seq, cache in zip(engine.running, contiguous):  # the requests running, oldest first
    table, n = seq.table, seq.table.num_tokens
    for layer in range(c.n_layer):
        gathered = read_blocks(engine.keys[layer], torch.tensor([table.blocks]))[0, :, :n]  # (nh, n, hs)
        worst = max(worst, (gathered - cache.keys[layer][0, :, :n]).abs().max().item())
    print(f"request {seq.id}: {n} positions in blocks {table.blocks}")
assert worst < 1e-4
print("its keys, gathered through the block tables == the contiguous KVCache's (to within 1e-4)")

# %% [markdown]
# ## Step 3: sharing a prompt's blocks (copy on write)
#
# Servers often put the same text in front of every request: a system prompt, the instructions of a chat
# assistant, a few examples. Its keys and values are the same for every request (Step 2 of chapter 7: a
# position depends only on the tokens up to it), so why store them more than once? With block tables, two
# sequences can list the *same* block; the allocator counts its users. Only a block that is still being
# written needs care: the shared prompt's last block is partly filled, and each sequence wants to write its
# own next tokens into it. So a sequence that is about to write into a block it shares first **copies** it
# to a block of its own (copy on write, as an operating system does after `fork`).

# %%
class SharedPagedCache(PagedCache):
    """A PagedCache that can start from another sequence's blocks, and copies a shared block before writing."""

    def fork(self, parent):
        """Start where ``parent`` is: list its blocks (shared, not copied) and its length."""
        for block in parent.table:
            self.allocator.share(block)
        self.table, self.length = list(parent.table), parent.length

    def make_room(self, start, end):
        for i in range(start // self.block_size, len(self.table)):  # the blocks this write lands in
            if self.allocator.refcounts[self.table[i]] > 1:  # someone else reads it: write into a copy
                self.table[i] = self.copy(self.table[i])
        super().make_room(start, end)

    def copy(self, block):
        new = self.allocator.allocate()
        for pool in self.pool_keys + self.pool_values:  # every layer at once (the model writes layer 0 first)
            pool[new] = pool[block]
        self.allocator.free(block)  # one user fewer for the old one
        return new


system_prompt = "FIRST LORD.\nWhat news, sir?\n"
questions = ["SECOND LORD.\nI", "THIRD LORD.\nMy liege,"]
allocator = ToyAllocator(num_blocks)  # a fresh pool for this demonstration
system = SharedPagedCache(pool_keys, pool_values, allocator, block_size)
system_ids = torch.tensor([encode(system_prompt)])  # (1, P)
with torch.no_grad():
    model(system_ids, kv_cache=system)  # the system prompt's keys and values, once
print(f"system prompt: {system.length} tokens in blocks {system.table}, the last one "
      f"{'full' if system.length % block_size == 0 else f'holding {system.length % block_size} of {block_size}'}")
users = [SharedPagedCache(pool_keys, pool_values, allocator, block_size) for _ in questions]
for user in users:
    user.fork(system)
print("both users forked it: refcounts", {b: allocator.refcounts[b] for b in system.table})
worst = 0.0
with torch.no_grad():
    for user, question in zip(users, questions):
        full = torch.tensor([encode(system_prompt + question)])  # (1, P + Q): the whole text, for the check
        assert torch.equal(full[:, : system.length], system_ids)  # the question starts a new token
        ours = model(full[:, system.length :], kv_cache=user)  # only the question is computed
        theirs = model(full, kv_cache=KVCache.for_model(model, batch_size=1))[:, system.length :]
        worst = max(worst, (ours - theirs).abs().max().item())
assert worst < 1e-4  # a pass over the question alone rounds differently from one over the whole text
for name, user in zip(("user 1", "user 2"), users):
    print(f"{name}: {user.length} positions in blocks {user.table}")
print("refcounts:", {b: n for b, n in enumerate(allocator.refcounts) if n})
print("each user's logits == a contiguous cache over the whole text (to within 1e-4)")
shared_blocks = [b for b in users[0].table if b in users[1].table]
assert shared_blocks == system.table[: system.length // block_size]  # the full blocks stay shared
assert all(allocator.refcounts[b] == 3 for b in shared_blocks)  # read by the system prompt and both users
in_use = sum(n > 0 for n in allocator.refcounts)
alone = sum(blocks_for(cache.length, block_size) for cache in (system, *users))
print(f"blocks in use: {in_use}; with a copy of the system prompt each: {alone}")
assert in_use == alone - 2 * (system.length // block_size)

# %% [markdown]
# The system prompt's full blocks are listed by all three tables (refcount 3) and stored once. Its last,
# partly filled block was shared too, until each user wrote its first token into it: each then took a copy
# (user 1 and user 2 hold different blocks in that place), and the original stayed as the system prompt's.
# The logits are those of a contiguous cache over the whole text, so sharing changes nothing but the memory.
#
# The library's `Engine(..., share_prefixes=True)` (the default) does this without being told which text
# is shared: after a prompt's pass it files each of the prompt's blocks under the tokens up to that block's
# end, and a later prompt that starts with the same tokens takes those blocks instead of computing them.
# Sent the system prompt twice, the second request shares all its blocks, the partly filled last one
# included, and copies that one before writing its own tokens into it:

# %%
engine = Engine(model, num_blocks=num_blocks, block_size=block_size)
first = engine.add_request(system_prompt, max_new_tokens=5)
engine.step()  # the first request's prompt pass fills its blocks, and files them
second = engine.add_request(system_prompt, max_new_tokens=5)
while engine.has_work:
    engine.step()
print(f"blocks taken from the prefix cache: {engine.num_shared}, copied on write: {engine.num_copied}")
assert engine.num_shared >= (len(encode(system_prompt)) - 1) // block_size  # at least its full blocks
if default_run:  # blocks of 4: the last block, partly filled, is shared too, and copied
    assert engine.num_shared == blocks_for(len(encode(system_prompt)), block_size) and engine.num_copied == 1


# %% [markdown]
# ## Step 4: the scheduler, one step by hand
#
# Now the decision a continuous-batching server takes before every forward pass. It needs only numbers of
# blocks:
#
# - `running[i]`: how many new blocks the i-th running request (oldest first) needs for this step: one if
#   its last block is full, else none (plus one for a shared block it must copy before writing);
# - `freed[i]`: how many blocks it would give back if it stopped now (the ones it holds alone);
# - `waiting[j]`: how many blocks the j-th waiting request needs to start (its prompt);
# - `num_free`: free blocks in the pool.
#
# The running requests come first: they hold work already done. If they need more blocks than are free, the
# pool is full, and the newest running request is **preempted**: its blocks go back to the pool, and the
# request goes back to the front of the queue. When it is admitted again, its prompt and the tokens it had
# already made are run again in one pass, to rebuild its keys and values (**recompute**; the other choice,
# *swap*, copies its blocks out to slower memory and back, which pays off when recomputing is expensive and
# spare memory is at hand: here the whole pool already lives in the CPU's memory, and a prompt pass is cheap).
# The newest goes first because it has done the least work; the oldest is never preempted, so the queue
# always moves. A step that had to preempt admits nobody. Otherwise waiting requests are admitted in arrival
# order, while the batch has room and their blocks fit; the first that does not fit stops the admission, so
# a long prompt is not overtaken forever by short ones.

# %%
def schedule_by_hand(waiting, running, freed, num_free, max_batch_size):
    """(how many waiting requests to admit, which running ones to preempt) for one step."""
    need, free, preempt = sum(running), num_free, []
    for i in reversed(range(1, len(running))):  # the newest first; the oldest (index 0) never
        if need <= free:
            break
        preempt.append(i)
        need, free = need - running[i], free + freed[i]  # it needs nothing now, and gives its blocks back
    if preempt:
        return 0, preempt  # memory is short: admit nobody
    admit = 0
    for blocks in waiting:  # first come, first served
        if len(running) + admit >= max_batch_size or need + blocks > free:
            break
        admit, need = admit + 1, need + blocks
    return admit, preempt


situations = {
    "room for all": dict(waiting=[3, 2], running=[1, 0], freed=[5, 4], num_free=8),
    "the pool fills": dict(waiting=[3, 6, 1], running=[1, 0], freed=[5, 4], num_free=8),
    "the batch is full": dict(waiting=[1], running=[0, 1, 0, 0], freed=[5, 4, 2, 3], num_free=8),
    "preempt": dict(waiting=[2], running=[1, 1, 1], freed=[6, 3, 2], num_free=1),
}
for name, numbers in situations.items():
    admit, preempt = schedule_by_hand(**numbers, max_batch_size=4)
    print(f"{name:>17}: {numbers} -> admit the first {admit} waiting, preempt running {preempt}")

# %% [markdown]
# "The pool fills": the first waiting request fits, the second (6 blocks) does not, and the third, which
# would fit, is not let past it. "Preempt": three running requests need a block each and one is free, so the
# newest gives back its 2 blocks. The library's `schedule` takes the same numbers and returns a `Schedule`;
# it agrees with ours on these and on thousands of random situations:

# %%
for numbers in situations.values():
    decision = schedule(**numbers, max_batch_size=4)
    assert (decision.admit, decision.preempt) == schedule_by_hand(**numbers, max_batch_size=4)
print(decision)
rng = torch.Generator().manual_seed(seed)
for _ in range(3000):
    running_now = int(torch.randint(0, 5, (1,), generator=rng))  # at most max_batch_size run
    waiting_now = int(torch.randint(0, 6, (1,), generator=rng))
    numbers = dict(waiting=torch.randint(0, 5, (waiting_now,), generator=rng).tolist(),
                   running=torch.randint(0, 2, (running_now,), generator=rng).tolist(),
                   freed=torch.randint(1, 6, (running_now,), generator=rng).tolist(),
                   num_free=int(torch.randint(0, 8, (1,), generator=rng)))
    decision = schedule(**numbers, max_batch_size=4)
    assert (decision.admit, decision.preempt) == schedule_by_hand(**numbers, max_batch_size=4), numbers
print("schedule == schedule_by_hand on 3,000 random situations")

# %% [markdown]
# `Engine.step` asks `schedule` for its decision, applies it, runs one forward pass over every running sequence and
# retires the ones that are done. Here it serves a trace from `make_trace`: `num_requests` requests of random tokens,
# arriving at random times (a Poisson process), each with a random prompt length and a random number of tokens to make.
# (`Engine.run` plays a trace against the clock; here we add each request when its arrival time is reached *as if* every
# step took the same time, `step_seconds=0.03`, so that the steps are the same on every machine.) The pool is kept
# small, twice the blocks the largest request needs, so that it fills:

# %%
trace_shape = dict(rate=20.0, prompt_len=(4, 24), new_tokens=(4, 24))  # 20 arrivals/s; lengths uniform in these
trace = make_trace(num_requests, seed=seed, **trace_shape)
for r, request in enumerate(trace):
    print(f"request {r}: arrives at {request.arrival:.3f} s, a {len(request.prompt):2}-token prompt, "
          f"{request.max_new_tokens:2} new tokens")


def serve_in_steps(engine, trace, step_seconds=0.03):
    """Serve ``trace``, adding each request once len(steps) * step_seconds reaches its arrival; the steps."""
    pending, steps, stored = list(trace), [], []
    while pending or engine.has_work:
        while pending and pending[0].arrival <= len(steps) * step_seconds:
            r = pending.pop(0)
            engine.add_request(r.prompt, max_new_tokens=r.max_new_tokens, logits=r.logits, do_sample=r.do_sample,
                               seed=r.seed, eos_token_id=r.eos_token_id, arrival=r.arrival)
        steps.append(engine.step())  # with nothing to do, a step only lets the time pass
        # the tokens whose keys and values the step's pass held: every one of its requests' but the newest
        results = [engine.results[r] for r in steps[-1].tokens]
        stored.append(sum(len(result.prompt) + len(result.tokens) - 1 for result in results))
    return steps, stored


small_pool = 2 * max(blocks_needed(len(r.prompt) + r.max_new_tokens, block_size) for r in trace)
engine = Engine(model, num_blocks=small_pool, block_size=block_size, max_batch_size=max_batch_size)
steps, _ = serve_in_steps(engine, trace)
print(f"a pool of {small_pool} blocks; {len(steps)} steps:")
for i, record in enumerate(steps):
    if record.admitted or record.preempted or record.finished:
        print(f"  step {i:3}: admitted {record.admitted}, preempted {record.preempted}, finished "
              f"{record.finished}; {len(record.tokens)} made a token, with {record.blocks_in_use:2} blocks in use")
preemptions = sum(len(record.preempted) for record in steps)
assert all(len(engine.results[r].tokens) == request.max_new_tokens for r, request in enumerate(trace))
assert max(record.blocks_in_use for record in steps) <= small_pool
if default_run:
    assert preemptions > 0
print(f"{preemptions} preemptions; every request made all its tokens")

# %% [markdown]
# ## Step 5: the same tokens as decoding alone
#
# Batching, paging, preempting and sharing are bookkeeping: each request must get exactly the tokens that
# `minigpt.generate` gives it alone. For greedy decoding that is a matter of the logits. For sampling it
# also needs the random numbers: each request carries its own `torch.Generator`, seeded from its own seed,
# and the engine draws its tokens from it in the same order as `generate` does (`do_sample=True, seed=...`),
# whatever else shares the batch.
#
# A batched pass and a pass alone may round the last bits differently (chapter 9), and an argmax can flip on
# a near-tie; the check runs in float64, where those differences are far too small to flip one. The trace
# mixes greedy and sampled requests (temperature 0.8 and top-k 50), stops some at a newline
# (`eos_token_id=198`), starts every prompt with the same system prompt (so that blocks are shared and copied
# on write), and uses the small pool again (so that requests are preempted and recomputed):

# %%
model64 = copy.deepcopy(model).double()
system_ids = encode("FIRST LORD.\nWhat news, sir?\n")
mixed = []
for r, request in enumerate(make_trace(num_requests, seed=seed, system_prompt=system_ids, **trace_shape)):
    sampled = r % 2 == 1
    mixed.append(dataclasses.replace(
        request, do_sample=sampled, seed=seed + r, eos_token_id=198 if r % 3 == 0 else None,
        logits=LogitsSettings(temperature=0.8, top_k=50) if sampled else None))
engine = Engine(model64, num_blocks=small_pool, block_size=block_size, max_batch_size=max_batch_size)
steps, _ = serve_in_steps(engine, mixed)
print("request  sampled  stopped by  preempted  tokens  == generate alone")
for r, request in enumerate(mixed):
    alone = minigpt.generate(model64, torch.tensor([request.prompt]), max_new_tokens=request.max_new_tokens,
                             do_sample=request.do_sample, seed=request.seed, eos_token_id=request.eos_token_id,
                             logits=request.logits).new_tokens[0]
    result = engine.results[r]
    assert result.tokens == alone
    print(f"{r:7}  {str(request.do_sample):>7}  {str(result.stopped_by):>10}  {result.preemptions:9}  "
          f"{len(result.tokens):6}  True")
print(f"blocks shared from the prefix cache: {engine.num_shared}, copied on write: {engine.num_copied}")
assert engine.num_shared > 0
del model64

# %% [markdown]
# The requests with `eos_token_id=198` stop at the first newline the model writes ("eos" above). Every token, greedy or
# sampled, preempted or not, is the one `generate` makes alone. (The shared blocks are the system prompt's full ones;
# its last block also holds each request's own first tokens, so it is not shared. The engine copies on write when a
# whole prompt is shared, as Step 3 showed.)
#
# ## Step 6: measured: static against continuous batching
#
# Now the same greedy trace of Step 4, played against the clock (`Engine.run`): each request is added
# when its arrival time comes. The pool is large enough for every request at once (no preemption), so
# the only difference is the policy: `policy="static"` admits only into an empty batch, `"continuous"` at
# every step. What a server is judged by, per run:
#
# - **throughput**: tokens generated per second, from the first arrival to the last token;
# - **TTFT** (time to first token): from a request's arrival to its first token: how long a user waits
#   before anything appears;
# - **TPOT** (time per output token): the time between a request's later tokens, on average: how fast the
#   text streams once it has started.
#
# For TTFT and TPOT a run gives one number per request; we look at the median (p50) and at the 95th
# percentile (p95), the slow requests. The two policies take turns, `rounds` times each.

# %%
big_pool = sum(blocks_needed(len(r.prompt) + r.max_new_tokens, block_size) for r in trace)  # all at once


def serve(policy):
    engine = Engine(model, num_blocks=big_pool, block_size=block_size, max_batch_size=max_batch_size, policy=policy)
    return engine.run(trace)


# no warm-up runs: the engine has served this trace in Step 4 already
reports = in_turns({policy: lambda policy=policy: serve(policy) for policy in ("static", "continuous")}, rounds,
                   warm_up=False)
measures = {  # name -> (unit scale, unit, what a report gives)
    "throughput": (1, "tokens/s", lambda report: report.throughput),
    "TTFT p50": (1000, "ms", lambda report: report.ttft(0.5)),
    "TTFT p95": (1000, "ms", lambda report: report.ttft(0.95)),
    "TPOT p50": (1000, "ms", lambda report: report.tpot(0.5)),
    "TPOT p95": (1000, "ms", lambda report: report.tpot(0.95)),
}
spreads = {(policy, name): spread([scale * get(report) for report in runs])
           for policy, runs in reports.items() for name, (scale, _, get) in measures.items()}
for runs in reports.values():
    assert all(report.num_generated == sum(r.max_new_tokens for r in trace) for report in runs)  # every token
    assert all(report.ttft(0.95) >= report.ttft(0.5) > 0 and report.tpot(0.95) >= report.tpot(0.5) > 0
               for report in runs)
print(f"both policies made all {sum(r.max_new_tokens for r in trace)} tokens, in each of {rounds} runs")

# %%
# NBVAL_IGNORE_OUTPUT
# why: times measured on this machine, never the same twice; the verdicts come from `separated`
print(f"mean ± standard error over {rounds} runs (min-max)")
verdicts = []
for name, (_, unit, _) in measures.items():
    static, cont = spreads["static", name], spreads["continuous", name]
    print(f"{name:>10}: static {static.mean:7.1f} ± {static.stderr:5.1f} ({static.low:.1f}-{static.high:.1f}), "
          f"continuous {cont.mean:7.1f} ± {cont.stderr:5.1f} ({cont.low:.1f}-{cont.high:.1f}) {unit}")
    if separated(static, cont):
        better = (cont.mean > static.mean) == (name == "throughput")  # more tokens/s, fewer ms
        verdicts.append(f"{name}: {'continuous' if better else 'static'} batching is better here "
                        f"(continuous at {cont.mean / static.mean:.2f}x static's)")
    else:
        verdicts.append(f"{name}: a tie here (the intervals overlap)")
display(Markdown("On this machine:\n\n" + "\n".join(f"- {v}" for v in verdicts)))

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
groups = (("throughput",), ("TTFT p50", "TTFT p95"), ("TPOT p50", "TPOT p95"))
titles = ("throughput (tokens/s, higher is better)", "time to first token (ms)", "time per output token (ms)")
for ax, names, title in zip(axes, groups, titles):
    for k, (policy, colour) in enumerate((("static", OKABE_ITO["vermillion"]), ("continuous", OKABE_ITO["blue"]))):
        x = torch.arange(len(names)) + (k - 0.5) * 0.35
        means = [spreads[policy, name].mean for name in names]
        errors = [2 * spreads[policy, name].stderr for name in names]
        ax.bar(x, means, width=0.35, yerr=errors, capsize=4, color=colour, label=f"{policy} batching")
        for i, name in enumerate(names):  # every run, as a dot
            runs = [measures[name][0] * measures[name][2](report) for report in reports[policy]]
            ax.plot([x[i].item()] * len(runs), runs, "k.", ms=4)
    ax.set_xticks(range(len(names)), [name.split()[-1] if len(names) > 1 else "" for name in names])
    ax.set_title(title)
axes[0].set_xlim(-1, 1)
axes[0].legend(loc="lower center", bbox_to_anchor=(0.5, -0.2), ncol=2)
fig.suptitle(f"The same {len(trace)} requests on this machine: mean of {rounds} runs, ± 2 standard errors, "
             "each run a dot")
fig.tight_layout()
save_figure(fig, "13_latency_throughput")
plt.show()

# %% [markdown]
# What to expect, and why (the verdicts above say what this machine measured). Under static batching a
# request that arrives while a batch runs waits for the whole batch, its longest request included, so its
# time to first token grows; and the slots of requests that finished early make no tokens, so throughput
# falls. Continuous batching takes the newcomer at the next step. Its possible price is in TPOT: the step
# in which a newcomer joins also runs that newcomer's whole prompt, a longer pass than one of single
# tokens, and the requests already decoding wait for it. Whether that shows depends on the prompts and the
# machine (the TPOT verdicts above); servers cut long prompts into chunks (*chunked prefill*) to spread it.
#
# ## Step 7: KV memory, and the shared system prompt
#
# Back to counting, which is exact: the trace served in steps as in Step 4, continuous batching, a pool with
# room for all. At every step's forward pass, three numbers of token slots: what a contiguous cache would reserve
# (`prompt + max_new_tokens` for every running request: the least it can reserve without knowing when a
# request will stop), what the paged pool holds (blocks in use × `block_size`), and the tokens whose keys and
# values are actually stored. The fraction of reserved memory that holds no token is what vLLM calls wasted.

# %%
engine = Engine(model, num_blocks=big_pool, block_size=block_size, max_batch_size=max_batch_size,
                share_prefixes=False)
steps, stored = serve_in_steps(engine, trace)
reserved = [record.contiguous_tokens for record in steps]
paged_slots = [record.blocks_in_use * block_size for record in steps]
waste = {"contiguous": 1 - sum(stored) / sum(reserved), "paged": 1 - sum(stored) / sum(paged_slots)}
print(f"over {len(steps)} steps, token slots x steps: reserved contiguously {sum(reserved):,}, "
      f"paged {sum(paged_slots):,}, holding a token {sum(stored):,}")
for kind, fraction in waste.items():
    print(f"  {kind:>10} cache: {fraction:.1%} of its memory wasted")
print(f"at the peak: {max(reserved)} slots reserved contiguously, {max(paged_slots)} paged")
# paged: what is stored, plus less than one block per sequence (the unfilled end of its last block)
assert all(s <= p < s + block_size * len(record.tokens) or p == s == 0
           for s, p, record in zip(stored, paged_slots, steps))
assert all(s <= r for s, r in zip(stored, reserved)) and waste["paged"] < waste["contiguous"]
whole_context = sum(c.block_size * len(record.tokens) for record in steps)  # a reservation of the full context
print(f"  reserving the model's whole context ({c.block_size} tokens) per request instead: "
      f"{1 - sum(stored) / whole_context:.1%} wasted")
assert 1 - sum(stored) / whole_context > waste["contiguous"]

# %% [markdown]
# The paged pool wastes only the unfilled end of each sequence's last block: less than one block per
# running sequence (the assert). The contiguous cache reserves every request's future tokens from the
# start, and much of that reservation waits empty for a long time. A reservation for the model's whole
# context, which a cache that does not know `max_new_tokens` must make, wastes more still.
#
# Now a system prompt in front of every request: the same trace lengths with a shared start, served with
# and without prefix sharing (`Engine(..., share_prefixes=...)`).

# %%
system_ids = encode("FIRST LORD.\nWhat news, sir? Speak, and speak the truth, as you would to the king himself.\n")
with_system = make_trace(num_requests, seed=seed, system_prompt=system_ids, **trace_shape)
pool = sum(blocks_needed(len(r.prompt) + r.max_new_tokens, block_size) for r in with_system)
in_use, shared = {}, {}
for share in (False, True):
    engine = Engine(model, num_blocks=pool, block_size=block_size, max_batch_size=max_batch_size,
                    share_prefixes=share)
    shared_steps, _ = serve_in_steps(engine, with_system)
    in_use[share] = [record.blocks_in_use for record in shared_steps]
    shared[share] = engine.num_shared
print(f"a {len(system_ids)}-token system prompt: {len(system_ids) // block_size} full blocks of {block_size}")
for share in (False, True):
    print(f"share_prefixes={share!s:5}: peak {max(in_use[share]):3} blocks, {sum(in_use[share]):,} block-steps; "
          f"{shared[share]} blocks taken from the prefix cache")
saving = 1 - sum(in_use[True]) / sum(in_use[False])
print(f"sharing saves {max(in_use[False]) - max(in_use[True])} blocks at the peak, {saving:.1%} of the block-steps")
assert max(in_use[True]) < max(in_use[False]) and shared[True] > 0 == shared[False]

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
left.plot(reserved, color=OKABE_ITO["vermillion"], ls="--",
          label=f"contiguous: reserved ({waste['contiguous']:.0%} wasted)")
left.plot(paged_slots, color=OKABE_ITO["blue"], label=f"paged: blocks x block_size ({waste['paged']:.0%} wasted)")
left.plot(stored, color="black", ls=":", label="tokens stored")
left.set_xlabel("step")
left.set_ylabel("KV token slots")
left.set_title("KV memory in use, one trace, continuous batching")
left.set_ylim(0, 1.4 * max(reserved))
left.legend(loc="upper left")
for share, colour, style in ((False, OKABE_ITO["vermillion"], "--"), (True, OKABE_ITO["blue"], "-")):
    right.plot(in_use[share], color=colour, ls=style, label=f"share_prefixes={share}")
right.set_xlabel("step")
right.set_ylabel("blocks in use")
right.set_title(f"A {len(system_ids)}-token system prompt in every request:\n"
                f"sharing its blocks saves {saving:.0%} of the block-steps")
right.set_ylim(0, 1.4 * max(in_use[False]))
right.legend(loc="upper left")
fig.tight_layout()
save_figure(fig, "13_kv_memory")
plt.show()

# %% [markdown]
# ## Step 8: beyond one machine
#
# `minigpt.serving` is for reading: one process, one CPU, one Python loop, attention written with plain
# tensor operations. When the users outgrow it, the same model can move to an existing engine built on the
# same ideas (vLLM, from the PagedAttention paper; Hugging Face's text-generation-inference), with
# attention kernels written for GPUs, many machines, and an HTTP server in front. They load a model in the
# transformers layout, which `minigpt export` writes: `minigpt export shakespeare --to hf DIR` on the
# command line, or `minigpt.export.export_hf` here:

# %%
out = export_hf(model, Path(tempfile.mkdtemp()) / "shakespeare-hf", name="shakespeare")
files = sorted(p.name for p in out.iterdir())
print(files)
assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)

# %% [markdown]
# minigpt's own tests load such a directory with transformers and check that its logits and greedy tokens are
# minigpt's (`tests/test_export.py`). From there, `vllm serve DIR` or text-generation-inference's
# `text-generation-launcher --model-id DIR` would serve it behind an HTTP API. **This chapter did not run either**:
# this course runs on a CPU without network access, and both are built for GPUs; so it makes no claim about how fast
# they serve this model. What it built is what they do inside: a block pool with block tables, a scheduler that
# admits, retires and preempts at every step, and prefixes shared block by block.
#
# The [exercises](exercises/13_serving_many_users_exercises.ipynb) have you find where a sequence's next token
# goes in the pool, and write the scheduler's step yourself.

# %% [markdown]
# ## Recap
#
# **What we built.** A timeline of static and continuous batching; a block allocator with reference counts,
# block tables, and a paged KV cache the model runs on unchanged, equal to chapter 7's contiguous cache;
# shared prompt blocks with copy on write; the scheduler's decision for one step (admit first come, first
# served while blocks and batch room last; preempt the newest by recompute when the pool is full); and,
# measured, what static and continuous batching give in throughput, TTFT and TPOT, and what a paged cache
# and a shared system prompt save in memory. The library's matches are `minigpt.serving.BlockAllocator`,
# `minigpt.serving.BlockTable`, `minigpt.serving.blocks_needed` and `minigpt.serving.schedule`, and the
# engine that puts them together, `minigpt.serving.Engine` (`add_request`, `step`, `run`), with
# `minigpt.serving.make_trace` for traces and `minigpt.serving.ServingReport` for the numbers;
# `minigpt.export.export_hf` (`minigpt export ... --to hf`) takes the model to other engines.
#
# **Check yourself.**
#
# 1. In Step 1, static batching held slots for 106 slot-steps to make 87 tokens. Where did the other 19
#    go, and why did requests wait longer for their first token too?
#
# <details><summary>Answer</summary>
#
# They were slots of requests that had already finished, held until the longest request of their batch was
# done (the hatched bars). Meanwhile the requests that had arrived could not take those slots: they waited
# for the whole batch to end. Continuous batching gives a slot away the step its request ends.
#
# </details>
#
# 2. With blocks of 4 positions, a sequence holds 10 tokens in blocks `[3, 4, 6]`. How many blocks does it
#    take, where does position 9 live, and when does it need a new block?
#
# <details><summary>Answer</summary>
#
# $\lceil 10 / 4 \rceil = 3$ blocks. Position 9 is in `table[9 // 4] = table[2]`, block 6, at offset
# $9 \bmod 4 = 1$. The last block has room for positions 10 and 11, so the sequence needs a fourth block
# when it writes position 12.
#
# </details>
#
# 3. When the pool is full, why preempt the *newest* running request, and why recompute rather than swap?
#
# <details><summary>Answer</summary>
#
# The newest has done the least work, so recomputing it later costs least, and never preempting the oldest
# guarantees that the queue keeps moving. Recompute runs its prompt and the tokens it had made again in one
# pass, all positions in parallel; swap would copy its blocks to other memory and back, which pays only when
# a pass is expensive and that memory is at hand. Here the pool already lives in the CPU's memory.
#
# </details>
#
# 4. In Step 7 the contiguous caches wasted 25.6% of the memory they reserved, the paged pool 6.4%. Why can
# the paged pool never waste much, whatever the trace?
#
# <details><summary>Answer</summary>
#
# A sequence takes a block only when its last one is full, so all it holds beyond its tokens is the
# unfilled end of its last block: less than one block per running sequence (Step 7 asserts it). A
# contiguous cache reserves `prompt + max_new_tokens` from the first step, and the tokens not made yet
# (or never made, when a request stops early) hold nothing.
#
# </details>
#
# 5. The 26-token system prompt filled 6 full blocks of 4. Why were only those shared, and not the seventh
#    block, which also holds system-prompt tokens?
#
# <details><summary>Answer</summary>
#
# A block can be shared only if everything in it, and everything before it, is the same: a key depends on
# every earlier token. The seventh block holds the system prompt's last 2 tokens and then the request's own
# first tokens, which differ from request to request. (When a whole prompt is the same, its partly filled
# last block is shared too, and the first request to write into it copies it first.)
#
# </details>

# %% [markdown]
# ## Sources
#
# - **Iteration-level scheduling (continuous batching)**, Steps 1 and 4: Yu, G.-I., Jeong, J. S., Kim, G.-W.,
#   Kim, S., & Chun, B.-G. (2022). *Orca: A Distributed Serving System for Transformer-Based Generative
#   Models*. 16th USENIX Symposium on Operating Systems Design and Implementation (OSDI 22), 521–538.
#   <https://www.usenix.org/conference/osdi22/presentation/yu>
# - **The paged KV cache, block tables, sharing with copy on write, preemption by recompute or swap, and
#   wasted KV memory**, Steps 2, 3, 4 and 7: Kwon, W., Li, Z., Zhuang, S., Sheng, Y., Zheng, L., Yu, C. H.,
#   Gonzalez, J. E., Zhang, H., & Stoica, I. (2023). *Efficient Memory Management for Large Language Model
#   Serving with PagedAttention*. SOSP 2023. arXiv:2309.06180.
# - **vLLM** and **text-generation-inference**, the engines of Step 8 (not run here):
#   <https://github.com/vllm-project/vllm>, <https://github.com/huggingface/text-generation-inference>.
