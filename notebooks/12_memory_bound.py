# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 12 — Decoding is memory-bound
#
# Chapter 7 made each decode step feed one token instead of the whole sequence. What is left in a step?
# One row of numbers goes through every layer, so every weight matrix is multiplied by a single vector:
# each weight is read from memory once and used for one multiply and one add. A processor can do
# arithmetic far faster than memory can deliver the weights, so at batch 1 the time of a token is set by
# the bytes it reads, not by the arithmetic:
#
# **time per token ≥ (bytes read) / (memory bandwidth)**
#
# This chapter counts those bytes by hand, measures your machine's bandwidth, and holds four decoders
# against the bound it gives, then finds where the rest of a step's time goes. Then it finds where the
# rule stops holding (large batches) and moves the bound itself (int8 weights: a quarter of the bytes).

# %%
# %matplotlib inline
import copy
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import minigpt
from minigpt.bench import (
    bandwidth_bound,
    decode_step_bytes,
    measure,
    measure_bandwidth,
    to_transformers,
    transformers_generate,
    weight_count,
)
from minigpt.data import load_splits
from minigpt.fast import FastDecoder
from minigpt.generate import generate
from minigpt.model import GPT, GPTConfig
from minigpt.native import unavailable_reason
from minigpt.quantize import (
    choose_int8_kernel,
    dequantize,
    int8_kernels_here,
    quantize_model,
    quantize_per_channel,
)
from minigpt.train import heldout_loss
from minigpt.viz import save_figure

torch.manual_seed(0)
torch.set_num_threads(torch.get_num_threads())  # every core: the speed sections measure the whole machine
cpu = torch.device("cpu")
config = GPTConfig()  # GPT-2 124M's shape: 12 layers, width 768, 50,257 tokens
print(config)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version and the number of cores differ from machine to machine
print("torch", torch.__version__, "|", torch.get_num_threads(), "threads")

# %% [markdown]
# ## Step 1: the bytes of one token
#
# A decode step feeds one token per sequence. What does it read? Every block holds four matrices
# (C = `n_embd`): queries, keys and values fused (3C × C), the attention output (C × C), the MLP's up
# (4C × C) and down (C × 4C) projections; their biases; and two layer norms, a weight and a bias of C
# numbers each. After the blocks come the final layer norm and the head, which is the token table itself
# (tied), read whole: every one of the 50,257 tokens gets a score. The position table is *not* read
# whole: a step looks up one row of it (and one row of the token table for its input).

# %%
C, V, n_layer = config.n_embd, config.vocab_size, config.n_layer
matrices = 3 * C * C + C * C + 4 * C * C + C * 4 * C  # = 12·C²
biases = 3 * C + C + 4 * C + C  # = 9·C
norms = 2 * (C + C)  # ln_1 and ln_2, a weight and a bias each: 4·C
per_block = matrices + biases + norms
head = V * C  # the token table, read whole as the output layer
weights = n_layer * per_block + 2 * C + head  # + ln_f
assert matrices == 12 * C * C and biases == 9 * C
assert weights == weight_count(config)

model = GPT(config).eval()  # random weights (seeded above): speed does not depend on their values
wpe = model.transformer.wpe.weight.numel()
assert weights == model.num_parameters() - wpe  # every parameter but the position table
for name, n in (("4 matrices", matrices), ("their biases", biases), ("2 layer norms", norms)):
    print(f"per block, {name:>13}: {n:>11,}")
print(f"{n_layer} blocks:               {n_layer * per_block:>11,}")
print(f"final layer norm:          {2 * C:>11,}")
print(f"head (token table, tied):  {head:>11,}")
print(f"read per step:             {weights:>11,} weights  (== weight_count(config))")
print(f"not read (position table): {wpe:>11,}")

# %% [markdown]
# In fp32 each weight is 4 bytes. The step also reads the KV cache (chapter 7): for each sequence of the
# batch, in every layer, a key and a value of C numbers for each of its cached positions:
#
# **bytes per step = 4 · weights + 2 · n_layer · batch · context · C · 4**
#
# The weights are read once for the whole batch; the cache once per sequence.

# %%
def step_bytes(batch_size, context_len):
    return 4 * weights + 2 * n_layer * batch_size * context_len * C * 4


print(f"{'batch':>5} {'context':>7} {'bytes per step':>15} {'of which KV cache':>18} {'cache share':>11}")
for batch_size, context_len in ((1, 0), (1, 128), (1, 1024), (8, 128), (8, 1024), (64, 1024)):
    total = step_bytes(batch_size, context_len)
    assert total == decode_step_bytes(config, batch_size, context_len)
    cache = total - 4 * weights
    print(f"{batch_size:>5} {context_len:>7} {total:>15,} {cache:>18,} {cache / total:>11.1%}")

# %% [markdown]
# At batch 1 with a short context, a token costs about half a gigabyte of reading, nearly all of it
# weights. The cache share grows with context × batch: at batch 64 and the full 1,024-token context the
# cache is over 90% of the bytes, and the weights no longer dominate.

# %%
contexts = torch.arange(0, config.block_size + 1, 32).tolist()
fig, ax = plt.subplots(figsize=(7, 4))
for batch_size in (1, 8, 64):
    share = [1 - 4 * weights / decode_step_bytes(config, batch_size, t) for t in contexts]
    ax.plot(contexts, [100 * s for s in share], marker=".", label=f"batch {batch_size}")
ax.set_xlabel("cached positions per sequence (context)")
ax.set_ylabel("KV cache share of the bytes per step (%)")
ax.set_ylim(0, 100)
ax.set_title("GPT-2 124M, fp32: the KV cache's share of a step's bytes")
ax.legend()
fig.tight_layout()
save_figure(fig, "12_bytes_per_step")
plt.show()

# %% [markdown]
# ## Step 2: the machine's bandwidth
#
# How fast can this machine read memory? By hand: copy a 256 MB fp32 tensor into another one. The tensor
# is far larger than any CPU cache, so every byte comes from main memory, and a copy *reads* 256 MB and
# *writes* 256 MB: 2 × 256 MB moved. We keep the fastest of a few runs, since anything else the machine
# was doing can only have slowed a run down.

# %%
src = torch.ones(2**26)  # 2**26 fp32 numbers = 256 MB
dst = torch.empty_like(src)
dst.copy_(src)  # warm-up: the first write also asks the system for dst's pages
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    dst.copy_(src)
    best = min(best, time.perf_counter() - start)
copy_gb_s = 2 * src.nbytes / best / 1e9  # bytes read + bytes written, per second
del src, dst
# the library's, read-only: the fastest of a sum and matrix-vector products, reading 1 GB again and again
bandwidth = measure_bandwidth(repeats=3, seconds=1.0)  # the best of 3 one-second readings

# %%
# NBVAL_IGNORE_OUTPUT
# why: bandwidth measured on this machine, never the same twice; the asserts check only that it was measured
print(f"copy by hand (read + write): {copy_gb_s:.1f} GB/s")
print(f"measure_bandwidth (read only, 1 s readings): {bandwidth:.1f} GB/s")
assert copy_gb_s > 0 and bandwidth > 0

# %% [markdown]
# Which figure bounds decoding? A decode step *reads* half a gigabyte of weights and writes almost
# nothing: one key and one value per layer for the new token (2 · 12 · 768 · 4 = 73,728 bytes) and a few
# rows of activations. So the right figure is the read-only one. A copy mixes in writes, which many CPUs
# pay for twice (a write first reads the line it lands in), so it usually understates how fast reading
# alone can go. `measure_bandwidth` times read-only kernels: a sum, and a matrix-vector product over
# the same bytes, which is exactly what a batch-1 decode step does to every weight matrix, both by torch
# and the product also by the fast path's C step (below), whichever reads fastest here. Each reading
# lasts a second, about as long as the decoders' runs below: on a shared machine the memory's speed
# swings, and a 50 ms read can catch a fast moment that no second-long run ever sees. The best reading
# is kept, so the bound it gives is one no decoder should beat:
#
# **bound (tokens/s) = batch × bandwidth / bytes per step**

# %%
prompt_len, n = 16, 32  # the decoders' prompt and new tokens
context_len = prompt_len + n // 2  # the average context over the decode steps
bound = bandwidth * 1e9 / decode_step_bytes(config, 1, context_len)
assert abs(bound - bandwidth_bound(model, 1, prompt_len, n, bandwidth)) < 1e-9 * bound

# %%
# NBVAL_IGNORE_OUTPUT
# why: the bound comes from the bandwidth measured above
print(f"{bandwidth:.1f} GB/s / {decode_step_bytes(config, 1, context_len):,} bytes = at most {bound:.1f} tokens/s")

# %% [markdown]
# ## Step 3: four decoders against the bound
#
# Four ways to decode the same model greedily, one sequence, a 16-token random prompt, 32 new tokens:
#
# - the **readable loop**, `minigpt.generate.generate`, the one the chapters teach;
# - the **fast path with torch's step**, `minigpt.fast.FastDecoder(matmul="tuned")`: the same tokens, a
#   pre-allocated cache, and for each matrix the fastest kernel this CPU has (it times them);
# - the **fast path with the C step**, `FastDecoder`'s default wherever a C compiler is found: the same
#   decoder, but each decode step runs as one function in C, compiled for your CPU (`minigpt.native`;
#   the end of this step shows why);
# - **transformers**, Hugging Face's `generate` on a `GPT2LMHeadModel` holding the same weights.
#
# Each is timed the way `minigpt bench` does it (`minigpt.bench.measure`): after a warm-up, the time of
# 32 tokens minus the time of 1 token covers the 31 decode steps and nothing else (the prompt's pass and
# any fixed setup cost cancel out). They take turns, and each keeps its fastest run: a laptop's (or a
# cloud machine's) memory is not equally fast from one minute to the next, and taking turns makes a slow
# spell slow them all alike.

# %%
ids = torch.randint(0, V, (1, prompt_len), generator=torch.Generator().manual_seed(0))  # (1, 16)
fast = FastDecoder(model, max_batch_size=1, max_len=prompt_len + n, matmul="tuned")  # torch's step
c_fast = FastDecoder(model, max_batch_size=1, max_len=prompt_len + n)  # the C step, where it builds
hf = to_transformers(model)
runs = {
    "readable loop": lambda k: generate(model, ids, max_new_tokens=k).ids,
    "fast (torch step)": lambda k: fast.generate(ids, max_new_tokens=k),
    "fast (C step)": lambda k: c_fast.generate(ids, max_new_tokens=k),
    "transformers": lambda k: transformers_generate(hf, ids, k),
}
if c_fast.native_step is None:  # no C compiler here: the default decoder is torch's step again
    del runs["fast (C step)"]
repeats = 2  # the fastest of 2 turns each
results = measure(runs, 1, n, repeats, cpu)
tuned = fast.tuned.get(1, {})  # the kernel the fast path timed fastest per matrix shape (in, out), at batch 1
del hf, runs  # transformers' copy of the weights (500 MB); the fast paths' serve the next section too
rates = {name: r["decode_tokens_per_s"] for name, r in results.items()}
fastest_path = max((name for name in rates if name.startswith("fast")), key=rates.get)

# %% [markdown]
# First what holds on every machine: the three decoders pick the same 32 tokens. (These are random
# weights, so the tokens mean nothing; each step's best token leads the runner-up by a clear margin, so
# no CPU's rounding can swap them.)

# %%
reference = results["readable loop"]["ids"]
assert reference.shape == (1, prompt_len + n)
for name, r in results.items():
    assert torch.equal(r["ids"], reference), name
with torch.no_grad():
    logits = model(reference[:, :-1])[0, prompt_len - 1 :]  # (32, V): the logits each new token was picked from
top2 = logits.topk(2, dim=-1).values
assert torch.equal(logits.argmax(dim=-1), reference[0, prompt_len:])
assert (top2[:, 0] - top2[:, 1]).min() > 1e-3  # a hundred times the rounding noise between CPUs
print(f"every decoder timed: the same {n} new tokens")
print("every step's best token leads the runner-up by more than 1e-3")

# %%
# NBVAL_IGNORE_OUTPUT
# why: tokens/s measured on this machine; the asserts check only what holds on any machine
for name, rate in rates.items():
    print(f"{name:>17}: {rate:6.1f} tokens/s  ({rate / bound:.0%} of the bound)")
print(f"{'bound':>17}: {bound:6.1f} tokens/s  ({bandwidth:.1f} GB/s)")
assert all(rate < 1.5 * bound for rate in rates.values())  # physics: no decoder reads faster than memory
assert rates[fastest_path] >= 0.5 * rates["readable loop"]  # loose: timings are noisy

# %%
# NBVAL_IGNORE_OUTPUT
# why: a plot of the measured tokens/s above
fig, ax = plt.subplots(figsize=(7, 4))
colors = {"readable loop": "tab:blue", "fast (torch step)": "tab:olive", "fast (C step)": "tab:green",
          "transformers": "tab:orange"}
ax.bar(list(rates), list(rates.values()), color=[colors[name] for name in rates])
ax.axhline(bound, color="k", ls="--", label=f"bandwidth bound: {bound:.0f} tokens/s")
ax.set_ylim(0, 1.15 * max(bound, *rates.values()))
ax.set_ylabel("decode tokens/s (batch 1)")
ax.set_title("GPT-2 124M shape, fp32, greedy: measured speed against the bound")
ax.legend(loc="upper right")
fig.tight_layout()
save_figure(fig, "12_decoders_vs_bound")
plt.show()

# %% [markdown]
# All of them sit below the line. They read the same bytes; what separates them is the time each wastes
# around those bytes (Python, copies, a slower matrix kernel), and which one wins that differs from CPU to
# CPU. None can cross the line by much, because the weights have to come from memory. (The bound is only as
# good as the bandwidth measured: a run that caught the machine busy gives a bound that is too low.)
#
# Even the order of the bytes matters. At batch 1 a matrix-vector product walks the matrix row by row,
# and a kernel streams long rows better than short ones. `nn.Linear` stores a 768 → 3072 matrix as 3072
# rows of 768 numbers (out, in); stored the other way round, (in, out), it is 768 rows of 3072. On the Xeon
# this chapter was written on, MKL read every matrix with 768-number rows 20-30% faster stored (in, out). So
# the torch step's first call times three kernels on its own matrices, shape by shape, and keeps the
# fastest: oneDNN and BLAS over (out, in), and BLAS over an (in, out) copy. What it chose on your machine:

# %%
# NBVAL_IGNORE_OUTPUT
# why: which kernel streams fastest depends on the CPU (and on the moment: close calls can go either way)
for (d_in, d_out), kernel in tuned.items():
    print(f"{d_in:>5} -> {d_out:<6} {kernel}")
assert set(tuned.values()) <= {"onednn", "blas", "blas-in-out"}  # empty where torch has no oneDNN

# %% [markdown]
# ### Where a step's time goes
#
# The fast path reads the bytes the bound counts and still sits below it. Where does the rest of a step
# go? Time two things, taking turns: one whole decode step of torch's step, and the step's 49
# matrix-vector products alone (4 per layer, then the head), on its own matrices and kernels, with
# nothing in between.

# %%
# the torch step of Step 3, its kernels already timed and chosen for batch 1
step_matrices = [m for block in fast.blocks for m in (block.c_attn, block.attn_proj, block.c_fc, block.mlp_proj)]
step_matrices.append(fast.head)  # each a matrix stored (out, in), with its bias: 12 · 4 + 1 = 49
vectors = {width: torch.randn(1, width) for width in (config.n_embd, 4 * config.n_embd)}  # one row in


def matmuls_only():
    for w, *bias in step_matrices:
        fast.linear(vectors[w.shape[1]], w, *bias)


def one_step():  # the prompt's last token again, at the next position: a real step, cache and all
    fast.decode_one_token(ids[:, -1:], torch.tensor([[prompt_len]]), prompt_len)


def fastest_of(runs, turns=20):
    """Each run's fastest time in seconds, the runs taking turns: a slow spell slows them alike."""
    best = dict.fromkeys(runs, float("inf"))
    with torch.inference_mode():
        for _ in range(turns):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


fastest = fastest_of({"one decode step": one_step, "its matmuls alone": matmuls_only})
matmul_share = fastest["its matmuls alone"] / fastest["one decode step"]

# %%
# NBVAL_IGNORE_OUTPUT
# why: milliseconds measured on this machine
for name, seconds in fastest.items():
    print(f"{name:>18}: {seconds * 1e3:5.1f} ms")
print(f"the matmuls are {matmul_share:.0%} of a step; everything else, {1 - matmul_share:.0%}")
assert matmul_share > 1 / 3  # mostly its matmuls (85-87% where we tried); a third leaves room for a busy machine

# %% [markdown]
# Most of a step is its matmuls, as the bound says. The rest is about 25 small operations per layer
# (two layer norms, splitting the heads, writing the cache, attention, GELU, two residual adds), each on a
# few vectors of 768 numbers: a few microseconds of arithmetic. Yet together they cost a good share of
# the step. The matmuls are the reason again: each one streams megabytes through the CPU's caches and
# pushes out what the next small operation needs (its data, and torch's own code and tables), so that
# operation waits for memory too. Time one layer norm right after another, then right after the head's
# 154 MB matmul:

# %%
row = torch.randn(1, config.n_embd)
after = {"another layer norm": float("inf"), "the head's matmul": float("inf")}
with torch.inference_mode():
    for _ in range(10):
        for name, before in (("another layer norm", lambda: F.layer_norm(row, row.shape[1:])),
                             ("the head's matmul", lambda: fast.linear(row, *fast.head))):
            before()
            start = time.perf_counter()
            F.layer_norm(row, row.shape[1:])
            after[name] = min(after[name], time.perf_counter() - start)

# %%
# NBVAL_IGNORE_OUTPUT
# why: microseconds measured on this machine
for name, seconds in after.items():
    print(f"a layer norm right after {name:>18}: {seconds * 1e6:5.1f} µs")
assert after["the head's matmul"] > after["another layer norm"]  # the big read evicted what it needs

# %% [markdown]
# Every small operation of a step pays that toll, about 300 times a token: each is a call through
# Python and torch's dispatcher, whose code and tables the last matmul has just pushed out of the
# caches. The torch step keeps them few (each token is one row of a plain 2-D matrix from start to end,
# and one copy writes a layer's keys and values into the cache), but it cannot make them free.
#
# The **C step** makes the whole token one call: `minigpt/csrc/decode_step.c`, compiled on first use by
# `minigpt.native` for the instructions your CPU has (it asks torch which). Between two weight streams it
# does a few kilobytes of arithmetic with nothing to look up: a layer norm is a loop over 768 numbers.
# Its matrix-vector products read each matrix 16 rows at a time, 16 streams from memory at once. The
# cache is read the same way: the threads split attention by positions, not by heads, because one
# position's keys and values for all 12 heads lie side by side, so 32 consecutive positions are one
# block of memory (each block's softmax is finished against the others' at the end, as flash-decoding
# does). Split by heads, each read jumps 6 KB: at a context of 800, attention took a third of the step
# that way, and takes about the tenth its bytes ask by blocks. Time a step of each, taking turns:

# %%
# NBVAL_IGNORE_OUTPUT
# why: milliseconds measured on this machine, and the C step exists only where a C compiler does
def c_step():  # the same token as one_step, through the C step
    c_fast.decode_one_token(ids[:, -1:], torch.tensor([[prompt_len]]), prompt_len)


if c_fast.native_step is None:
    print("no C step here:", unavailable_reason())
else:
    steps = fastest_of({"torch step": one_step, "C step": c_step})
    for name, seconds in steps.items():
        print(f"one {name:>10}: {seconds * 1e3:5.1f} ms")
    print(f"the torch step's matmuls alone: {fastest['its matmuls alone'] * 1e3:5.1f} ms")
    assert steps["C step"] < 1.5 * steps["torch step"]  # loose: about 10% faster where we tried
del fast, c_fast, step_matrices  # the decoders' copies of the weights

# %% [markdown]
# On the Xeon this chapter was written on, the C step took about a tenth less time than the torch step,
# often less than the torch step's matmuls alone. That is where the fast path's lead over transformers
# comes from: transformers' GPT-2 runs its blocks' matmuls with the torch step's kernel (its `Conv1D`
# stores the matrices (in, out)), so the two differ mostly in what happens between the matmuls.

# %% [markdown]
# ## Step 4: tokens/s against batch size: where decoding stops being memory-bound
#
# Decode B sequences at once and a step still reads every weight once, but now uses each for B
# multiplies and B adds: 2 · weights · B floating-point operations (flops), plus attention over the cache,
# which is small at short contexts. The bytes barely grow (only the cache does). So the **arithmetic
# intensity**, flops per byte read, grows with B:

# %%
sweep_prompt, sweep_new = 4, 6  # short: the cache stays tiny and the prompt's pass cheap at batch 64
sweep_context = sweep_prompt + sweep_new // 2
batches = [1, 2, 4, 8, 16, 32, 64]
flops = {b: 2 * weights * b for b in batches}
step = {b: decode_step_bytes(config, b, sweep_context) for b in batches}
print(f"{'batch':>5} {'flops per step':>15} {'bytes per step':>15} {'flops per byte':>14}")
for b in batches:
    print(f"{b:>5} {flops[b]:>15,} {step[b]:>15,} {flops[b] / step[b]:>14.3g}")

# %% [markdown]
# A processor has two speeds: how many bytes per second it reads, and how many flops per second it
# computes. A step takes at least as long as the slower of the two needs, which gives a **roofline**:
#
# **time per step = max(bytes / bandwidth, flops / flop rate)**,  tokens/s = B / time per step
#
# At small B the bytes win: the step time is flat and tokens/s grow in proportion to B, for free. Past a
# crossover B\*, where the two times are equal, the arithmetic wins and tokens/s stop growing. To predict
# B\* we need the flop rate: time a large fp32 matrix product, 1024 × 1024 by 1024 × 1024 (2 · 1024³ flops).

# %%
a, b_ = torch.randn(1024, 1024), torch.randn(1024, 1024)
a @ b_  # warm-up
best = float("inf")
for _ in range(20):  # ~10 ms each: the best of many, as for the bandwidth
    start = time.perf_counter()
    a @ b_
    best = min(best, time.perf_counter() - start)
flop_rate = 2 * 1024**3 / best  # flops per second
del a, b_


def predicted(b):
    """Roofline tokens/s at batch b: b tokens per step, the step as slow as its bytes or its flops."""
    return b / max(step[b] / (bandwidth * 1e9), flops[b] / flop_rate)


# the crossover: bytes(B) / bandwidth = 2 · weights · B / flop rate, with bytes(B) = bytes(0) + B · cache bytes
cache_per_row = step[2] - step[1]
crossover = (step[1] - cache_per_row) / (bandwidth * 1e9) / (2 * weights / flop_rate - cache_per_row / (bandwidth * 1e9))

# %%
# NBVAL_IGNORE_OUTPUT
# why: the flop rate is measured on this machine; the assert checks only that it was measured
print(f"matrix product: {flop_rate / 1e9:.1f} GFLOP/s; memory: {bandwidth:.1f} GB/s")
print(f"the machine's balance: {flop_rate / (bandwidth * 1e9):.1f} flops per byte read")
print(f"predicted crossover: B* = {crossover:.1f}")
assert flop_rate > 0 and crossover > 0

# %% [markdown]
# The crossover is the machine's balance, flops per byte, divided by the 2 · weights / bytes ≈ 0.5 flops per
# byte a step does at batch 1. Now measure the fast path at each batch size (random 4-token prompts,
# 6 new tokens each, timed as in Step 3).

# %%
batched = FastDecoder(model, max_batch_size=max(batches), max_len=sweep_prompt + sweep_new)
measured = {}
for b in batches:
    prompts = torch.randint(0, V, (b, sweep_prompt), generator=torch.Generator().manual_seed(b))
    r = measure({"fast": lambda k: batched.generate(prompts, max_new_tokens=k)}, b, sweep_new, repeats, cpu)["fast"]
    assert r["ids"].shape == (b, sweep_prompt + sweep_new)
    measured[b] = r["decode_tokens_per_s"]
del batched

# %%
# NBVAL_IGNORE_OUTPUT
# why: tokens/s measured on this machine; the asserts check only what holds on any machine
print(f"{'batch':>5} {'measured tokens/s':>18} {'roofline':>9} {'measured / roofline':>20}")
for b in batches:
    print(f"{b:>5} {measured[b]:>18.1f} {predicted(b):>9.1f} {measured[b] / predicted(b):>20.0%}")
assert measured[8] > 1.5 * measured[1]  # batching is nearly free while memory-bound
assert all(measured[b] < 1.5 * b * bandwidth * 1e9 / step[b] for b in batches)  # physics: the bytes' bound holds

# %%
# NBVAL_IGNORE_OUTPUT
# why: a plot of the measured tokens/s above and of the roofline from the measured rates
fine = torch.logspace(0, 6, 200, base=2).tolist()  # batch 1 … 64
memory_line = [b * bandwidth * 1e9 / (step[1] + (b - 1) * cache_per_row) for b in fine]
compute_line = [flop_rate / (2 * weights)] * len(fine)
fig, ax = plt.subplots(figsize=(7.5, 4.5))
ax.plot(fine, memory_line, color="tab:blue", ls=":", label="memory alone: B · bandwidth / bytes")
ax.plot(fine, compute_line, color="tab:red", ls=":", label="arithmetic alone: flop rate / (2 · weights)")
ax.plot(fine, [min(m, c) for m, c in zip(memory_line, compute_line)], color="k", lw=2, alpha=0.5,
        label="roofline: the slower of the two")
ax.plot(batches, [measured[b] for b in batches], "o-", color="tab:green", label="fast path, measured")
ax.axvline(crossover, color="gray", ls="--")
ax.text(crossover * 1.05, 1.4 * compute_line[0], f"B* = {crossover:.1f}", color="gray")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(batches, [str(b) for b in batches])
ax.set_xlabel("batch size B (sequences decoded together)")
ax.set_ylabel("decode tokens/s (all sequences)")
ax.set_title("GPT-2 124M shape, fp32: tokens/s grow with B until the arithmetic catches up")
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
save_figure(fig, "12_tokens_vs_batch")
plt.show()

# %% [markdown]
# Read the roofline for its shape. Left of B\* the measured line climbs with B: the weights are read once
# per step whatever B is, so more sequences ride along almost for free. Near B\* it flattens: the step now
# waits for the arithmetic. The measured points sit below the roofline, which is a best case (a point
# above it means the flop rate or the bandwidth was measured at a busy moment): it
# assumes both speeds are reached at once and ignores Python, attention and the per-token work outside the
# matrices, and a matrix of B rows runs below the flop rate of a 1024 × 1024 product. This is why servers
# batch many users' requests together, and why a batch-1 benchmark and a batch-64 one measure different
# things.

# %% [markdown]
# ## Step 5: int8 weights by hand
#
# If the bytes set the speed, store fewer bytes. **int8**: each weight becomes one byte, an integer in
# [−127, 127], and each row of a matrix keeps one float scale, its largest |weight| / 127:
#
#     scale[o] = max_i |w[o, i]| / 127
#     q[o, i]  = round(w[o, i] / scale[o])      # an int8
#     w ≈ q · scale[o]                          # off by at most half a scale
#
# Take a real matrix: the MLP's up-projection of the first block of the shipped `shakespeare` model.

# %%
small = minigpt.load_model("shakespeare")
w = small.transformer.h[0].mlp.c_fc.weight.detach()  # (out, in) = (768, 192)
absmax = w.abs().amax(dim=1)  # (768,): each row's largest |weight|
scale = absmax / 127  # (768,)
q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (768, 192): one byte each
back = q.float() * scale[:, None]  # dequantized: the floats the integers stand for

lib_q, lib_scale = quantize_per_channel(w)
assert torch.equal(q, lib_q) and torch.equal(scale, lib_scale)
assert torch.equal(back, dequantize(lib_q, lib_scale))
print(f"w {tuple(w.shape)}: {w.numel() * 4:,} bytes in fp32, {q.numel():,} + {scale.numel() * 4:,} (scales) in int8")
print("by hand == minigpt.quantize.quantize_per_channel and dequantize, exactly")

# %% [markdown]
# Rounding moves each weight to the nearest multiple of its row's scale, so the error, measured in units of
# that scale, lies in [−0.5, 0.5], spread evenly (the spike at 0 in the figure: each row's largest weight,
# which lands exactly on ±127). Why one scale per *row*? With one scale for the whole
# matrix (the largest |weight| of all, / 127), a row whose weights are all small gets only a few of the 255
# integer levels and loses most of what it held.

# %%
error = (back - w) / scale[:, None]  # in units of each row's scale
assert error.abs().max() <= 0.5 + 1e-5  # half a scale, but for float32's own rounding
one_scale = w.abs().max() / 127
back_one = torch.round(w / one_scale).clamp(-127, 127) * one_scale
rms_row = ((back - w) ** 2).mean(dim=1).sqrt()  # (768,): each row's rms error, per-row scales
rms_one = ((back_one - w) ** 2).mean(dim=1).sqrt()  # the same, one scale for the whole matrix
levels = torch.round(absmax / one_scale)  # the largest integer each row reaches with one scale
assert rms_one.mean() > 1.3 * rms_row.mean()
print(f"each row's largest |weight|: from {absmax.min():.3f} to {absmax.max():.3f}")
print(f"with one scale, the median row reaches only ±{levels.median().int()} of ±127")
print(f"mean rms error per row: {rms_row.mean():.3g} with a scale per row, {rms_one.mean():.3g} with one "
      f"scale ({rms_one.mean() / rms_row.mean():.3g}x)")

# %%
order = absmax.argsort()
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.hist(error.flatten(), bins=50, range=(-0.5, 0.5), color="tab:blue")
left.set_xlabel("(dequantized − w) / scale of its row")
left.set_ylabel("weights")
left.set_title("Rounding error: even over [−½, ½] of a scale")
right.plot(rms_one[order], ".", ms=3, color="tab:red", label="one scale for the whole matrix")
right.plot(rms_row[order], ".", ms=3, color="tab:blue", label="one scale per row")
right.set_xlabel("row, from smallest to largest |weight|")
right.set_ylabel("rms error of the row")
right.set_ylim(bottom=0)
right.set_title("One scale for all: every row pays the largest row's error")
right.legend()
fig.suptitle("int8 absmax quantization of shakespeare's h[0].mlp.c_fc.weight (768 × 192)")
fig.tight_layout()
save_figure(fig, "12_int8_error")
plt.show()

# %% [markdown]
# ### What int8 costs: the held-out loss
#
# `minigpt.quantize.quantize_model` turns every matrix of a model (the tied head included) into int8
# this way. How the products are then computed is the *kernel*'s choice, and there are two: **weight-only**
# (each weight is widened back to float as it is read, the activations stay float) and **dynamic**
# (fbgemm, x86 only: the activations are rounded to 8 bits too and the product runs in integers).
# `quantize_model(kernel="auto")` and `FastDecoder(weights="int8")` time both on your CPU and keep the
# faster (`minigpt.quantize.choose_int8_kernel`).
#
# For a loss that prints the same on every machine we take weight-only, which runs everywhere. Its
# arithmetic is x @ (q · scale)ᵀ: the dequantized matrices in an ordinary fp32 model. On many CPUs that is
# also the quicker way to score 16 windows of 256 tokens (torch's weight-only kernel is built for a few
# rows at a time), so we score a copy holding the dequantized matrices, after checking on 32 tokens that
# it gives `quantize_model(kernel="weight-only")`'s logits.

# %%
def dequantized_copy(model):
    """A copy of ``model`` whose every nn.Linear holds its int8 matrix, dequantized (weight-only int8)."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if isinstance(module, torch.nn.Linear):
            # a new Parameter: the head stops sharing the token table, which the lookup still reads in fp32
            module.weight = torch.nn.Parameter(dequantize(*quantize_per_channel(module.weight)))
    return clone.eval()


_, heldout = load_splits()
block = small.config.block_size
int8_small = dequantized_copy(small)
weight_only = quantize_model(small, kernel="weight-only")
with torch.no_grad():
    window = heldout[None, :32]  # (1, 32)
    assert torch.allclose(int8_small(window), weight_only(window), atol=1e-4)
fp32_loss = heldout_loss(small, heldout, block, max_windows=16)
int8_loss = heldout_loss(int8_small, heldout, block, max_windows=16)
assert abs(fp32_loss - 4.105) < 0.01 and abs(int8_loss - fp32_loss) < 0.02
print(f"held-out loss, 16 windows of {block} tokens: fp32 {fp32_loss:.3f}, int8 weight-only {int8_loss:.3f} "
      f"nats/token (they differ by {abs(int8_loss - fp32_loss):.3f})")
del int8_small, weight_only

# %% [markdown]
# A quarter of the bytes for no visible loss: rounding each weight by at most half a scale is noise the
# model barely notices. The dynamic kernel also rounds the activations, which costs a little more. It
# runs only where fbgemm does (x86 with AVX2), so its number is machine-dependent:

# %%
# NBVAL_IGNORE_OUTPUT
# why: the dynamic kernel exists only on x86 CPUs with AVX2, and rounds activations differently with VNNI
if "dynamic" in int8_kernels_here():
    dynamic_loss = heldout_loss(quantize_model(small, kernel="dynamic"), heldout, block, max_windows=16)
    print(f"int8 dynamic: {dynamic_loss:.3f} nats/token ({dynamic_loss - fp32_loss:+.4f} against fp32)")
    assert abs(dynamic_loss - fp32_loss) < 0.02
else:
    print("this CPU has no fbgemm: only the weight-only kernel runs here")
print("the kernel FastDecoder(weights='int8') picks here:",
      choose_int8_kernel("auto", small.transformer.h[0].mlp.c_fc.weight.detach()))

# %% [markdown]
# ### What int8 buys: the speed
#
# Back to the GPT-2 124M shape. With int8 matrices a step reads a quarter of the bytes, plus one fp32
# scale per row, with biases and norms kept in fp32; the bound moves up almost four times:

# %%
int8_bytes = decode_step_bytes(config, 1, context_len, weights="int8")
fp32_bytes = decode_step_bytes(config, 1, context_len)
scales = n_layer * 9 * C + V  # one fp32 scale per output row of every matrix, the head's included
fp32_rest = n_layer * (biases + norms) + 2 * C  # biases and norms stay fp32
assert int8_bytes == (n_layer * matrices + head) + 4 * scales + 4 * fp32_rest + 2 * n_layer * context_len * C * 4
print(f"bytes per step, batch 1, context {context_len}: fp32 {fp32_bytes:,}, int8 {int8_bytes:,} "
      f"({fp32_bytes / int8_bytes:.2f}x fewer)")

# %%
int8 = FastDecoder(model, max_batch_size=1, max_len=prompt_len + n, weights="int8")
results |= measure({"fast path, int8": lambda k: int8.generate(ids, max_new_tokens=k)}, 1, n, repeats, cpu)
assert results["fast path, int8"]["ids"].shape == results[fastest_path]["ids"].shape  # as many tokens
int8_bound = bound * fp32_bytes / int8_bytes

# %%
# NBVAL_IGNORE_OUTPUT
# why: tokens/s measured on this machine, and the kernel int8 picks depends on the CPU
int8_rate = results["fast path, int8"]["decode_tokens_per_s"]
step = "C step" if int8.native_step is not None else "torch step"
print(f"{fastest_path}, fp32: {rates[fastest_path]:6.1f} tokens/s, bound {bound:6.1f}")
print(f"fast path, int8: {int8_rate:6.1f} tokens/s, bound {int8_bound:6.1f}  ({step}, kernel {int8.int8_kernel})")
print(f"int8 / fp32: {int8_rate / rates[fastest_path]:.2f}x")
assert int8_rate < 1.5 * int8_bound

# %% [markdown]
# Whether int8 is faster here depends on the kernel your CPU has. The integers cannot be multiplied as
# they are stored: a kernel must widen each one to float as it reads it (weight-only) or round the
# activations to 8 bits and multiply in integers (dynamic). Either costs instructions per weight. Where a
# fast kernel exists (fbgemm's with AVX2 or AVX-512 VNNI, or an AVX-512 weight-only kernel), that work
# hides under the memory's time and int8 approaches its higher bound. Where none exists, the widening
# costs more than the bytes saved, and int8 is *slower* than fp32: `minigpt.quantize` records a weight-only
# kernel 1.7× slower than fp32 on an AVX2 CPU. Fewer bytes raise the ceiling; only a good kernel reaches it.
# The C step has one of its own: it rounds the activations exactly as fbgemm does, then adds integer
# products 64 at a time (AVX-512 VNNI) or 16 (AVX2), so it picks torch's int8 tokens without torch's
# per-op toll, which weighs more here, where the bytes are a quarter.

# %%
del int8

# %% [markdown]
# ## What we saw
#
# - **A batch-1 decode step reads every weight once**: 123,653,376 numbers for GPT-2 124M (the position
#   table excepted), 495 MB in fp32, plus the KV cache, 2 · n_layer · batch · context · n_embd numbers.
# - **So its time is bytes / bandwidth**, with the read-only bandwidth: on a CPU that is a few dozen
#   tokens/s at most, and every decoder measured sat below that line.
# - **The rest of a step is small operations that run cold**: after each matmul has streamed megabytes
#   through the caches, a layer norm costs several times its usual time. Doing the whole step in one C
#   function pays that toll once per token instead of ~300 times.
# - **Batching is nearly free while memory-bound**: the weights are read once for the whole batch, so
#   tokens/s grow with B until the arithmetic catches up at B\* = (flops per byte the machine can do) /
#   (flops per byte a step needs).
# - **int8 weights** (one scale per row) cut the bytes to about a quarter for a held-out loss change below
#   0.001 nats/token; how much of the higher bound is reached depends on the CPU's int8 kernel.
#
# `minigpt bench` measures exactly this on your machine: by default fp32 and int8 at batch 1 and 8, the
# readable loop, the fast path and transformers (with torch's `quantize_dynamic` as int8's peer) side by
# side, each against its bandwidth bound, and the int8 loss on the shipped model. The
# [exercises](exercises/12_memory_bound_exercises.ipynb) have you write the quantization, the bytes of a
# step and the bound yourself.

# %% [markdown]
# ## Sources
#
# - **Decoding is memory-bound, and batching trades memory time for arithmetic**: Pope, R., Douglas, S.,
#   Chowdhery, A., Devlin, J., Bradbury, J., Levskaya, A., Heek, J., Xiao, K., Agrawal, S., & Dean, J.
#   (2022). *Efficiently Scaling Transformer Inference*. arXiv:2211.05102 (MLSys 2023).
# - **The roofline** (Step 4): Williams, S., Waterman, A., & Patterson, D. (2009). *Roofline: An Insightful
#   Visual Performance Model for Multicore Architectures*. Communications of the ACM, 52(4), 65–76.
# - **Measuring memory bandwidth with a copy** (Step 2): McCalpin, J. D. (1995). *Memory Bandwidth and
#   Machine Balance in Current High Performance Computers*. IEEE Computer Society Technical Committee on
#   Computer Architecture (TCCA) Newsletter.
# - **Integer quantization with a scale** (Step 5): Jacob, B., Kligys, S., Chen, B., Zhu, M., Tang, M.,
#   Howard, A., Adam, H., & Kalenichenko, D. (2018). *Quantization and Training of Neural Networks for
#   Efficient Integer-Arithmetic-Only Inference*. CVPR 2018. arXiv:1712.05877.
# - **int8 weights for large language models, absmax per row** (Step 5): Dettmers, T., Lewis, M., Belkada,
#   Y., & Zettlemoyer, L. (2022). *LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale*.
#   NeurIPS 2022. arXiv:2208.07339.
# - **GPT-2 124M**, the shape measured throughout: Radford, A., Wu, J., Child, R., Luan, D., Amodei, D., &
#   Sutskever, I. (2019). *Language Models are Unsupervised Multitask Learners*. OpenAI technical report.
