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
# rule stops holding (large batches) and moves the bound itself: int8 weights (a quarter of the bytes), then
# the 8- and 4-bit formats of llama.cpp's GGUF files, built by hand, their loss and their speed, with llama.cpp
# itself on the same bytes.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
seed = 0  # the random weights of the GPT-2-shaped model, and its random prompts
prompt_len = 16  # tokens in the decoders' random prompt (Step 3)
new_tokens = 16  # tokens each decoder makes, greedily (Step 3)
rounds = 5  # how many turns every timed thing takes (at least 2, for a spread)

# %%
# %matplotlib inline
import copy
import math
import re
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize
from IPython.display import Markdown, display

import minigpt
from minigpt.bench import measure, read_kernels, to_transformers, transformers_generate
from minigpt.bench.peers import LlamaCppDecoder, llama_cpp_version
from minigpt.data import load_splits
from minigpt.fast import FastDecoder, UnsupportedOptions, native
from minigpt.generate import generate
from minigpt.metrics import interleaved_times, separated, spread
from minigpt.model import GPT, GPTConfig
from minigpt.quantize import (
    choose_int8_kernel,
    dequantize,
    dequantize_q4_0,
    dequantize_q8_0,
    gguf_blocks,
    int8_kernels_here,
    is_rounded,
    quantize_model,
    quantize_per_channel,
    quantize_q4_0,
    quantize_q8_0,
    round_matrix,
    round_weights,
)
from minigpt.roofline import bandwidth_bound, decode_step_bytes, weight_count
from minigpt.train import heldout_loss
from minigpt.viz import MARKERS, OKABE_ITO, save_figure

default_run = (seed, prompt_len, new_tokens) == (0, 16, 16)
torch.manual_seed(seed)
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
for name, count in (("4 matrices", matrices), ("their biases", biases), ("2 layer norms", norms)):
    print(f"per block, {name:>13}: {count:>11,}")
print(f"{n_layer} blocks:               {n_layer * per_block:>11,}")
print(f"final layer norm:          {2 * C:>11,}")
print(f"head (token table, tied):  {head:>11,}  ({4 * head / 1e6:.0f} MB in fp32)")
print(f"read per step:             {weights:>11,} weights  (== weight_count(config))")
print(f"in fp32, 4 bytes each:     {4 * weights / 1e6:>11.1f} MB")
print(f"not read (position table): {wpe:>11,}")

# %% [markdown]
# In fp32 each weight is 4 bytes. The step also reads the KV cache (chapter 7): for each sequence of the
# batch, in every layer, a key and a value of C numbers for each of its cached positions:
#
# **bytes per step = 4 · weights + 2 · n_layer · batch · context · C · 4**
#
# The weights are read once for the whole batch; the cache once per sequence. This arithmetic, and the
# bound it gives below, is `minigpt.roofline` (`weight_count`, `decode_step_bytes`, `bandwidth_bound`):
# the next cell checks our count against it.

# %%
def step_bytes(batch_size, context_len):
    return 4 * weights + 2 * n_layer * batch_size * context_len * C * 4


print(f"{'batch':>5} {'context':>7} {'bytes per step':>15} {'of which KV cache':>18} {'cache share':>11}")
cache_share = {}
for batch_size, context_len in ((1, 0), (1, 128), (1, 1024), (8, 128), (8, 1024), (64, 1024)):
    total = step_bytes(batch_size, context_len)
    assert total == decode_step_bytes(config, batch_size, context_len)
    cache = total - 4 * weights
    cache_share[batch_size, context_len] = cache / total
    print(f"{batch_size:>5} {context_len:>7} {total:>15,} {cache:>18,} {cache / total:>11.1%}")
assert cache_share[1, 128] < 0.05 and cache_share[64, 1024] > 0.9  # weights dominate, then the cache does

# %% [markdown]
# At batch 1 with a short context, a token costs about half a gigabyte of reading, nearly all of it
# weights. The cache share grows with context × batch: at batch 64 and the full 1,024-token context the
# cache is 90.7% of the bytes, and the weights no longer dominate.

# %%
contexts = torch.arange(0, config.block_size + 1, 32).tolist()
fig, ax = plt.subplots(figsize=(7, 4))
for (batch_size, marker, ls) in ((1, "o", "-"), (8, "s", "--"), (64, "^", ":")):
    share = [1 - 4 * weights / decode_step_bytes(config, batch_size, t) for t in contexts]
    ax.plot(contexts, [100 * s for s in share], marker=marker, ms=3, ls=ls, label=f"batch {batch_size}")
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

# %%
# NBVAL_IGNORE_OUTPUT
# why: bandwidth measured on this machine, never the same twice; the assert checks only that it was measured
print(f"copy by hand (read + write): {copy_gb_s:.1f} GB/s")
assert copy_gb_s > 0

# %% [markdown]
# Which figure bounds decoding? A decode step *reads* half a gigabyte of weights and writes almost
# nothing: one key and one value per layer for the new token, and a few rows of activations (next cell).
# So the right figure is the read-only one. A copy mixes in writes, which many CPUs pay for twice (a write
# first reads the line it lands in), so it usually understates how fast reading alone can go.
#
# Reading alone, then, and with more than one kernel, because no single kernel reaches the memory's speed
# on every CPU: a sum; a matrix-vector product, which is exactly what a batch-1 decode step does to every
# weight matrix, over the matrix stored (out, in) (`torch mv`) or (in, out) (`torch vm`); and the C step's
# own product (below), where a C compiler is found. Each reads a tensor as large as the bytes of one
# decode step of Step 3, so that the cache holds as much (or as little) of it as it holds of a step's
# weights. They take turns, and each keeps its fastest read.

# %%
written = 2 * n_layer * C * 4  # fp32 bytes a step writes: the new token's key and value, in every layer
context_len = prompt_len + new_tokens // 2  # the average context over Step 3's decode steps
read_bytes = decode_step_bytes(config, 1, context_len)  # what one of its decode steps reads
print(f"a decode step writes {written:,} bytes of cache and reads {read_bytes:,} ({written / read_bytes:.3%})")

# %%
x = torch.ones(read_bytes // 4096 * 1024)  # whole rows of 1024 fp32 numbers: as many bytes as a step reads
kernel_times = interleaved_times(read_kernels(x), repeats=rounds)  # seconds per read, each kernel in turn
kernel_gb_s = {name: x.nbytes / t.low / 1e9 for name, t in kernel_times.items()}  # each one's fastest read
del x

# %%
# NBVAL_IGNORE_OUTPUT
# why: bandwidth measured on this machine; the asserts check only that it was measured
for name, t in kernel_times.items():
    print(f"{name:>13}: {kernel_gb_s[name]:5.1f} GB/s at best; one read {t.mean * 1e3:5.1f} ± {t.stderr * 1e3:.1f} ms "
          f"(min {t.low * 1e3:.1f}, max {t.high * 1e3:.1f}, {t.n} reads)")
assert all(rate > 0 for rate in kernel_gb_s.values())

# %% [markdown]
# The bound a bandwidth gives is one no decoder can beat:
#
# **bound (tokens/s) = batch × bandwidth / bytes per step**
#
# But it is only as good as the bandwidth measured. Every reading is a *lower* limit on what the memory
# can deliver: a read that caught the machine busy, or a kernel that streams less well than a decoder's
# own, reads slower than the memory could. If a decoder ever came out above the bound, it would not have
# read faster than memory; it would show that our reading was low, and that the decoder itself is the
# better reader. So the bound takes the best reading we have, and keeps reading: in Step 3, right before
# each decoder's turn, the same bytes are read again with every kernel above, so that a quiet moment the
# decoders enjoy is one the readings can enjoy too. The bound is set after the decoders have run.
# (`minigpt.bench.measure_bandwidth` does the same reading in one call; `minigpt bench` uses it.)

# %% [markdown]
# ## Step 3: four decoders against the bound
#
# Four ways to decode the same model greedily, one sequence, a random prompt of `prompt_len` tokens,
# `new_tokens` new tokens:
#
# - the **readable loop**, `minigpt.generate.generate`, the one the chapters teach;
# - the **fast path with torch's step**, `minigpt.fast.FastDecoder(matmul="tuned")`: the same tokens, a
#   pre-allocated cache, and for each matrix the fastest kernel this CPU has (it times them);
# - the **fast path with the C step**, `FastDecoder`'s default wherever a C compiler is found: the same
#   decoder, but each decode step runs as one function in C, compiled for your CPU (`minigpt.fast.native`;
#   the end of this step shows why);
# - **transformers**, Hugging Face's `generate` on a `GPT2LMHeadModel` holding the same weights.
#
# Each is timed the way `minigpt bench` does it (`minigpt.bench.measure`): after a warm-up, the time of
# all the new tokens minus the time of 1 token covers the decode steps and nothing else (the prompt's
# pass and any fixed setup cost cancel out). They take turns, `rounds` rounds, and before each decoder's
# turn the memory is read again, one pass with every kernel of Step 2; every round gives each decoder one
# reading of its tokens/s. (A fifth decoder takes its turns with them, the fast path with int8 weights,
# and the memory is read in its size too; Step 5 explains both.)

# %%
ids = torch.randint(0, V, (1, prompt_len), generator=torch.Generator().manual_seed(seed))  # (1, prompt_len)
fast = FastDecoder(model, max_batch_size=1, max_len=prompt_len + new_tokens, matmul="tuned")  # torch's step
c_fast = FastDecoder(model, max_batch_size=1, max_len=prompt_len + new_tokens)  # the C step, where it builds
hf = to_transformers(model)
runs = {
    "readable loop": lambda k: generate(model, ids, max_new_tokens=k).ids,
    "fast (torch step)": lambda k: fast.generate(ids, max_new_tokens=k).ids,
    "fast (C step)": lambda k: c_fast.generate(ids, max_new_tokens=k).ids,
    "transformers": lambda k: transformers_generate(hf, ids, k),
}
if c_fast.native_step is None:  # no C compiler here: the default decoder is torch's step again
    del runs["fast (C step)"]
# Step 5's int8 fast path takes its turns here too (its numbers wait for Step 5), with a reading of its own size
int8 = FastDecoder(model, max_batch_size=1, max_len=prompt_len + new_tokens, weights="int8")
runs["fast path, int8"] = lambda k: int8.generate(ids, max_new_tokens=k).ids
int8_read_bytes = decode_step_bytes(config, 1, context_len, weights="int8")
memory = {nbytes: torch.ones(nbytes // 4096 * 1024) for nbytes in (read_bytes, int8_read_bytes)}  # to read
readings = {nbytes: [] for nbytes in memory}  # GB/s by the bytes read: one pass with each kernel of Step 2


def read_memory(nbytes=read_bytes):
    for read in read_kernels(memory[nbytes]).values():
        start = time.perf_counter()
        read()
        readings[nbytes].append(memory[nbytes].nbytes / (time.perf_counter() - start) / 1e9)


results = measure(runs, 1, new_tokens, rounds, cpu, between=lambda: (read_memory(), read_memory(int8_read_bytes)))
int8_result = results.pop("fast path, int8")
int8_step = "C step" if int8.native_step is not None else "torch step"
int8_kernel = int8.int8_kernel
del int8
tuned = fast.tuned.get(1, {})  # the kernel the fast path timed fastest per matrix shape (in, out), at batch 1
del hf, runs  # transformers' copy of the weights (500 MB); the fast paths' serve the next sections too
bandwidth = max(*readings[read_bytes], *kernel_gb_s.values())  # GB/s: the best reading of them all
bound = bandwidth * 1e9 / read_bytes  # tokens/s at batch 1
assert abs(bound - bandwidth_bound(config, bandwidth, 1, context_len)) < 1e-9 * bound
best = {name: r["decode_tokens_per_s"] for name, r in results.items()}  # each decoder's fastest round
spreads = {name: spread(r["decode_runs"]) for name, r in results.items()}
assert all(abs(spreads[name].high - best[name]) < 1e-9 * best[name] for name in results)

# %% [markdown]
# First what holds on every machine: the decoders pick the same tokens. (These are random weights, so the
# tokens mean nothing; with the default inputs each step's best token leads the runner-up by a clear
# margin, so no CPU's rounding can swap them. With other inputs a step can be a near tie, where two CPUs,
# or two decoders, may round to different tokens; the check stops at the first such step.)

# %%
reference = results["readable loop"]["ids"]
assert reference.shape == (1, prompt_len + new_tokens)
with torch.no_grad():
    logits = model(reference[:, :-1])[0, prompt_len - 1 :]  # (new_tokens, V): what each new token was picked from
top2 = logits.topk(2, dim=-1).values
margins = top2[:, 0] - top2[:, 1]  # (new_tokens,): how far each step's best token leads
assert torch.equal(logits.argmax(dim=-1), reference[0, prompt_len:])
clear = int((margins > 1e-3).cumprod(0).sum())  # steps before the first near tie (a hundred times CPU noise)
for name, r in results.items():
    assert torch.equal(r["ids"][:, : prompt_len + clear], reference[:, : prompt_len + clear]), name
if default_run:
    assert clear == new_tokens
print(f"every decoder timed: the same {clear} new tokens", "(all of them)" if clear == new_tokens else "")
print("every step's best token leads the runner-up by more than 1e-3" if clear == new_tokens else
      f"step {clear + 1} is a near tie: its best token leads by {margins[clear]:.1e}")

# %%
# NBVAL_IGNORE_OUTPUT
# why: tokens/s and GB/s measured on this machine; the asserts check only what holds on any machine
fp32_readings = spread(readings[read_bytes])
print(f"{fp32_readings.n} bandwidth readings beside the decoders' turns: {fp32_readings.low:.1f} to "
      f"{fp32_readings.high:.1f} GB/s, mean {fp32_readings.mean:.1f}; Step 2's best {max(kernel_gb_s.values()):.1f}")
print(f"bound: {bandwidth:.1f} GB/s / {read_bytes:,} bytes = {bound:.1f} tokens/s\n")
print(f"{'decoder':>17} {'best round':>10} {'of bound':>8} {'reads':>10}   {'all rounds: mean ± se (min-max)':>32}")
for name, s in spreads.items():
    print(f"{name:>17} {best[name]:10.1f} {best[name] / bound:8.0%} {best[name] * read_bytes / 1e9:5.1f} GB/s"
          f"   {s.mean:13.1f} ± {s.stderr:4.1f} ({s.low:.1f}-{s.high:.1f})")
above_bound = [name for name, rate in best.items() if rate > bound]  # a reading that caught the machine busy
print("\nno decoder's fastest round beat the best reading" if not above_bound else
      f"\n{', '.join(above_bound)} read faster than the best reading: the reading was low here (it caught the "
      "machine busy), not the memory slow")

# %% [markdown]
# The "reads" column turns each decoder's best round back into bytes per second: a decoder is a memory
# reader too, one that does arithmetic on the side. The line under the table says whether any decoder's
# fastest round came out above the bound. On a quiet machine none does; on a busy one it can, and then it
# shows what Step 2 warned of: the readings are lower limits, and that decoder read better than they did.

# %%
# NBVAL_IGNORE_OUTPUT
# why: which decoders the measurements can tell apart depends on the machine and the moment
order = sorted(spreads, key=lambda name: spreads[name].mean, reverse=True)
apart = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :] if separated(spreads[a], spreads[b])]
top, ties = order[0], [b for b in order[1:] if not separated(spreads[order[0]], spreads[b])]
if ties:
    verdict = (f"On this machine the measurements cannot name a fastest decoder: {top} and {', '.join(ties)} "
               "tie (their mean ± 2 standard errors overlap).")
else:
    verdict = f"On this machine {top} is the fastest: its rounds separate from every other decoder's."
display(Markdown(verdict + " Pairs that separate here (the first faster): "
                 + ("; ".join(f"{a} > {b}" for a, b in apart) if apart else "none") + "."))
assert all(spreads[a].mean > spreads[b].mean for a, b in apart)

# %%
# NBVAL_IGNORE_OUTPUT
# why: a plot of the measured tokens/s above
fig, ax = plt.subplots(figsize=(8, 4.5))
names = list(spreads)
for i, name in enumerate(names):
    s = spreads[name]
    runs_i = results[name]["decode_runs"]
    ax.plot([i] * len(runs_i), runs_i, MARKERS[i], color=OKABE_ITO["blue"], alpha=0.5, ms=6,
            label="one round" if i == 0 else None)
    ax.errorbar(i + 0.18, s.mean, yerr=2 * s.stderr, fmt="_", color="k", ms=14, capsize=4,
                label="mean ± 2 standard errors" if i == 0 else None)
ax.axhspan(fp32_readings.low * 1e9 / read_bytes, bound, color=OKABE_ITO["vermillion"], alpha=0.12, lw=0,
           label="the bounds of all the readings, lowest to best")
ax.axhline(bound, color="k", ls="--", label=f"the bound (best reading): {bound:.0f} tokens/s")
ax.set_xticks(range(len(names)), names)
ax.set_xlim(-0.5, len(names) - 0.5)
ax.set_ylim(0, 1.3 * bound)
ax.set_ylabel("decode tokens/s (batch 1)")
ax.set_title("GPT-2 124M shape, fp32, greedy: every round of every decoder, against the bound")
ax.legend(loc="upper left", fontsize=8, ncols=2)
fig.tight_layout()
save_figure(fig, "12_decoders_vs_bound")
plt.show()

# %% [markdown]
# The decoders read the same bytes; what separates them is the time each wastes around those bytes
# (Python, copies, a slower matrix kernel), and which one wins that differs from CPU to CPU. The dotted
# lines show why the bound is the best reading and not any one of them: on a machine shared with other
# programs, the memory's speed swings from one round to the next, and so do the decoders.
#
# Even the order of the bytes matters. At batch 1 a matrix-vector product walks the matrix row by row,
# and a kernel streams long rows better than short ones. `nn.Linear` stores a 768 → 3072 matrix as 3072
# rows of 768 numbers (out, in); stored the other way round, (in, out), it is 768 rows of 3072. On the Xeon
# this chapter was written on, MKL read every matrix with 768-number rows faster stored (in, out). So the
# torch step's first call times three kernels on its own matrices, shape by shape, and keeps the fastest:
# oneDNN and BLAS over (out, in), and BLAS over an (in, out) copy. What it chose on your machine:

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
assert len(step_matrices) == 4 * n_layer + 1
vectors = {width: torch.randn(1, width) for width in (config.n_embd, 4 * config.n_embd)}  # one row in


def matmuls_only():
    for w, *bias in step_matrices:
        fast.linear(vectors[w.shape[1]], w, *bias)


def one_step():  # the prompt's last token again, at the next position: a real step, cache and all
    fast.decode_one_token(ids[:, -1:], torch.tensor([[prompt_len]]), prompt_len)


with torch.inference_mode():
    parts = interleaved_times({"one decode step": one_step, "its matmuls alone": matmuls_only}, repeats=4 * rounds)
matmul_share = parts["its matmuls alone"].low / parts["one decode step"].low  # of the fastest of each

# %%
# NBVAL_IGNORE_OUTPUT
# why: milliseconds measured on this machine
for name, t in parts.items():
    print(f"{name:>18}: {t.low * 1e3:5.1f} ms at fastest, {t.mean * 1e3:5.1f} ± {t.stderr * 1e3:.1f} ms "
          f"(max {t.high * 1e3:.1f}, {t.n} turns)")
print(f"the matmuls are {matmul_share:.0%} of a step (fastest against fastest); everything else, "
      f"{1 - matmul_share:.0%}")
assert matmul_share > 0
if matmul_share < 1:  # the matmuls are part of the step, and not all of it: what a quiet machine shows
    display(Markdown(f"Here the matmuls are {'most' if matmul_share > 0.5 else 'less than half'} of a step "
                     f"({matmul_share:.0%}, each one's fastest turn against the other's)."))
else:  # other programs slowed the matmuls' turns more than the steps': the readings cannot tell them apart
    display(Markdown(f"Here the readings are inside the noise: the matmuls alone timed at {matmul_share:.0%} of "
                     "a whole step, which they are part of. The machine was busy; run this chapter again on "
                     "a quiet one."))

# %% [markdown]
# The rest is about two dozen small operations per layer (two layer norms, splitting the heads, writing
# the cache, attention, GELU, two residual adds), each on a few vectors of 768 numbers: a few
# microseconds of arithmetic. Yet together they cost a good share of the step (on a machine busy with
# other programs, more than that). The matmuls are a reason: each one streams megabytes through the CPU's
# caches and pushes out what the next small operation needs (its data, and torch's own code and tables),
# so that operation waits for memory too. Time one layer norm right after another, then right after the head's matmul (the
# 154 MB read of the table above):

# %%
row = torch.randn(1, config.n_embd)
befores = {"another layer norm": lambda: F.layer_norm(row, row.shape[1:]),
           "the head's matmul": lambda: fast.linear(row, *fast.head)}
layer_norm_times = {name: [] for name in befores}
with torch.inference_mode():
    for _ in range(4 * rounds):
        for name, before in befores.items():  # in turns
            before()
            start = time.perf_counter()
            F.layer_norm(row, row.shape[1:])
            layer_norm_times[name].append(time.perf_counter() - start)
after = {name: spread(times) for name, times in layer_norm_times.items()}

# %%
# NBVAL_IGNORE_OUTPUT
# why: microseconds measured on this machine
for name, t in after.items():
    print(f"a layer norm right after {name:>18}: {t.low * 1e6:5.1f} µs at fastest, "
          f"{t.mean * 1e6:5.1f} ± {t.stderr * 1e6:.1f} µs")
cold = after["the head's matmul"].low / after["another layer norm"].low
print(f"after the head's matmul: {cold:.1f} times as long, fastest against fastest")
assert cold > 1  # the big read evicted what it needs

# %% [markdown]
# Every small operation of a step pays that toll, hundreds of times a token: each is a call through
# Python and torch's dispatcher, whose code and tables the last matmul has just pushed out of the
# caches. The torch step keeps them few (each token is one row of a plain 2-D matrix from start to end,
# and one copy writes a layer's keys and values into the cache), but it cannot make them free.
#
# The **C step** makes the whole token one call: `minigpt/fast/csrc/decode_step.c`, compiled on first use by
# `minigpt.fast.native` for the instructions your CPU has (it asks torch which). Between two weight streams it
# does a few kilobytes of arithmetic with nothing to look up: a layer norm is a loop over 768 numbers.
# Its matrix-vector products read a matrix one row at a time, in memory order: each thread's share of the rows
# is one long stream, which the CPU's prefetchers learn and run ahead of (several rows at once would be several
# short streams, each to be learned again). Within a row it keeps a few independent partial sums, so that
# several multiply-adds are in flight, and it takes a few rows per call, read one after the other, whose
# sums it finishes only after their last loads: adding up a row's partial sums is a chain of dependent adds,
# and the next row's reads need not wait behind it (the next cell reads how many of each from the C
# source). The cache is read
# the same way: the threads split attention
# by positions, not by heads, because one position's keys and values for all 12 heads lie side by side,
# so consecutive positions are one block of memory (each block's softmax is finished against the others'
# at the end, as flash-decoding does). Split by heads, each read would jump over the other heads' numbers,
# a key and a value of a whole position, to reach its next position.

# %%
c_source = native.SOURCE.read_text()
row_sums, batch_rows, row_group = re.search(
    r"enum \{ PARTS = (\d+), NB_ROWWISE = (\d+), ROW_GROUP = (\d+) \};", c_source).groups()
print(f"decode_step.c reads a float matrix one row at a time, {row_group} rows per call, with {row_sums} partial "
      f"sums per row; up to {batch_rows} rows of a batch share each weight it loads")
print(f"one position's key and value, all heads: {2 * C * 4:,} bytes")

# %% [markdown]
# Time a step of each, taking turns:

# %%
# NBVAL_IGNORE_OUTPUT
# why: milliseconds measured on this machine, and the C step exists only where a C compiler does
def c_step():  # the same token as one_step, through the C step
    c_fast.decode_one_token(ids[:, -1:], torch.tensor([[prompt_len]]), prompt_len)


if c_fast.native_step is None:
    print("no C step here:", native.unavailable_reason())
    display(Markdown("Without a C compiler there is no C step to compare here."))
else:
    with torch.inference_mode():
        steps = interleaved_times({"torch step": one_step, "C step": c_step}, repeats=4 * rounds)
    for name, t in steps.items():
        print(f"one {name:>10}: {t.low * 1e3:5.1f} ms at fastest, {t.mean * 1e3:5.1f} ± {t.stderr * 1e3:.1f} ms")
    print(f"the torch step's matmuls alone: {parts['its matmuls alone'].low * 1e3:5.1f} ms at fastest")
    ratio = steps["C step"].mean / steps["torch step"].mean
    if separated(steps["C step"], steps["torch step"]):
        faster = "less" if ratio < 1 else "more"
        display(Markdown(f"Here the C step took {abs(1 - ratio):.0%} {faster} time than the torch step "
                         "(their mean ± 2 standard errors separate)."))
    else:
        display(Markdown("Here the C step and the torch step tie: their mean ± 2 standard errors overlap."))
del fast, c_fast, step_matrices  # the fast paths' copies of the weights

# %% [markdown]
# On the Xeon this chapter was written on, the C step took about a tenth less time than the torch step,
# often less than the torch step's matmuls alone. That is where the fast path's lead over transformers
# comes from, where it has one: transformers' GPT-2 runs its blocks' matmuls with one of the torch step's
# kernels (its `Conv1D` stores the matrices (in, out)), so the two differ mostly in what happens between
# the matmuls.

# %% [markdown]
# ## Step 4: tokens/s against batch size: where decoding stops being memory-bound
#
# Decode B sequences at once and a step still reads every weight once, but now uses each for B
# multiplies and B adds: 2 · weights · B floating-point operations (flops), plus attention over the cache,
# which is small at short contexts. The bytes barely grow (only the cache does). So the **arithmetic
# intensity**, flops per byte read, grows with B:

# %%
sweep_prompt, sweep_new = 4, 5  # short: the cache stays tiny and the prompt's pass cheap at batch 64
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
# At small B the bytes win: the step time is flat and tokens/s grow in proportion to B. Past a crossover
# B\*, where the two times are equal, the arithmetic wins and tokens/s stop growing. To predict B\* we need
# the flop rate: time a large fp32 matrix product, 1024 × 1024 by 1024 × 1024 (2 · 1024³ flops).

# %%
a, b_ = torch.randn(1024, 1024), torch.randn(1024, 1024)
a @ b_  # warm-up
flop_readings = []  # flops per second: like the bandwidth, read again before every round of the sweep below


def read_flops():  # the fastest of 4 products, ~10 ms each: 2 · 1024³ flops each
    fastest = interleaved_times({"matmul": lambda: a @ b_}, repeats=4)["matmul"].low
    flop_readings.append(2 * 1024**3 / fastest)


read_flops()

# %% [markdown]
# Now measure the fast path at each batch size (random 4-token prompts, `sweep_new` new tokens each,
# timed as in Step 3). All the batch sizes take turns, `rounds` rounds, each turn right after a bandwidth
# reading and a flop-rate reading, and the roofline takes the best of each: a best case. A measured point
# above the memory roof would again mean a low reading (the cell says so where one is); the arithmetic side is
# the rate of torch's matrix product, which the C step's own kernel can beat where torch runs its portable
# kernels.

# %%
batched = FastDecoder(model, max_batch_size=max(batches), max_len=sweep_prompt + sweep_new)
sweep_prompts = {b: torch.randint(0, V, (b, sweep_prompt), generator=torch.Generator().manual_seed(seed + b))
                 for b in batches}  # (b, 4) each
sweep_runs = {b: (lambda k, p=sweep_prompts[b]: batched.generate(p, max_new_tokens=k).ids) for b in batches}
# batch_size=1: each row's rate is then decode *steps* per second; times b sequences, tokens per second
sweep = measure(sweep_runs, 1, sweep_new, rounds, cpu, between=lambda: (read_memory(), read_flops()))
for b, r in sweep.items():
    assert r["ids"].shape == (b, sweep_prompt + sweep_new)
measured = {b: spread([b * rate for rate in sweep[b]["decode_runs"]]) for b in batches}  # tokens/s
sweep_c_step = batched.native_step is not None
del batched, sweep_runs, a, b_, memory
bandwidth = max(*readings[read_bytes], *kernel_gb_s.values())  # the best reading so far, Step 3's and the sweep's
flop_rate = max(flop_readings)  # flops per second, the best reading


def predicted(b):
    """Roofline tokens/s at batch b: b tokens per step, the step as slow as its bytes or its flops."""
    return b / max(step[b] / (bandwidth * 1e9), flops[b] / flop_rate)


def memory_roof(b):
    """Tokens/s at batch b if the step took only the time to read its bytes at the best bandwidth reading."""
    return b * bandwidth * 1e9 / step[b]


# the crossover: bytes(B) / bandwidth = 2 · weights · B / flop rate, with bytes(B) = bytes(0) + B · cache bytes
cache_per_row = step[2] - step[1]
bytes_per_s = bandwidth * 1e9
crossover = (step[1] - cache_per_row) / bytes_per_s / (2 * weights / flop_rate - cache_per_row / bytes_per_s)

# %%
# NBVAL_IGNORE_OUTPUT
# why: tokens/s, the flop rate and the bandwidth are measured on this machine; the asserts check only what holds
print(f"matrix product: {flop_rate / 1e9:.1f} GFLOP/s (the best of {len(flop_readings)} readings); memory: "
      f"{bandwidth:.1f} GB/s (the best of {len(readings[read_bytes]) + len(kernel_gb_s)})")
print(f"the machine's balance: {flop_rate / (bandwidth * 1e9):.1f} flops per byte read; "
      f"predicted crossover: B* = {crossover:.1f}\n")
print(f"{'batch':>5} {'best round':>10} {'roofline':>9} {'best / roofline':>15}   "
      f"{'all rounds: mean ± se (min-max)':>32}")
for b in batches:
    m = measured[b]
    print(f"{b:>5} {m.high:10.1f} {predicted(b):9.1f} {m.high / predicted(b):15.0%}   "
          f"{m.mean:13.1f} ± {m.stderr:5.1f} ({m.low:.1f}-{m.high:.1f})")
# the arithmetic roof is torch's matrix product's best rate, which the C step's own kernel can beat where torch
# runs its portable kernels; a round above the memory roof means the bandwidth reading was low (a busy moment)
above_roof = [b for b in batches if measured[b].high > memory_roof(b)]
print("\nno batch size's fastest round read faster than the best bandwidth reading" if not above_roof else
      f"\nbatch {', '.join(map(str, above_roof))}: faster than the memory roof, so the bandwidth reading was low here")
assert measured[64].high > measured[1].high  # batching pays: the fastest round of batch 64 beats batch 1's

# %%
# NBVAL_IGNORE_OUTPUT
# why: a plot of the measured tokens/s above and of the roofline from the measured rates
fine = torch.logspace(0, 6, 200, base=2).tolist()  # batch 1 … 64
memory_line = [b * bandwidth * 1e9 / (step[1] + (b - 1) * cache_per_row) for b in fine]
compute_line = [flop_rate / (2 * weights)] * len(fine)
roof = [min(m, c) for m, c in zip(memory_line, compute_line)]
knee = (crossover, flop_rate / (2 * weights))  # where the two lines meet
fig, (speed, time_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
for ax, scale in ((speed, lambda b, y: y), (time_ax, lambda b, y: 1e3 * b / y)):  # tokens/s, or ms per step
    ax.plot(fine, [scale(b, y) for b, y in zip(fine, memory_line)], color=OKABE_ITO["sky blue"], ls=":",
            label="memory alone: B · bandwidth / bytes")
    ax.plot(fine, [scale(b, y) for b, y in zip(fine, compute_line)], color=OKABE_ITO["vermillion"], ls="-.",
            label="arithmetic alone: flop rate / (2 · weights)")
    ax.plot(fine, [scale(b, y) for b, y in zip(fine, roof)], color="k", lw=2.5, alpha=0.6,
            label="roofline: the slower of the two")
    centre = [scale(b, measured[b].mean) for b in batches]
    ends = [sorted((scale(b, measured[b].low), scale(b, measured[b].high))) for b in batches]  # ms: low ↔ high
    ax.errorbar(batches, centre, yerr=[[c - lo for c, (lo, _) in zip(centre, ends)],
                                       [hi - c for c, (_, hi) in zip(centre, ends)]],
                fmt="o-", color=OKABE_ITO["blue"], capsize=3, label="fast path, measured (mean, min-max)")
    ax.plot(*(knee[0], scale(*knee)), "D", color="k", ms=9, zorder=5)
    ax.annotate(f"knee: B* = {crossover:.1f}", (knee[0], scale(*knee)), xytext=(12, -12),
                textcoords="offset points", ha="left", va="top",
                bbox=dict(boxstyle="round", fc="white", ec="0.6"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size B (sequences decoded together)")
speed.set_ylabel("decode tokens/s (all sequences)")
speed.set_title("tokens/s grow with B until the arithmetic catches up")
time_ax.set_ylabel("ms per decode step")
time_ax.set_title("a step's time: flat while memory-bound, then ∝ B")
speed.legend(fontsize=8, loc="upper left")
fig.suptitle("GPT-2 124M shape, fp32: the roofline from the measured rates, and the fast path measured")
fig.tight_layout()
save_figure(fig, "12_tokens_vs_batch")
plt.show()

# %% [markdown]
# Read the roofline for its shape. Left of the knee, B\*, its tokens/s climb in proportion to B and its
# step time is flat: the weights are read once per step whatever B is, so more sequences would ride along
# for free. Right of the knee the step waits for the arithmetic: its time grows with B and tokens/s stop
# growing. The roofline is a best case: it assumes both speeds are reached at once and ignores Python,
# attention and the per-token work outside the matrices, and a matrix of B rows runs below the flop rate
# of a 1024 × 1024 product. What the fast path measured here:

# %%
# NBVAL_IGNORE_OUTPUT
# why: built from the tokens/s measured on this machine
gain = {b: measured[b].mean / measured[1].mean for b in batches}  # tokens/s against batch 1's, by the means
step_time = {b: b / measured[b].mean for b in batches}  # seconds per step
more_at_8 = separated(measured[8], measured[1]) and gain[8] > 1
display(Markdown(
    f"- Batch 8 made {gain[8]:.2f}× the tokens/s of batch 1 (means of {rounds} rounds: "
    f"{measured[8].mean:.1f} ± {measured[8].stderr:.1f} against {measured[1].mean:.1f} ± {measured[1].stderr:.1f}"
    f"{'' if more_at_8 else '; inside the noise here'}), {gain[8] / 8:.0%} of the 8× the bytes alone would "
    f"allow. Batch 2 made {gain[2]:.2f}×, batch 64 {gain[64]:.2f}×.\n"
    f"- A step took {step_time[2] / step_time[1]:.2f}× as long at batch 2 as at batch 1, for "
    f"{step[2] / step[1] - 1:.2%} more bytes and twice the arithmetic"
    + (f"; the C step shares each weight it loads among up to {batch_rows} rows of the batch (the cell above "
       "printed it) and reads the row again, from its cache, for the next ones." if sweep_c_step else ".")
    + ("\n- Every batch size's fastest round sits at or below the memory roof (its bytes at the best bandwidth "
       "reading)" if not above_roof else
       f"\n- Batch {', '.join(map(str, above_roof))} came out above the memory roof: the bandwidth reading was low")
    + f"; the largest measured fraction of the roofline is {max(measured[b].high / predicted(b) for b in batches):.0%}."))
assert gain[8] < 8  # batching is not free: eight sequences cost more than one step's time

# %% [markdown]
# So batching pays, but not for free: each step does B times the arithmetic, with kernels that reach
# neither speed at once, and tokens/s grow more slowly than B long before the knee. This is still why
# servers batch many users' requests together (the gain is large even when it is not B-fold), and why a
# batch-1 benchmark and a batch-64 one measure different things.
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
# matrix (the largest |weight| of all, / 127), a row whose weights are all small reaches only part of the
# integer levels from −127 to 127, and rounds more coarsely than its own scale would.

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
left.hist(error.flatten(), bins=50, range=(-0.5, 0.5), color=OKABE_ITO["blue"])
left.set_xlabel("(dequantized − w) / scale of its row")
left.set_ylabel("weights")
left.set_title("Rounding error: even over [−½, ½] of a scale")
right.plot(rms_one[order], "x", ms=3, color=OKABE_ITO["vermillion"], label="one scale for the whole matrix")
right.plot(rms_row[order], "o", ms=2, color=OKABE_ITO["blue"], label="one scale per row")
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
weight_only_change = int8_loss - fp32_loss


def signed(change):
    """A loss change at 3 decimals with its sign, "+0.000" rather than "-0.000" for a change that rounds to 0."""
    return f"{round(change, 3) + 0.0:+.3f}"

assert abs(fp32_loss - 4.105) < 0.01
assert abs(weight_only_change) < 0.0005  # prints as 0.000 on every CPU: no visible change
print(f"held-out loss, 16 windows of {block} tokens: fp32 {fp32_loss:.3f}, int8 weight-only {int8_loss:.3f} "
      f"nats/token (they differ by {abs(weight_only_change):.3f})")
del int8_small, weight_only

# %% [markdown]
# Weight-only int8: a quarter of the bytes for no visible loss (the assert checks a change below 0.0005,
# which prints as 0.000): rounding each weight by at most half a scale is noise the model barely notices.
# The dynamic kernel also rounds the activations. It runs only where fbgemm does (x86 with AVX2), and
# what it costs depends on the CPU (it rounds the activations to fewer levels on CPUs without VNNI):

# %%
# NBVAL_IGNORE_OUTPUT
# why: the dynamic kernel exists only on x86 CPUs with AVX2, and rounds activations differently with VNNI
dynamic_change = None
if "dynamic" in int8_kernels_here():
    dynamic_loss = heldout_loss(quantize_model(small, kernel="dynamic"), heldout, block, max_windows=16)
    dynamic_change = dynamic_loss - fp32_loss
    print(f"int8 dynamic: {dynamic_loss:.3f} nats/token ({signed(dynamic_change)} against fp32, weight-only "
          f"{signed(weight_only_change)})")
    assert abs(dynamic_change) < 0.02  # small, though larger than weight-only's where we tried
else:
    print("this CPU has no fbgemm: only the weight-only kernel runs here")
int8_kernel_here = choose_int8_kernel("auto", small.transformer.h[0].mlp.c_fc.weight.detach())
print("the kernel FastDecoder(weights='int8') picks here:", int8_kernel_here)

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
assert fp32_bytes == read_bytes
print(f"bytes per step, batch 1, context {context_len}: fp32 {fp32_bytes:,}, int8 {int8_bytes:,} "
      f"({fp32_bytes / int8_bytes:.2f}x fewer)")

# %% [markdown]
# The fast path with int8 weights took its turns with the fp32 decoders in Step 3, each turn right after
# two bandwidth readings: one of as many bytes as an fp32 step reads, one of as many as an int8 step reads
# (a cache holds more of fewer bytes, so each bound gets its own reading). Against the fast path in fp32
# (its default step: the C step where a C compiler is found):

# %%
# NBVAL_IGNORE_OUTPUT
# why: tokens/s measured on this machine, and the kernel int8 picks depends on the CPU
assert int8_bytes == int8_read_bytes
fp32_name = "fast (C step)" if "fast (C step)" in results else "fast (torch step)"
assert int8_result["ids"].shape == results[fp32_name]["ids"].shape  # as many tokens
fp32_bound, int8_bound = bound, max(readings[int8_bytes]) * 1e9 / int8_bytes  # both from Step 3's readings
pair_spreads = {fp32_name: spreads[fp32_name], "fast path, int8": spread(int8_result["decode_runs"])}
for (name, s), b in zip(pair_spreads.items(), (fp32_bound, int8_bound)):
    print(f"{name:>17}: best round {s.high:6.1f} tokens/s, bound {b:6.1f} ({s.high / b:.0%}); "
          f"all rounds {s.mean:.1f} ± {s.stderr:.1f} ({s.low:.1f}-{s.high:.1f})")
int8_ratio = pair_spreads["fast path, int8"].mean / pair_spreads[fp32_name].mean
print(f"int8 / fp32, by the means: {int8_ratio:.2f}x  (int8: {int8_step}, kernel {int8_kernel})")
above_bounds = [name for name, b in zip(pair_spreads, (fp32_bound, int8_bound)) if pair_spreads[name].high > b]
if above_bounds:  # the readings are lower limits (Step 2): a busy moment can leave one below a decoder's round
    print(f"{' and '.join(above_bounds)} read faster than its best reading: the reading was low here")
if separated(pair_spreads["fast path, int8"], pair_spreads[fp32_name]):
    int8_verdict = f"int8 {'faster' if int8_ratio > 1 else 'slower'} than fp32 here ({int8_ratio:.2f}x)"
else:
    int8_verdict = f"int8 and fp32 tie here ({int8_ratio:.2f}x, inside the noise)"
display(Markdown(f"On this machine: {int8_verdict}."))

# %% [markdown]
# Whether int8 is faster depends on the kernel your CPU has. The integers cannot be multiplied as
# they are stored: a kernel must widen each one to float as it reads it (weight-only) or round the
# activations to 8 bits and multiply in integers (dynamic). Either costs instructions per weight. Where a
# fast kernel exists (fbgemm's with AVX2 or AVX-512 VNNI, or an AVX-512 weight-only kernel), that work
# hides under the memory's time and int8 approaches its higher bound. Where none exists, the widening
# costs more than the bytes saved, and int8 is *slower* than fp32: `docs/performance.md` records torch's
# weight-only kernel slower than fp32 at batch 1 on an AVX2 machine and on an AVX-512 Xeon. Fewer bytes
# raise the ceiling; only a good kernel reaches it. The C step has one of its own: it rounds the
# activations exactly as fbgemm does, then adds integer products several at a time, as many as the CPU's
# widest integer instruction takes (read from the C source below), so it picks torch's int8 tokens
# without torch's per-op toll, which weighs more here, where the bytes are a quarter.

# %%
products = dict(re.findall(r"#(?:el)?if defined\(__(\w+)__\)\n#define QSTEP (\d+)", c_source))
assert set(products) == {"AVX512VNNI", "AVX2"}
print("decode_step.c adds int8 products", " or ".join(f"{n} at a time ({isa})" for isa, n in products.items()))

# %% [markdown]
# With AVX-512 VNNI one instruction (`vpdpbusd`) multiplies and adds 64 pairs of bytes. With AVX2 a step
# of 32 products takes one instruction (`vpmaddubsw`) where fbgemm has rounded the activations to seven
# bits (CPUs without VNNI), and two of 16 each otherwise.

# %%
# NBVAL_IGNORE_OUTPUT
# why: which instructions the C step is built with depends on the CPU
flags = native.build_flags()
here = next((isa for isa, flag in (("AVX512VNNI", "-mavx512vnni"), ("AVX2", "-mavx2")) if flag in flags), None)
print("built here with:", " ".join(flags[4:]) or "no vector flags",
      f"-> {products[here]} int8 products at a time" if here else "-> one int8 product at a time")

# %% [markdown]
# ## Step 6: bits against loss against speed
#
# int8 spent a byte per weight and one fp32 scale per row. llama.cpp, the C/C++ engine most people use to run
# language models on a CPU, keeps its weights in GGUF files, in formats that go further; its two simplest are
# worth building by hand. Both cut every row into **blocks of 32 numbers** and give each block its own scale
# d, stored as fp16 (2 bytes):
#
#     Q8_0:  d = max |x| / 127                      q = round(x / d), halves away from zero     x ≈ q · d
#     Q4_0:  d = (the x of largest |x|, sign kept) / -8    q = trunc(x / d + 8.5), clipped to 0 … 15    x ≈ (q - 8) · d
#
# Q8_0 is Step 5's int8 with a scale per block instead of per row: 32 bytes of codes and 2 of scale. Q4_0
# has 16 levels, four bits: the block's extreme lands exactly on code 0 (x / d = -8), and the other side reaches
# code 15 at most, seven steps of d, so the levels lean the extreme's way. Two codes share a byte: in each block, byte j holds the
# code of number j in its low four bits and the code of number j + 16 in its high four: 16 bytes of codes and 2
# of scale.
#
# The `gguf` package, llama.cpp's own Python package, is the reference: it computes in float32, multiplies by
# 1 / d rather than dividing by d, and rounds d to fp16 only to store it. Step 5's matrix, block by block, by
# hand:

# %%
x = w.reshape(-1, 32)  # (4608, 32): each row of 192 numbers is 6 blocks of 32, one after the other
d8 = x.abs().amax(dim=1, keepdim=True) / 127  # (4608, 1), float32
y = x * torch.where(d8 == 0, 0.0, 1 / d8)  # x / d as gguf computes it (a block of zeros: all 0)


def round_half_away(v):
    """Round to the nearest integer, halves away from zero, as C's roundf (and gguf) do it.

    Written as gguf writes it: floor(|v| + 0.5) would round the largest float32 below 0.5 up to 1.
    """
    whole = v.abs().floor()
    return v.sign() * (whole + (2 * (v.abs() - whole)).floor())


q8 = round_half_away(y).to(torch.int8)  # (4608, 32): -127 … 127
extreme = x.gather(1, x.abs().argmax(dim=1, keepdim=True))  # (4608, 1): the x of largest |x|, its sign kept
d4 = extreme / -8  # so that the extreme gets code 0
q4 = torch.trunc(x * torch.where(d4 == 0, 0.0, 1 / d4) + 8.5).clamp(0, 15).to(torch.uint8)  # (4608, 32): 0 … 15
# the bytes of a GGUF file: each block's d as fp16 (2 bytes), then its codes
q8_bytes = torch.cat([d8.half().view(torch.uint8), q8.view(torch.uint8)], dim=1)  # (4608, 34)
q4_bytes = torch.cat([d4.half().view(torch.uint8), q4[:, :16] | q4[:, 16:] << 4], dim=1)  # (4608, 18)

for fmt, by_hand in (("q8_0", q8_bytes), ("q4_0", q4_bytes)):
    theirs = torch.from_numpy(gguf_quantize(w.numpy(), GGMLQuantizationType[fmt.upper()]))  # (768, 6 blocks' bytes)
    library = gguf_blocks(*(quantize_q8_0 if fmt == "q8_0" else quantize_q4_0)(w), fmt)
    assert torch.equal(by_hand.reshape(theirs.shape), theirs) and torch.equal(library, theirs)
    print(f"{fmt.upper()}: {by_hand.shape[0]:,} blocks of {by_hand.shape[1]} bytes = {by_hand.numel():,} bytes, "
          f"{8 * by_hand.shape[1] / 32} bits a number (fp32: {4 * w.numel():,} bytes)")
print("by hand == gguf.quants.quantize == minigpt.quantize's quantize_q8_0 / quantize_q4_0 + gguf_blocks, "
      "byte for byte")
divided = round_half_away(x / d8).to(torch.int8)  # the same codes, computed by dividing by d
print(f"dividing by d instead of multiplying by 1 / d: {int((divided != q8).sum())} of Q8_0's "
      f"{q8.numel():,} codes would differ")

# %% [markdown]
# Both ways of computing x / d are correct to the last bit or so, and yet they give different codes: where x / d
# lies within a rounding error of a half, the last bit decides. A file that llama.cpp reads must hold
# exactly its bytes, so the hand-built version follows the reference to the operation.
#
# What do the formats cost? Dequantize (q · d for Q8_0, (q - 8) · d for Q4_0, with d as stored, in fp16) and
# compare with the fp32 matrix, next to fp16 and bf16 (one rounded number each), Step 5's int8, and Q4_0's rule
# with one scale per *row* instead of per block:

# %%
back8 = (q8.float() * d8.half().float()).reshape(w.shape)  # (768, 192)
back4 = ((q4.float() - 8) * d4.half().float()).reshape(w.shape)
assert torch.equal(back8, dequantize_q8_0(*quantize_q8_0(w))) and torch.equal(back4, dequantize_q4_0(*quantize_q4_0(w)))
row_d = w.gather(1, w.abs().argmax(dim=1, keepdim=True)) / -8  # (768, 1): Q4_0's rule, one scale per row
back_row4 = (torch.trunc(w * (1 / row_d) + 8.5).clamp(0, 15) - 8) * row_d.half().float()
bits = {"fp16": 16, "bf16": 16, "int8, a scale per row": 8 + 32 / w.shape[1], "Q8_0": 8.5, "Q4_0": 4.5,
        "Q4_0's rule, a scale per row": 4 + 16 / w.shape[1]}
rounded = {"fp16": w.half().float(), "bf16": w.bfloat16().float(), "int8, a scale per row": back, "Q8_0": back8,
           "Q4_0": back4, "Q4_0's rule, a scale per row": back_row4}
rms_error = {name: (r - w).pow(2).mean().sqrt().item() for name, r in rounded.items()}
for name, err in rms_error.items():
    print(f"{name:>28}: {bits[name]:5.2f} bits a number, rms error {err:.3g}")
row8, row4 = "int8, a scale per row", "Q4_0's rule, a scale per row"
assert rms_error[row8] > 1.2 * rms_error["Q8_0"] and rms_error[row4] > 1.2 * rms_error["Q4_0"]  # blocks win
assert rms_error["Q4_0"] > 10 * rms_error["Q8_0"]  # four bits fewer: 16 times fewer levels
print(f"a scale per block of 32 instead of per row: {rms_error[row8] / rms_error['Q8_0']:.2f}x less rms error at "
      f"8 bits, {rms_error[row4] / rms_error['Q4_0']:.2f}x at 4")
print("fp16 keeps every weight exactly: the shipped model was saved in fp16" if rms_error["fp16"] == 0 else
      "fp16 rounds some weights")

# %%
fig, ax = plt.subplots(figsize=(8, 3.8))
names = [name for name in rounded if rms_error[name] > 0]  # a bar of height 0 has no place on a log scale
ax.barh(names, [rms_error[name] for name in names], color=[OKABE_ITO["blue"] if "row" not in name else
                                                           OKABE_ITO["vermillion"] for name in names])
for i, name in enumerate(names):
    ax.annotate(f"{bits[name]:.2f} bits", (rms_error[name], i), xytext=(4, 0), textcoords="offset points",
                va="center", fontsize=8)
ax.set_xscale("log")
ax.set_xlim(right=4 * max(rms_error.values()))
ax.invert_yaxis()
ax.set_xlabel("rms error against fp32 (log scale)")
ax.set_title("h[0].mlp.c_fc.weight through each format" + (" (fp16: exact, not shown)" if rms_error["fp16"] == 0
                                                            else ""))
fig.tight_layout()
save_figure(fig, "12_block_formats_error")
plt.show()

# %% [markdown]
# A scale per block beats a scale per row for the reason a scale per row beat one per matrix (Step 5): the
# scale is set by the largest number it covers, and a block of 32 rarely holds a row's largest. The price is a
# fp16 scale per 32 numbers, half a bit per number. Four bits instead of eight cost far more: sixteen levels
# instead of `255`, a step of d about sixteen times wider (`127 / 8`). (fp16 costs nothing at all here: the shipped
# model was saved in fp16, so every weight already is an fp16 number. bf16 keeps eight bits of precision where
# fp16 keeps eleven.)
#
# ### The bytes of a token in each format
#
# A format rounds the block matrices and the token table (the head); the biases, norms and the position table
# stay fp32, in GGUF files as in `minigpt.quantize.round_weights`, which makes "the model in a format" from an
# fp32 model. Back to GPT-2 124M's shape and Step 3's context, the bytes of a decode step, by hand, and from
# `minigpt.roofline.decode_step_bytes`:

# %%
rounded_numbers = n_layer * matrices + head  # what a format rounds: the block matrices and the token table
fp32_numbers = weights - rounded_numbers  # biases and norms
cache_bytes = 2 * n_layer * context_len * C * 4  # the KV cache stays fp32
step_bytes_by_format = {
    "fp32": 4 * weights + cache_bytes,
    "fp16": 2 * rounded_numbers + 4 * fp32_numbers + cache_bytes,  # bf16 the same: 2 bytes a number
    "int8": rounded_numbers + 4 * (scales + fp32_numbers) + cache_bytes,  # Step 5: one fp32 scale per row
    "q8_0": rounded_numbers // 32 * 34 + 4 * fp32_numbers + cache_bytes,  # 34 bytes a block of 32
    "q4_0": rounded_numbers // 32 * 18 + 4 * fp32_numbers + cache_bytes,  # 18 bytes a block of 32
}
assert rounded_numbers % 32 == 0  # every row is whole blocks
print(f"GPT-2 124M, batch 1, context {context_len}: bytes per decode step")
for fmt, nbytes in step_bytes_by_format.items():
    assert nbytes == decode_step_bytes(config, 1, context_len, weights=fmt)
    fewer = f", {step_bytes_by_format['fp32'] / nbytes:.2f} times fewer than fp32" if fmt != "fp32" else ""
    print(f"{fmt:>5}: {nbytes:>11,} bytes ({nbytes / 1e6:5.1f} MB){fewer}")
print("by hand == minigpt.roofline.decode_step_bytes(config, 1, context_len, weights=...)")

# %% [markdown]
# Q8_0 reads 3.72 times fewer bytes than fp32 (int8 3.93: one fp32 scale per row of 768 numbers or more costs
# less than an fp16 one per block of 32), Q4_0 6.92 times fewer: the bound of Step 3 moves up by as much.
#
# ### What each format costs: the held-out loss
#
# Now the whole shipped model through each format (`minigpt.quantize.round_weights`: a float32 copy whose
# block matrices and token table are rounded through the format), scored on Step 5's 16 held-out windows:

# %%
heldout_by_format = {"fp32": fp32_loss, "int8": int8_loss}  # int8: Step 5's weight-only int8
for fmt in ("fp16", "bf16", "q8_0", "q4_0"):
    unchanged = all(torch.equal(t, round_matrix(t, fmt)) for name, t in small.state_dict().items() if is_rounded(name))
    # a format that changes no weight leaves the model, and its loss, as it was (fp16, for a model saved in fp16)
    heldout_by_format[fmt] = fp32_loss if unchanged else heldout_loss(round_weights(small, fmt), heldout, block,
                                                                      max_windows=16)
change = {fmt: loss - fp32_loss for fmt, loss in heldout_by_format.items()}
bits_by_format = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "q8_0": 8.5, "q4_0": 4.5}  # per rounded number
print(f"held-out loss, 16 windows of {block} tokens: fp32 {fp32_loss:.3f} nats/token; against it:")
for fmt in ("fp16", "bf16", "int8", "q8_0", "q4_0"):
    print(f"{fmt:>5} ({bits_by_format[fmt]:4} bits a number): {signed(change[fmt])}")
# the changes measured where this chapter was written, each within 1e-4: every CPU prints the same digits
for fmt, measured in (("fp16", 0.0), ("bf16", -0.00005), ("q8_0", -0.00077), ("q4_0", 0.0358)):
    assert abs(change[fmt] - measured) < 1e-4, (fmt, change[fmt])
assert change["q4_0"] > 40 * max(abs(change[fmt]) for fmt in ("fp16", "bf16", "int8", "q8_0"))
print(f"Q4_0's perplexity (e to the loss) is {math.expm1(change['q4_0']):.1%} higher than fp32's")

# %% [markdown]
# What each format costs, from these numbers: **fp16 nothing** (the shipped weights are fp16 numbers already);
# **bf16 and the two 8-bit formats next to nothing**, a change that rounds to 0.000 or 0.001 nats per token, the
# size of the noise rounding adds anywhere (Q8_0 even came out a hair *lower*: rounding is not a loss by
# necessity, only a change); **Q4_0 a visible +0.036** nats per token, over 40 times any of the others, 3.6%
# more perplexity. About half the bytes of Q8_0 for that: whether it is worth it is the
# trade-off llama.cpp's users make when they pick a file, and llama.cpp's better 4-bit formats (the k-quants,
# Q4_K and friends, with a scale and a minimum per block and a second level of scales) exist to make it smaller.

# %% [markdown]
# ### llama.cpp rounds the inputs too
#
# A Q8_0 or Q4_0 code must become a number before it is multiplied, and turning 32 codes into 32 fp32 numbers
# costs instructions for every weight of every step. llama.cpp's CPU kernels do something cheaper: they round
# the *input* row to Q8_0 as well, once per product, with the same rule as the weights. Each block's dot product
# is then 32 products of two small integers, summed exactly, times both blocks' scales:
#
#     y_o = sum over the blocks b of  d_w(o, b) · d_x(b) · (sum of the 32 products q_w · q_x in block b)
#
# A CPU multiplies bytes and adds the products 32 or 64 at a time in one or two instructions (AVX2's
# `vpmaddubsw`, AVX-512's `vpdpbusd`), where widening 8 or 16 codes to fp32 takes three. The price is a second
# rounding, of the inputs. One input row (a token's embedding, layer-normed as `c_fc`'s inputs are) through
# the matrix of this step, three ways:

# %%
with torch.no_grad():  # (192,): token 1000's embedding at position 0, through h[0]'s second layer norm
    x_in = small.transformer.h[0].ln_2(small.transformer.wte.weight[1000] + small.transformer.wpe.weight[0])
blocks_in = x_in.reshape(-1, 32)  # (6, 32)
dx = blocks_in.abs().amax(dim=1, keepdim=True) / 127  # (6, 1): Q8_0's rule, as for the weights
qx = round_half_away(blocks_in * torch.where(dx == 0, 0.0, 1 / dx)).to(torch.int8)  # (6, 32)
assert torch.equal(qx.flatten(), quantize_q8_0(x_in[None])[1][0])  # the library's rounding of a row
integer_sums = (q8.reshape(w.shape[0], -1, 32).long() * qx.long()).sum(-1)  # (768, 6): exact integers
scales = d8.half().double().reshape(w.shape[0], -1) * dx.half().double().T  # (768, 6): d_w · d_x, as stored
y_llama = (integer_sums.double() * scales).sum(1)  # (768,): llama.cpp's way, in float64
y_rounded_inputs = back8.double() @ dequantize_q8_0(*quantize_q8_0(x_in[None]))[0].double()  # dequantize both
y_fp32_inputs = back8.double() @ x_in.double()  # the fast path's default: the inputs stay fp32
y_exact = w.double() @ x_in.double()  # no rounding at all
assert (y_llama - y_rounded_inputs).abs().max() < 1e-12  # the same products, summed in another order


def rms(v):
    return v.pow(2).mean().sqrt().item()


weights_error, both_error = rms(y_fp32_inputs - y_exact), rms(y_llama - y_exact)
print(f"rms of the outputs: {rms(y_exact):.3f}")
print(f"Q8_0 weights, fp32 inputs:  rms error {weights_error:.4f}")
print(f"Q8_0 weights, Q8_0 inputs:  rms error {both_error:.4f} (integer sums times scales == dequantize both, "
      "then multiply)")
assert 1.2 * weights_error < both_error < 3 * weights_error

# %% [markdown]
# The integer sums are exact, so llama.cpp's product *is* dequantize-then-multiply, with both operands
# dequantized; only the order of the additions differs. The inputs' rounding adds about as much error as the
# weights' (both are Q8_0's rule on 32 numbers). `round_weights(model, fmt, activations="q8_0")` makes the
# whole model compute this way (each matrix's input rounded before it is multiplied), and the fast path's
# `FastDecoder(weights=fmt, activations="q8_0")` computes it with those integer instructions. What it costs on
# the held-out windows:

# %%
for fmt in ("q8_0", "q4_0"):
    heldout_by_format[f"{fmt}-a8"] = heldout_loss(round_weights(small, fmt, activations="q8_0"), heldout, block,
                                                   max_windows=16)
    change[f"{fmt}-a8"] = heldout_by_format[f"{fmt}-a8"] - fp32_loss
    bits_by_format[f"{fmt}-a8"] = bits_by_format[fmt]
    print(f"{fmt}, inputs fp32: {signed(change[fmt])}; inputs rounded to Q8_0 ({fmt}-a8): "
          f"{signed(change[f'{fmt}-a8'])}")
# measured where this chapter was written, each within 5e-4: rounding the inputs is where a CPU's last bit
# shows, since a value that lands within that bit of a tie between two codes takes one code or the other
# (+0.00005 and +0.03575 on AVX-512, +0.00034 and +0.03577 on AVX2, +0.00038 and +0.03605 on torch's portable
# kernels); printed at 3 decimals, every CPU shows the same digits
for fmt, measured in (("q8_0-a8", 0.0002), ("q4_0-a8", 0.0359)):
    assert abs(change[fmt] - measured) < 5e-4, (fmt, change[fmt])
assert abs(change["q8_0-a8"]) < 1e-3 and abs(change["q4_0-a8"] - change["q4_0"]) < 1e-3  # the prose below

# %% [markdown]
# Rounding the inputs as well cost next to nothing more on this model: with Q8_0 inputs, Q8_0 stays within 0.001
# nats per token of fp32, and Q4_0 within 0.001 of its loss with fp32 inputs. The weights' four bits are what
# Q4_0 pays for, not the inputs' eight. (The last digits differ from CPU to CPU here, as the cell's comment says:
# an input that lands within a last bit of a tie between two codes takes either.)

# %% [markdown]
# ### What each format buys: the speed, and llama.cpp on the same bytes
#
# The fast path decodes every format: `FastDecoder(weights=...)` keeps the matrices in the format (fp16 and bf16
# as 2-byte numbers, Q8_0 and Q4_0 as GGUF's blocks) and turns them into fp32 in the C step as it reads them,
# computing what `round_weights` computes. llama.cpp reads the same bytes: `minigpt.export.export_gguf` writes
# the model into a GGUF file (at f32, f16, q8_0 or q4_0) and the `llama_cpp` binding decodes it, greedily, with
# as many threads as torch has (`minigpt.bench.peers.LlamaCppDecoder` does both; `minigpt bench --methods fast
# llamacpp` runs the same comparison on GPT-2 124M's shape too). On the shipped model, small enough to be quick,
# all of them take turns as in Step 3, `rounds` rounds, from a random prompt of `prompt_len` tokens:

# %%
speed_new = 4 * new_tokens  # new tokens per timed run: the small model is quick
FORMATS_TIMED = ("fp32", "fp16", "bf16", "q8_0", "q4_0", "q8_0-a8", "q4_0-a8")
speed_ids = torch.randint(0, small.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(seed))
speed_context = prompt_len + speed_new // 2  # the average context of a decode step
speed_runs, llamas, not_here = {}, [], []
for fmt in FORMATS_TIMED:
    base_fmt, a8 = fmt.removesuffix("-a8"), fmt.endswith("-a8")  # -a8: inputs rounded to Q8_0, as llama.cpp does
    try:
        decoder = FastDecoder(small, max_batch_size=1, max_len=prompt_len + speed_new,
                              weights="float" if fmt == "fp32" else base_fmt, activations="q8_0" if a8 else "float32")
    except UnsupportedOptions as error:  # no C compiler, or the CPU lacks what the format's step needs
        not_here.append(f"minigpt {fmt}: {error}")
        continue
    speed_runs[f"minigpt {fmt}"] = lambda k, d=decoder: d.generate(speed_ids, max_new_tokens=k).ids
if llama_cpp_version() is not None:
    for fmt in ("fp32", "fp16", "q8_0", "q4_0"):  # GGUF's f32, f16, q8_0, q4_0: llama.cpp has no bf16 peer here
        llamas.append(LlamaCppDecoder(small, fmt, context=prompt_len + speed_new))
        speed_runs[f"llama.cpp {fmt}"] = lambda k, d=llamas[-1]: d.generate(speed_ids, k)
else:
    not_here.append("llama.cpp: the llama_cpp binding is not installed (pip install 'minigpt[llama-cpp]')")
speed = measure(speed_runs, 1, speed_new, rounds, cpu)
for llama in llamas:
    llama.close()
del speed_runs, decoder, llamas
speed_spreads = {name: spread(r["decode_runs"]) for name, r in speed.items()}
small_bytes = {fmt: decode_step_bytes(small.config, 1, speed_context,
                                      weights="fp16" if fmt == "bf16" else fmt.removesuffix("-a8"))
               for fmt in bits_by_format}  # bf16 as fp16: 2 bytes a rounded number, the rest fp32
for name, r in speed.items():
    assert r["ids"].shape == (1, prompt_len + speed_new), name

# %%
# NBVAL_IGNORE_OUTPUT
# why: tokens/s measured on this machine, and which decoders run depends on the CPU and on what is installed
for line in not_here:
    print("not timed here:", line)
print(f"shakespeare, batch 1, {speed_new} new tokens, {rounds} rounds: decode tokens/s, mean ± standard error")
print(f"{'format':>7} {'bytes/step':>10} {'loss change':>11} {'minigpt':>15} {'llama.cpp':>15}   minigpt / llama.cpp")
speed_verdicts = []
for fmt in FORMATS_TIMED:  # a -a8 row against llama.cpp at its weights' format: the same arithmetic
    ours, theirs = speed_spreads.get(f"minigpt {fmt}"), speed_spreads.get(f"llama.cpp {fmt.removesuffix('-a8')}")
    shown = [f"{s.mean:8.1f} ± {s.stderr:4.1f}" if s else f"{'-':>15}" for s in (ours, theirs)]
    ratio = ""
    if ours and theirs:
        ratio = f"{ours.mean / theirs.mean:.2f}" + ("" if separated(ours, theirs) else " (inside the noise)")
        speed_verdicts.append((fmt, ours.mean / theirs.mean, separated(ours, theirs)))
    print(f"{fmt:>7} {small_bytes[fmt] / 1e6:7.2f} MB {signed(change[fmt]):>11} {shown[0]} {shown[1]}   {ratio}")
assert all(s.mean > 0 for s in speed_spreads.values())

# %%
# NBVAL_IGNORE_OUTPUT
# why: a plot of the losses above and of the tokens/s measured on this machine
fig, (loss_ax, speed_ax) = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
formats_shown = FORMATS_TIMED
megabytes = [small_bytes[fmt] / 1e6 for fmt in formats_shown]
loss_ax.plot(megabytes, [heldout_by_format[fmt] for fmt in formats_shown], "o", color=OKABE_ITO["blue"])
for fmt, mb in zip(formats_shown, megabytes):
    loss_ax.annotate(fmt, (mb, heldout_by_format[fmt]), xytext=(4, -10 if fmt.endswith("-a8") else 4),
                     textcoords="offset points", fontsize=8)  # a -a8 format sits at its weights' bytes: label below
loss_ax.set_ylabel("held-out loss (nats/token, 16 windows)")
loss_ax.set_title("what a format costs")
for i, (decoder_name, colour) in enumerate((("minigpt", OKABE_ITO["blue"]), ("llama.cpp", OKABE_ITO["vermillion"]))):
    shown = [fmt for fmt in formats_shown if f"{decoder_name} {fmt}" in speed_spreads]
    s = [speed_spreads[f"{decoder_name} {fmt}"] for fmt in shown]
    speed_ax.errorbar([small_bytes[fmt] / 1e6 for fmt in shown], [x.mean for x in s], yerr=[2 * x.stderr for x in s],
                      fmt=MARKERS[i], color=colour, capsize=3, label=f"{decoder_name} (mean ± 2 standard errors)")
    for fmt, x in zip(shown, s):
        speed_ax.annotate(fmt, (small_bytes[fmt] / 1e6, x.mean), xytext=(4, 4 - 12 * i), textcoords="offset points",
                          fontsize=8, color=colour)
speed_ax.set_ylim(bottom=0)
speed_ax.set_ylabel("decode tokens/s (batch 1)")
speed_ax.set_title("what a format buys")
speed_ax.legend(fontsize=8, loc="lower left")
for ax in (loss_ax, speed_ax):
    ax.set_xscale("log")
    ax.set_xlabel("bytes read per decode step (MB, log scale)")
fig.suptitle("shakespeare in each format: held-out loss and tokens/s against the bytes of a step")
fig.tight_layout()
save_figure(fig, "12_bits_loss_speed")
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
# why: built from the tokens/s measured on this machine
if speed_verdicts:
    apart = [f"{fmt} ({'minigpt' if r > 1 else 'llama.cpp'} faster, {max(r, 1 / r):.2f}x)"
             for fmt, r, sep in speed_verdicts if sep]
    tied = [fmt for fmt, _, sep in speed_verdicts if not sep]
    noise = f"; {', '.join(tied)} inside the noise (their mean ± 2 standard errors overlap)" if tied else ""
    display(Markdown("On this machine, against llama.cpp on the same bytes: "
                     + ("; ".join(apart) if apart else "no format separates") + noise + "."))
else:
    display(Markdown("llama.cpp is not installed here: `pip install 'minigpt[llama-cpp]'` adds it, and this section "
                     "then times it beside the fast path."))
assert all(r > 0 for _, r, _ in speed_verdicts)

# %% [markdown]
# Read the right panel against Step 3's lesson: fewer bytes raise the bound, and a decoder gets closer to it only
# as far as its kernel turns the format back into numbers fast enough (Step 5's lesson, for int8). The comparison
# with llama.cpp is like for like where it matters: the same bytes in memory, the same threads, the same number of
# greedy tokens, taking turns. At Q8_0 and Q4_0 the arithmetic is the same only in the `-a8` rows, which round
# the inputs as llama.cpp does; the plain rows keep the inputs fp32 and pay for it in instructions. Where two
# decoders' rounds overlap, the measurement cannot name a faster one.

# %% [markdown]
# ## What we saw
#
# - **A batch-1 decode step reads every weight once**: 123,653,376 numbers for GPT-2 124M (the position
#   table excepted), 494.6 MB in fp32, plus the KV cache, 2 · n_layer · batch · context · n_embd numbers.
# - **So its time is at least bytes / bandwidth**, with the read-only bandwidth; the bound is only as good
#   as the best reading of it, and a decoder above it would mean the reading was low.
# - **The rest of a step is small operations that run cold**: after each matmul has streamed megabytes
#   through the caches, a small operation waits for memory too. Doing the whole step in one C function
#   pays that toll once per token instead of hundreds of times.
# - **Batching pays while memory-bound, but not for free**: the weights are read once for the whole batch,
#   so tokens/s grow with B, more slowly than B, until the arithmetic catches up at B\* = (flops per byte
#   the machine can do) / (flops per byte a step needs).
# - **int8 weights** (one scale per row) cut the bytes to about a quarter; weight-only int8 leaves the
#   held-out loss where it was, the dynamic kernel moves it a little; how much of the higher bound is
#   reached depends on the CPU's int8 kernel.
# - **GGUF's Q8_0 and Q4_0** give every block of 32 numbers its own fp16 scale: 8.5 and 4.5 bits a number,
#   bit for bit as llama.cpp's `gguf` package computes them (dividing instead of multiplying by 1 / d already
#   changes codes). Blocks beat rows by the same argument rows beat the whole matrix. fp16, bf16 and the 8-bit
#   formats left the shipped model's held-out loss within 0.001 nats per token; Q4_0 cost +0.036, for 6.92
#   times fewer bytes than fp32 at GPT-2 124M's shape.
# - **llama.cpp rounds the inputs too**: each matrix's input row through Q8_0, so that a block's dot product is
#   an exact sum of 32 integer products times two scales, which the CPU does with a few byte instructions.
#   It is dequantize-then-multiply with both operands dequantized; on the shipped model Q8_0 stayed within
#   0.001 nats per token of fp32 and Q4_0 within 0.001 of its fp32-input loss.
#
# On this machine:

# %%
# NBVAL_IGNORE_OUTPUT
# why: built from what this machine measured
c_name = "fast (C step)" if "fast (C step)" in best else "fast (torch step)"
ours = {name.split()[1]: s for name, s in speed_spreads.items() if name.startswith("minigpt")}
format_speeds_text = ", ".join(f"{s.mean:.0f} tokens/s at {fmt}" for fmt, s in ours.items())
llama_text = ", ".join(f"{fmt} {r:.2f}x" + ("" if sep else " (inside the noise)") for fmt, r, sep in speed_verdicts)
dynamic_text = (f"the dynamic kernel {signed(dynamic_change)}" if dynamic_change is not None
                else "no dynamic kernel on this CPU")
display(Markdown(
    f"- the bound was {bound:.1f} tokens/s ({bound * read_bytes / 1e9:.1f} GB/s); the "
    f"decoders' fastest rounds reached {min(best.values()) / bound:.0%} to {max(best.values()) / bound:.0%} of it, "
    f"{c_name} {best[c_name] / bound:.0%};\n"
    f"- batch 8 made {gain[8]:.2f}× the tokens/s of batch 1, batch 64 {gain[64]:.2f}×;\n"
    f"- int8's held-out loss changed by {signed(weight_only_change)} nats/token with the weight-only kernel, "
    f"{dynamic_text}; FastDecoder picks {int8_kernel_here} here, and {int8_verdict};\n"
    f"- on the shipped model, the fast path made {format_speeds_text}"
    + (f"; against llama.cpp on the same bytes, {llama_text}." if speed_verdicts else
       "; llama.cpp is not installed here.")))
assert gain[64] > 1

# %% [markdown]
# `minigpt bench` measures exactly this on your machine: by default fp32 and int8 at batch 1 and 8, the
# readable loop, the fast path and transformers (with torch's `quantize_dynamic` as int8's peer) side by
# side, each against its bandwidth bound, and the int8 loss on the shipped model. The
# [exercises](exercises/12_memory_bound_exercises.ipynb) have you write the quantization, the bytes of a
# step and the bound yourself, then one block of Q4_0 and the way back, checked against the `gguf` package.

# %% [markdown]
# ## Recap
#
# **What we built.** The bytes of one decode step, counted by hand; the machine's read bandwidth, measured;
# the bound they give (tokens/s ≤ batch × bandwidth / bytes per step), held against four decoders; a look
# at where the rest of a step's time goes; the roofline that says where batching stops paying; int8
# weights with one scale per row; and GGUF's Q8_0 and Q4_0, one fp16 scale per block of 32, byte for byte as
# llama.cpp's `gguf` package writes them, with their loss and their speed beside llama.cpp's. The library's
# matches are `minigpt.roofline.weight_count`,
# `minigpt.roofline.decode_step_bytes` and `minigpt.roofline.bandwidth_bound` for the arithmetic,
# `minigpt.quantize.quantize_per_channel`, `minigpt.quantize.dequantize` and
# `minigpt.quantize.quantize_model` for int8, `minigpt.quantize.quantize_q8_0`, `quantize_q4_0`,
# `gguf_blocks` and `round_weights` for GGUF's formats (`minigpt.export.export_gguf` writes them to a file),
# and the decoders `minigpt.generate.generate` (the readable loop) and `minigpt.fast.FastDecoder` (the fast
# path, with `weights="int8"`, `"fp16"`, `"bf16"`, `"q8_0"` or `"q4_0"`, and `activations="q8_0"` for
# llama.cpp's arithmetic), timed the way
# `minigpt.bench.measure` does it, beside `minigpt.bench.peers.LlamaCppDecoder`.
#
# **Check yourself.**
#
# 1. At batch 1 each weight is read once and used for one multiply and one add. Why does that make the
#    step's time a matter of bytes, not arithmetic?
#
# <details><summary>Answer</summary>
#
# Two flops per 4-byte fp32 weight is 0.5 flops per byte read (Step 4's first row). A processor computes far
# more flops per second than that while memory delivers the bytes, so the arithmetic waits for the reading.
#
# </details>
#
# 2. A batch-1 step reads 494.6 MB in fp32 at a short context. What is the most tokens/s a machine whose
#    memory reads $50$ GB/s could reach?
#
# <details><summary>Answer</summary>
#
# $50 \times 10^9 / (494.6 \times 10^6) \approx 101$ tokens/s. No decoder can beat it, because every token
# must read all those bytes; a decoder above it would only mean the bandwidth reading was low.
#
# </details>
#
# 3. Flops per byte grow with the batch: about $B / 2$ (Step 4 printed 3.97 at batch 8). If a machine can
#    do $10$ flops per byte it reads, about where is the crossover B\*?
#
# <details><summary>Answer</summary>
#
# Where the step's flops per byte reach the machine's: $B / 2 = 10$, so $B^* \approx 20$. Below it tokens/s
# grow with B (the weights are read once for the whole batch); above it the arithmetic sets the time and
# tokens/s stop growing.
#
# </details>
#
# 4. Why does int8 keep one scale per *row* instead of one for the whole matrix?
#
# <details><summary>Answer</summary>
#
# With one scale set by the largest weight of the matrix, a row of small weights uses only part of the
# integer levels (the median row reached only ±84 of ±127) and rounds more coarsely. Its own scale lets
# every row use all the levels: the rms error was 1.5x smaller.
#
# </details>
#
# 5. int8 weights cut the bytes of a step to about a quarter. Why can int8 still be *slower* than fp32 on
#    some CPUs?
#
# <details><summary>Answer</summary>
#
# The integers cannot be multiplied as stored: a kernel must widen each weight to float, or round the
# activations to 8 bits and multiply in integers, which costs instructions per weight. Without a fast int8
# kernel that work costs more than the bytes saved; fewer bytes raise the ceiling, only a good kernel
# reaches it.
#
# </details>
#
# 6. Q4_0 gives a block of numbers one scale, d = (the number of largest magnitude, its sign kept) / −8. A
#    block's numbers all lie between $-1$ and $0.5$, and its largest magnitude is $-1$. What is d, which code
#    does $-1$ get, and which code does $0.5$ get?
#
# <details><summary>Answer</summary>
#
# $d = -1 / -8 = 0.125$. The code is trunc(x / d + 8.5): for $-1$, $\mathrm{trunc}(-8 + 8.5) = 0$: the extreme
# always lands on code 0; for $0.5$, $\mathrm{trunc}(4 + 8.5) = 12$, which stands for $(12 - 8) \cdot 0.125 = 0.5$
# exactly. This block's codes run from $0$ to $12$: the positive side never uses $13$ to $15$, the price of a scale
# set by a negative extreme (Step 6; `minigpt.quantize`'s docstring computes this very block).
#
# </details>

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
# - **GGUF's Q8_0 and Q4_0** (Step 6): Gerganov, G., and the ggml / llama.cpp contributors. *llama.cpp* and
#   its file format *GGUF* (github.com/ggml-org/llama.cpp: `ggml/src/ggml-quants.c`, the reference quantizers
#   `quantize_row_q8_0_ref` and `quantize_row_q4_0_ref`; `docs/gguf.md` in github.com/ggml-org/ggml, the format),
#   and its Python package `gguf` (`gguf/quants.py`, bit-exact numpy versions of the same quantizers).
# - **The k-quants**, llama.cpp's better 4-bit formats mentioned in Step 6: Kawrakow, I. (2023). *k-quants*.
#   llama.cpp pull request 1684 (github.com/ggml-org/llama.cpp/pull/1684).
# - **GPT-2 124M**, the shape measured throughout: Radford, A., Wu, J., Child, R., Luan, D., Amodei, D., &
#   Sutskever, I. (2019). *Language Models are Unsupervised Multitask Learners*. OpenAI technical report.
