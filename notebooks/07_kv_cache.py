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
# # Chapter 7 — The KV cache
#
# The greedy loop of chapter 1 feeds the *whole* sequence to the model at every step, so the work per
# token grows with the length. But the keys and values that attention computes for earlier tokens never
# change. Keep them in a **cache**, and each step only has to process the one new token. Same tokens out,
# far less work.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
prompt_text = "ROMEO:\nI"  # Step 4 decodes it with and without a cache
timing_prompt = "ROMEO:\nBut soft, what light through yonder window breaks?\n"  # Steps 1 and 5: to the full context
batch_prompts = ["KING:", "ROMEO:\nI"]  # Step 7: two prompts of different lengths, padded on the left

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import ListedColormap

import minigpt
from minigpt.bench import step_times
from minigpt.generate import PAD_TOKEN_ID
from minigpt.kv_cache import KVCache
from minigpt.metrics import separated, spread
from minigpt.model import GPT, GPTConfig, causal_mask
from minigpt.tokenizer import decode, encode
from minigpt.viz import DROPPED, KEPT, MARKERS, OKABE_ITO, save_figure

torch.manual_seed(0)
torch.set_num_threads(1)
model = minigpt.load_model("shakespeare")
c = model.config
print(f"{model.num_parameters():,} parameters: {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, "
      f"context {c.block_size} tokens")

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: the cost of recomputing
#
# Here is chapter 1's loop again. Step i feeds the prompt plus the i tokens made so far, and then uses
# only the last position's logits. Count the positions the model processes for Step 5's prompt continued to
# this model's whole context:

# %%
def greedy(model, ids, max_new_tokens):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(ids)  # (1, T, V): a full pass over the whole sequence every step
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)
        ids = torch.cat([ids, next_id], dim=1)  # (1, T + 1)
    return ids


prompt_len = len(encode(timing_prompt))
new_tokens = c.block_size - prompt_len  # up to the model's whole context
print(f"a {prompt_len}-token prompt and {new_tokens} new tokens ({c.block_size} in all)")
no_cache = sum(prompt_len + i for i in range(new_tokens))  # step i feeds the whole sequence so far
with_cache = prompt_len + (new_tokens - 1)  # the prompt once, then one new position per step
print(f"positions processed without a cache: {no_cache:,}  (grows with the square of the length)")
print(f"positions processed with a cache:    {with_cache:,}  (grows with the length)")
print(f"{no_cache / with_cache:.1f}x fewer")

# %% [markdown]
# ## Step 2: why earlier tokens never change
#
# Attention is causal: position i only looks at positions 0 … i. So everything computed *at* position i,
# in every layer, depends only on tokens 0 … i; tokens added later cannot change it. Let us check: catch
# every layer's keys and values (the output of `c_attn`) for a 5-token prefix and for the full sequence.

# %%
def keys_and_values(model, ids):
    """Every layer's keys and values for ``ids``: a list of (k, v) pairs, each (1, T, C)."""
    found = []
    hooks = [block.attn.c_attn.register_forward_hook(
                 lambda module, inputs, out: found.append(out.split(c.n_embd, dim=2)[1:]))  # q, k, v → k, v
             for block in model.transformer.h]
    with torch.no_grad():
        model(ids)
    for hook in hooks:
        hook.remove()
    return found


ids = torch.tensor([encode("ROMEO:\nI will tell thee what thou art")])  # (1, 11)
short, long = keys_and_values(model, ids[:, :5]), keys_and_values(model, ids)
for layer, ((k5, v5), (k, v)) in enumerate(zip(short, long)):
    diff = max((k5 - k[:, :5]).abs().max().item(), (v5 - v[:, :5]).abs().max().item())
    assert diff < 1e-5  # equal but for rounding: how much rounding depends on the CPU, so it is not printed
    print(f"layer {layer}: keys {tuple(k5.shape)} == the first 5 of {tuple(k.shape)} (to within 1e-5)")

# %% [markdown]
# The same holds for the logits: the outputs at the first t positions do not depend on what comes after.

# %%
with torch.no_grad():
    full = model(ids)  # (1, 11, V)
    for t in (1, 5, 10):
        assert torch.allclose(model(ids[:, :t]), full[:, :t], atol=1e-5)
print("model(ids[:, :t]) == model(ids)[:, :t] for t = 1, 5, 10")

# %% [markdown]
# ## Step 3: one attention step with a cache, by hand
#
# Take layer 0. Without a cache, all T queries meet all T keys (a T × T score matrix) and the future is
# masked. With a cache, the keys and values of the first T − 1 tokens are already stored; only the newest
# token is pushed through `c_attn`, and its single query meets all T keys. No mask is needed: every
# stored key is in its past.

# %%
attn = model.transformer.h[0].attn
T, C, nh, hs = ids.size(1), c.n_embd, attn.n_head, attn.head_size
with torch.no_grad():
    x = model.transformer.h[0].ln_1(model.transformer.wte(ids) + model.transformer.wpe(torch.arange(T)))  # (1, T, C)


def heads(t):
    return t.view(1, -1, nh, hs).transpose(1, 2)  # (1, T, C) -> (1, nh, T, hs)


with torch.no_grad():
    # without a cache: every token, every query
    q, k, v = map(heads, attn.c_attn(x).split(C, dim=2))  # each (1, nh, T, hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (1, nh, T, T)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    full_out = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1) @ v  # (1, nh, T, hs)

    # with a cache: K and V of the first T - 1 tokens were stored at earlier steps
    k_cache, v_cache = map(heads, attn.c_attn(x[:, :-1]).split(C, dim=2)[1:])  # each (1, nh, T - 1, hs)
    q_new, k_new, v_new = map(heads, attn.c_attn(x[:, -1:]).split(C, dim=2))  # NEW: the new token only
    K = torch.cat([k_cache, k_new], dim=2)  # NEW: append its key, (1, nh, T, hs)
    V = torch.cat([v_cache, v_new], dim=2)  # NEW: append its value
    new_scores = q_new @ K.transpose(-2, -1) / math.sqrt(hs)  # (1, nh, 1, T): one row, no mask
    new_out = new_scores.softmax(dim=-1) @ V  # (1, nh, 1, hs)

print("scores without a cache:", tuple(scores.shape), "  with a cache:", tuple(new_scores.shape))
diff = (new_out - full_out[:, :, -1:]).abs().max().item()
assert diff < 1e-5
print("the cached step == the last row of full attention (to within 1e-5)")

# %% [markdown]
# ## Step 4: the cache by hand, for the whole model
#
# The simplest cache: for each layer, a K and a V tensor that grow by `torch.cat`. The model asks it for
# three things: `update` (store this layer's new keys and values, hand back all of them), `advance`
# (the new positions are done), and `length` (how many positions it holds: the new token's position
# id continues from there). The loop is chapter 1's, with the changed lines marked `# NEW`.

# %%
class GrowingCache:
    """Per layer, the keys and values of every token seen so far, grown with torch.cat."""

    def __init__(self, n_layer):
        self.keys, self.values = [None] * n_layer, [None] * n_layer
        self.length = 0  # positions stored

    def update(self, layer, k, v):  # k, v: (B, nh, T_new, hs)
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)  # (B, nh, T_past + T_new, hs)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def advance(self, n):
        self.length += n


def greedy_cached(model, ids, max_new_tokens, cache):
    fresh = ids  # NEW: the tokens the cache has not seen yet: the whole prompt at first
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(fresh, kv_cache=cache)  # NEW: (1, T_fresh, V); the past comes from the cache
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)
        ids = torch.cat([ids, next_id], dim=1)  # (1, T + 1)
        fresh = next_id  # NEW: the next step feeds only this one token
    return ids


prompt = torch.tensor([encode(prompt_text)])  # (1, T)
cache = GrowingCache(c.n_layer)
cached = greedy_cached(model, prompt, 100, cache)
plain = greedy(model, prompt, 100)
assert torch.equal(cached, plain)
assert cache.length == prompt.size(1) + 100 - 1  # every token but the last one made
print("cached loop == recomputing loop, all 100 tokens")
print("cache holds", cache.length, "positions; layer 0 keys:", tuple(cache.keys[0].shape), "(B, nh, T, hs)")
print(repr(decode(cached[0, prompt.size(1) : prompt.size(1) + 40].tolist())))

# %% [markdown]
# The last token made is not in the cache yet: its keys and values are computed when it is fed, at the
# next step. `torch.cat` copies the whole cache at every step; minigpt's `KVCache` allocates each layer's
# buffers once, at full size, and writes each new position in place. Same interface, same tokens:

# %%
library_cache = KVCache.for_model(model, batch_size=1, max_len=prompt.size(1) + 100)
assert torch.equal(greedy_cached(model, prompt, 100, library_cache), plain)
print("KVCache buffers, layer 0:", tuple(library_cache.keys[0].shape), " filled:", library_cache.length)

# %% [markdown]
# ## Step 5: time per token, measured on your machine
#
# `minigpt.bench.step_times` streams a continuation and records how long each token took to appear. We
# run the prompt of Step 1 to the full context, five times with the cache and five times without, in turns
# (so a busy moment of the machine hits both alike). Each run gives its tokens per second and its time per
# token near the start and near the end; the five runs give each number's spread. Your numbers will differ
# from ours: only what holds on any machine is asserted.

# %%
step_times(model, timing_prompt, 8)  # warm-up, not timed
repeats = 5
runs = {True: [], False: []}  # use_cache -> one list of per-step seconds per run
for _ in range(repeats):
    for use in (True, False):  # take turns, so a busy moment hits both alike
        runs[use].append(step_times(model, timing_prompt, new_tokens, use_cache=use))
ms = {use: torch.tensor(r) * 1000 for use, r in runs.items()}  # (runs, new tokens): ms per token
length = torch.arange(prompt_len, prompt_len + new_tokens)  # sequence length the model saw at each step
first, last = slice(1, 21), slice(-20, None)  # step 0 also runs the prompt, so start at step 1
start = {u: spread(ms[u][:, first].median(dim=1).values.tolist()) for u in ms}  # ms per token, early steps
end = {u: spread(ms[u][:, last].median(dim=1).values.tolist()) for u in ms}  # ms per token, last steps
tokens_per_s = {u: spread((new_tokens / (ms[u].sum(dim=1) / 1000)).tolist()) for u in ms}  # whole runs
names = {False: "without cache", True: "with cache"}

# %%
# NBVAL_IGNORE_OUTPUT
# why: times measured on this machine, never the same twice; the next cell asserts what they show
print(f"mean ± standard error over {repeats} runs (min-max), {new_tokens} new tokens each:")
for use in (False, True):
    s_, e_, t_ = start[use], end[use], tokens_per_s[use]
    print(f"  {names[use]:13}: {s_.mean:.2f} ± {s_.stderr:.2f} ms per token at length ~{prompt_len + 11}, "
          f"{e_.mean:.2f} ± {e_.stderr:.2f} ms at ~{prompt_len + new_tokens - 10}; "
          f"{t_.mean:.1f} ± {t_.stderr:.1f} tokens/s ({t_.low:.1f}-{t_.high:.1f})")
if separated(tokens_per_s[True], tokens_per_s[False]):
    print(f"the cache makes {tokens_per_s[True].mean / tokens_per_s[False].mean:.1f} times the tokens per second "
          "(the intervals separate)")
else:
    print("with and without the cache tie here: the intervals overlap")

# %%
assert end[False].mean > 1.3 * start[False].mean  # recomputing gets slower as the sequence grows
assert separated(end[False], end[True]) and end[False].mean > end[True].mean  # and ends clearly slower
assert separated(tokens_per_s[True], tokens_per_s[False]) and tokens_per_s[True].mean > tokens_per_s[False].mean
assert end[True].mean / start[True].mean < end[False].mean / start[False].mean  # the cached step grows less
print("without a cache the step time grows with the length; with the cache it stays lower and flatter,")
print("and the whole generation makes more tokens per second (the runs' intervals separate)")

# %%
def smooth(t, n=9):
    return t.unfold(0, n, 1).median(dim=1).values  # rolling median, (len - n + 1,)


fastest = {use: m.min(dim=0).values for use, m in ms.items()}  # (new tokens,): each step's fastest run
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for use, name, colour, style in ((False, "without cache (recompute everything)", OKABE_ITO["vermillion"], "-"),
                                 (True, "with KV cache (one new position)", OKABE_ITO["blue"], "--")):
    left.plot(length[1:], fastest[use][1:], color=colour, ls=style, alpha=0.9, label=name)
    right.plot(length[5:-4], smooth(fastest[use])[1:] / smooth(fastest[True])[1:].median(), color=colour, ls=style,
               lw=2, label=name)
left.set_ylim(bottom=0)
left.set_xlabel("sequence length (tokens)")
left.set_ylabel("time for one new token (ms)")
left.set_title(f"Measured time per token on this machine\n(each step's fastest of {repeats} runs)")
left.legend(loc="upper left")
right.axhline(1, color="gray", ls=":")
right.set_ylim(bottom=0)
right.set_xlabel("sequence length (tokens)")
right.set_ylabel("time per token ÷ a typical cached step")
right.set_title("The same, as ratios\n(rolling median of 9 steps)")
right.legend(loc="upper left")
fig.suptitle("KV cache: without it each token costs more the longer the text (shakespeare model, greedy)")
fig.tight_layout()
save_figure(fig, "07_time_per_token")
plt.show()

# %% [markdown]
# For this small model much of each step is a fixed cost (the 50,257-wide output layer, Python), which the
# cache does not remove. Recomputing costs more with every layer and every token of context, so a bigger
# model and a longer text widen the gap; `minigpt bench --methods no-cache cache` measures it for a GPT-2
# 124M-shaped model on your machine (README, "Speed").

# %% [markdown]
# ## Step 6: how much memory the cache takes
#
# Every layer keeps a key and a value vector (n_embd numbers each) for every position of every row:
#
# **bytes = 2 (K and V) × n_layer × batch × tokens × n_embd × bytes per number**

# %%
def cache_bytes(n_layer, batch, tokens, n_embd, bytes_per_number=4):
    return 2 * n_layer * batch * tokens * n_embd * bytes_per_number


mib = 2**20
ours = cache_bytes(c.n_layer, 1, c.block_size, c.n_embd)
assert ours == KVCache.for_model(model, batch_size=1).nbytes
print(f"shakespeare, 1 row x {c.block_size} tokens, fp32: {ours / mib:.2f} MiB  (== KVCache.nbytes)")
g = GPTConfig.from_preset("gpt2")
for batch in (1, 8, 32):
    b = cache_bytes(g.n_layer, batch, g.block_size, g.n_embd)
    assert b == KVCache.bytes_needed(g.n_layer, batch, g.block_size, g.n_embd)
    print(f"GPT-2 124M, {batch:2} rows x {g.block_size} tokens, fp32: {b / mib:,.0f} MiB")
with torch.device("meta"):  # the shape only: no memory is allocated
    weights = GPT(g).num_parameters() * 4
print(f"GPT-2 124M weights, fp32: {weights / mib:,.0f} MiB")
batch_8 = cache_bytes(g.n_layer, 8, g.block_size, g.n_embd)
assert cache_bytes(g.n_layer, 1, g.block_size, g.n_embd) < weights < batch_8  # one row fits beside them; 8 do not

# %%
tokens = torch.arange(64, g.block_size + 1, 64)
fig, ax = plt.subplots(figsize=(7, 4))
for batch, marker in zip((1, 8, 32), MARKERS):
    ax.plot(tokens, [cache_bytes(g.n_layer, batch, t, g.n_embd) / mib for t in tokens.tolist()],
            marker=marker, label=f"KV cache, batch {batch}")
ax.axhline(weights / mib, color="gray", ls="--", label=f"the weights themselves ({weights / mib:.0f} MiB)")
gqa_mib = [cache_bytes(g.n_layer, 8, t, g.n_embd) * 4 / g.n_head / mib for t in tokens.tolist()]
ax.plot(tokens, gqa_mib, ls=":", marker=MARKERS[3], color=OKABE_ITO["reddish purple"],
        label="batch 8 with 4 KV heads (GQA, see below)")
ax.set_xlabel("tokens in the cache (per row)")
ax.set_ylabel("memory (MiB, fp32)")
ax.set_title("GPT-2 124M: the KV cache grows with length × batch")
ax.legend()
fig.tight_layout()
save_figure(fig, "07_cache_memory")
plt.show()

# %% [markdown]
# The axes are linear, so each line is straight: the cache grows in proportion to the tokens and to the
# batch. At batch 8 and 1,024 tokens the cache (576 MiB) is already bigger than the model (475 MiB). That
# is why long contexts and big batches run out of memory, and why bf16 (2 bytes per number) halves it.
#
# **Grouped-query attention (GQA).** GPT-2 stores a key and a value for each of its `n_head` heads. Newer
# models (Llama 2 70B, Mistral) keep only `n_kv_heads` < `n_head` key/value heads, each shared by a group
# of `n_head / n_kv_heads` query heads. The cache stores n_kv_heads × head_size numbers per token instead
# of n_embd = n_head × head_size, so it shrinks by n_head / n_kv_heads:
#
# **bytes = 2 × n_layer × batch × tokens × n_kv_heads × head_size × bytes per number**
#
# (n_kv_heads = 1 is multi-query attention.) For a GPT-2 124M-shaped model with 4 KV heads instead of 12:

# %%
def gqa_cache_bytes(n_layer, batch, tokens, n_kv_heads, head_size, bytes_per_number=4):
    return 2 * n_layer * batch * tokens * n_kv_heads * head_size * bytes_per_number


head_size = g.n_embd // g.n_head  # 64
mha = gqa_cache_bytes(g.n_layer, 8, g.block_size, g.n_head, head_size)  # every head has its own K and V
assert mha == cache_bytes(g.n_layer, 8, g.block_size, g.n_embd)
gqa = gqa_cache_bytes(g.n_layer, 8, g.block_size, 4, head_size)
assert mha == gqa * g.n_head // 4
print(f"GPT-2 124M shape, 8 rows x {g.block_size} tokens, fp32: {g.n_head} KV heads {mha / mib:,.0f} MiB, "
      f"4 KV heads {gqa / mib:,.0f} MiB ({g.n_head // 4}x smaller)")

# %% [markdown]
#
# ## Step 7: the attention mask with a cache
#
# With a cache, T new queries meet past + T keys, so the mask is (T, past + T). For one new token the
# causal part is all True: everything stored is in its past. What is left to hide is **padding**. Two
# prompts of different lengths are padded on the left (chapter 5); the pad columns sit in the cache too,
# so the attention mask handed to the model covers all past + T columns, at every step.
#
# Look at the prefill mask of the padded row below: its padding queries are allowed to see **themselves**
# (the diagonal). A padding query that may see no key at all would have a score row of only -inf, and
# softmax of all -inf is 0/0 = NaN; that NaN would then spread through the layers. Letting each query see
# itself keeps every row finite, and the padding rows' outputs are never used, while the real tokens' rows
# still hide the padding columns (`causal_mask` in `minigpt/model.py`).

# %%
print("softmax of a row with no visible key:", torch.softmax(torch.full((3,), float("-inf")), dim=-1).tolist())

# %%
rows = [encode(p) for p in batch_prompts]  # token ids of different lengths
B, width = len(rows), max(map(len, rows))
ids = torch.tensor([[PAD_TOKEN_ID] * (width - len(r)) + r for r in rows])  # (B, width), left-padded
mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])  # (B, width): 0 = padding
short = min(range(B), key=lambda i: len(rows[i]))  # the row with the most padding: the one we look at
print("attention_mask:\n", mask)
prefill = causal_mask(width, past=0, attention_mask=mask)  # (B, 1, width, width)
print(f"prefill, row {short} ({width} queries x {width} keys):\n", prefill[short, 0].int())
grown = torch.cat([mask, torch.ones(B, 1, dtype=torch.long)], dim=1)  # (B, width + 1): the new token is real
step = causal_mask(1, past=width, attention_mask=grown)  # (B, 1, 1, width + 1)
print(f"one decode step, row {short} (1 query x {width + 1} keys):", step[short, 0].int().tolist())

# %% [markdown]
# Step by step, the model builds one block of the mask at the prefill and then one row per new token.
# Stacked, those pieces are exactly the mask a no-cache pass over the whole sequence would use: each row
# is computed once instead of at every step.

# %%
steps = 3
pieces = [prefill[short, 0]]  # (width, width)
for i in range(steps):
    seen = torch.cat([mask, torch.ones(B, i + 1, dtype=torch.long)], dim=1)  # (B, width + i + 1)
    pieces.append(causal_mask(1, past=width + i, attention_mask=seen)[short, 0])  # (1, width + i + 1)
stacked = torch.zeros(width + steps, width + steps, dtype=torch.bool)
top = 0
for piece in pieces:  # each piece: (queries, keys so far)
    stacked[top : top + piece.size(0), : piece.size(1)] = piece
    top += piece.size(0)
whole = causal_mask(width + steps, past=0, attention_mask=seen)[short, 0]  # no cache, (width + 3,) * 2
assert torch.equal(stacked, whole)
print(f"row {short}'s mask, pieces stacked (== the no-cache mask):")
print(stacked.int())

# %%
n_pad = width - len(rows[short])
fig, ax = plt.subplots(figsize=(7, 5.5))
ax.imshow(stacked, cmap=ListedColormap([DROPPED, KEPT]), vmin=0, vmax=1)  # grey: hidden, blue: may attend
for q in range(width + steps):  # write the verdict in each cell too, so the colours are not needed
    for k in range(width + steps):
        ax.text(k, q, "✓" if stacked[q, k] else "×", ha="center", va="center",
                color="white" if stacked[q, k] else "black", fontsize=11)
ax.axhline(width - 0.5, color="black", lw=2, ls="--")
if n_pad:  # the padding columns, framed: hidden from every real query, at the prefill and at every step
    ax.add_patch(plt.Rectangle((-0.5, n_pad - 0.5), n_pad, width + steps - n_pad, fill=False, ec=OKABE_ITO["orange"],
                               lw=3, ls="-"))
ax.plot([width + steps - 0.5, width + steps + 0.3], [width - 0.5] * 2, color="black", lw=2, ls="--", clip_on=False)
ax.text(width + steps - 0.3, width - 0.7, "↑ the prefill:\n   one pass", ha="left", va="bottom", fontsize=9)
ax.text(width + steps - 0.3, width - 0.3, "↓ then one row\n   per decode step", ha="left", va="top", fontsize=9)
labels = (["pad"] * n_pad + [decode([t]).replace("\n", "\\n") for t in rows[short]]
          + [f"new {i + 1}" for i in range(steps)])
ax.set_xticks(range(width + steps), labels, rotation=45, ha="right")
ax.set_yticks(range(width + steps), labels)
ax.set_xlabel("key (what may be looked at)")
ax.set_ylabel("query (the token looking)")
ax.set_title("Attention mask with a cache (✓ blue = may attend, × grey = hidden)\n"
             "the padding columns (orange frame) stay hidden at every step", fontsize=10)
fig.tight_layout()
save_figure(fig, "07_cached_mask")
plt.show()

# %% [markdown]
# The whole batched loop by hand: the prefill gets the padded prompts, their mask and position ids that
# start at 0 on each row's first real token; then each step feeds one token per row, grows the mask by a
# column of ones, and moves every position on by one.

# %%
def greedy_cached_batch(model, ids, mask, max_new_tokens):
    cache = KVCache.for_model(model, batch_size=ids.size(0))
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T): each row counts its real tokens from 0
    fresh = ids
    for _ in range(max_new_tokens):
        with torch.no_grad():  # the mask covers every column in the cache plus the fresh ones
            logits = model(fresh, attention_mask=mask, position_ids=positions, kv_cache=cache, last_only=True)
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
        ids = torch.cat([ids, next_id], dim=1)
        mask = torch.cat([mask, torch.ones_like(next_id)], dim=1)  # (B, past + 1): padding stays 0
        positions = positions[:, -1:] + 1  # (B, 1)
        fresh = next_id
    return ids


batch = greedy_cached_batch(model, ids, mask, 20)
for i, r in enumerate(rows):
    alone = greedy(model, torch.tensor([r]), 20)[0, len(r):]  # no padding, no cache
    assert torch.equal(batch[i, width:], alone)
    print(repr(decode(r)), "->", repr(decode(alone.tolist())))
print("padded batch with the cache == each prompt alone without it")

# %% [markdown]
# ## The library's version
#
# `minigpt.generate` runs this loop (prefill, then one token per row with the cache, the mask grown a
# column per step). Greedy (temperature 0), it gives our tokens exactly, with or without its cache:

# %%
library = minigpt.generate(model, prompt, max_new_tokens=100, temperature=0)
assert torch.equal(library.ids, cached) and torch.equal(library.ids, plain)
no_cache_library = minigpt.generate(model, prompt, max_new_tokens=100, use_cache=False)
assert torch.equal(no_cache_library.ids, plain)
padded = minigpt.generate(model, batch_prompts, max_new_tokens=20)
assert torch.equal(padded.ids, batch)
print("hand-built cached loop == recomputing loop == minigpt.generate, with and without its cache")
print("hand-built padded batch == minigpt.generate on the same two prompts")

# %% [markdown]
# ## What changed
#
# - **Prefill once**: the first pass feeds the whole prompt and fills the cache.
# - **Then one token per step**: `model(next_id, kv_cache=cache)`; its position id continues from
#   `cache.length`, and its query meets all stored keys.
# - **Same tokens**: causal attention means stored keys and values never change, so nothing is lost.
# - **The price is memory**: 2 × n_layer × batch × tokens × n_embd numbers, which at long contexts and big
#   batches outgrows the model itself.
# - **The mask** is (new tokens, past + new tokens): the causal part is trivial for one token; padding
#   columns stay masked at every step.

# %% [markdown]
# ## Recap
#
# **What we built.** A KV cache by hand: a key and a value tensor per layer that grow by one position per
# step, a cached attention step for one new token, the greedy loop that prefills the prompt once and then
# feeds one token at a time, and the attention mask for a padded batch with a cache. The library's matches
# are `minigpt.kv_cache.KVCache` (same interface, buffers allocated once) and `minigpt.generate`, which uses
# its cache by default and gave our tokens exactly, with it and with `use_cache=False`.
#
# **Check yourself.**
#
# 1. Count the positions the model processes for a three-token prompt and three new tokens, without a cache
#    and with one.
#
# <details><summary>Answer</summary>
#
# Without a cache each step feeds the whole sequence: $3 + 4 + 5 = 12$ positions. With a cache the prefill
# feeds the prompt and each later step one token: $3 + 1 + 1 = 5$. The first grows with the square of the
# length, the second with the length (Step 1: 32,520 against 255).
#
# </details>
#
# 2. Why is it safe to keep the keys and values of earlier tokens, instead of recomputing them each step?
#
# <details><summary>Answer</summary>
#
# Attention is causal: everything computed at position i depends only on tokens 0 … i. Tokens added later
# cannot change it, so the stored keys and values are the ones a full pass would compute (Step 2 checked it
# in every layer).
#
# </details>
#
# 3. Use the formula of Step 6 to compute the cache of the shakespeare model (6 layers, width 192) for one
#    row of 256 tokens in fp32.
#
# <details><summary>Answer</summary>
#
# $2 \times 6 \times 1 \times 256 \times 192 \times 4 = 2{,}359{,}296$ bytes, and
# $2{,}359{,}296 / 1024^2 = 2.25$ MiB, what `KVCache.nbytes` printed.
#
# </details>
#
# 4. In the prefill mask of a left-padded row, each padding query may see itself. Why not hide everything
#    from it?
#
# <details><summary>Answer</summary>
#
# A query that sees no key at all has a score row of only -inf, and softmax of that is 0/0 = NaN, which
# would spread through the layers. Seeing itself keeps the row finite; the padding rows' outputs are never
# used, and the real tokens still cannot see the padding.
#
# </details>
#
# 5. A GPT-2 124M-shaped model with 4 KV heads instead of 12 needs 192 MiB instead of 576 MiB for the same
#    batch. Where does the factor come from?
#
# <details><summary>Answer</summary>
#
# With grouped-query attention the cache stores n_kv_heads × head_size numbers per token instead of
# n_head × head_size, so it shrinks by n_head / n_kv_heads $= 12 / 4 = 3$.
#
# </details>

# %% [markdown]
# ## Sources
#
# - **Inference with a KV cache, and what its memory costs at scale**: Pope, R., Douglas, S., Chowdhery, A., Devlin,
#   J., Bradbury, J., Levskaya, A., Heek, J., Xiao, K., Agrawal, S., & Dean, J. (2022). *Efficiently Scaling
#   Transformer Inference*. arXiv:2211.05102 (MLSys 2023).
# - **Attention: queries, keys, values and the causal mask**: Vaswani, A., Shazeer, N., Parmar, N., Uszkoreit, J.,
#   Jones, L., Gomez, A. N., Kaiser, Ł., & Polosukhin, I. (2017). *Attention Is All You Need*. NeurIPS 2017.
#   arXiv:1706.03762.
# - **GPT-2 124M**, the shape the memory formula is applied to (Step 6): Radford, A., Wu, J., Child, R., Luan, D.,
#   Amodei, D., & Sutskever, I. (2019). *Language Models are Unsupervised Multitask Learners*. OpenAI technical
#   report.
