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
# # Chapter 7 exercises — the KV cache
#
# Four exercises on [chapter 7](../07_kv_cache.ipynb): greedy decoding with a cache, the memory a cache
# takes, the causal mask when new tokens follow cached ones, and a whole sampler with a cache that draws what
# `minigpt.generate` draws. Each exercise asks for one function; the
# cell after it checks your function on hidden cases against minigpt's own and, when one fails, shows that
# input with the expected and the actual answer.
# In the [exercise notebook](../exercises/07_kv_cache_exercises.ipynb) each function is a stub for you to
# fill in (replace `raise NotImplementedError` with your code); the [solutions
# notebook](../solutions/07_kv_cache_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.kv_cache import (
    check_causal_mask_with_cache,
    check_greedy_with_cache,
    check_kv_cache_bytes,
    check_sample,
)
from minigpt.kv_cache import KVCache
from minigpt.logits import LogitsSettings, apply_temperature, min_p_filter, repetition_penalty, top_k_filter, top_p_filter

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# The next cell runs `minigpt.generate` (greedy) on the small random GPT the checks use, with and without its
# KV cache, and counts the positions the model is fed at every forward pass.
#
# Before you run it, write down your answers:
#
# 1. A 4-token prompt and 12 new tokens: how many positions does the model process in all without a cache? And
#    with one?
# 1. Double both, to 8 and 24: how many times more work is that without a cache? With one?
# 1. How many times more memory does the cache need for the doubled run?

# %%
import minigpt
from minigpt.exercises.models import toy_model

model = toy_model()  # the checks' small random GPT: 2 layers, width 32, a context of 32 tokens
fed = []  # the positions fed in at each forward pass: the token embedding sees every one
model.transformer.wte.register_forward_hook(lambda module, inputs, out: fed.append(inputs[0].size(1)))
work = {}
for prompt_len, new_tokens in ((4, 12), (8, 24)):
    prompt = torch.arange(1, prompt_len + 1).unsqueeze(0)  # (1, prompt_len): any tokens will do
    for use_cache in (False, True):
        fed.clear()
        minigpt.generate(model, prompt, max_new_tokens=new_tokens, use_cache=use_cache)
        work[prompt_len, use_cache] = sum(fed)
        print(f"prompt {prompt_len}, {new_tokens} new, {'with' if use_cache else 'no':>4} cache: {len(fed)} passes "
              f"of {fed[0]}, {fed[1]}, {fed[2]} ... positions, {sum(fed)} in all")
    cache_bytes = KVCache.bytes_needed(model.config.n_layer, 1, prompt_len + new_tokens, model.config.n_embd)
    print(f"  the cache for {prompt_len + new_tokens} positions: {cache_bytes:,} bytes")
print(f"twice the length: {work[8, False] / work[4, False]:.1f} times the work without a cache, "
      f"{work[8, True] / work[4, True]:.1f} times with it")


# %% [markdown]
# ## Exercise 1: greedy decoding with a KV cache
#
# Write `greedy_with_cache(model, prompt_ids, max_new_tokens)`: greedy decoding from the (B, T) prompts,
# with a `KVCache`. The first pass feeds the whole prompt; every later pass feeds only the token just
# chosen, with `position_ids` that continue after the positions already in the cache. Return the prompt
# and the new tokens, (B, T + max_new_tokens). The check compares with `minigpt.generate` (temperature 0)
# on a small random model, where a wrong position changes the tokens.
#
# *Hint:* `KVCache.for_model(model, batch_size=B)` makes the cache, `model(ids, kv_cache=cache,
# position_ids=...)` reads and fills it, and `cache.length` says how many positions it holds.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "4e3dd91d84bde373f9f6f486d63f50e0", "grade": false, "grade_id": "greedy_with_cache", "locked": false, "schema_version": 3, "solution": true, "task": false}
def greedy_with_cache(model: torch.nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding that feeds each token through the model once, keeping keys and values in a cache."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "bcccf5b11967f033e0d21187ea12891f", "grade": true, "grade_id": "check_greedy_with_cache", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_greedy_with_cache(greedy_with_cache)


# %% [markdown]
# ## Exercise 2: the memory a cache needs
#
# Write `kv_cache_bytes(n_layer, batch_size, seq_len, n_embd, dtype)`: the bytes a cache takes when every
# layer stores a key and a value vector of `n_embd` numbers (all heads together) for each of `seq_len`
# positions of each of `batch_size` sequences, every number of type `dtype`. Return an int.
#
# Example: GPT-2 small (`n_layer=12`, `n_embd=768`) for one sequence of its full context (`seq_len=1024`) in
# float32 needs `kv_cache_bytes(12, 1, 1024, 768, torch.float32) == 72 * 2**20` bytes.
#
# *Hint:* `dtype.itemsize` is the size of one number in bytes.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "5a777b2e93817e080c21101079eb3da4", "grade": false, "grade_id": "kv_cache_bytes", "locked": false, "schema_version": 3, "solution": true, "task": false}
def kv_cache_bytes(n_layer: int, batch_size: int, seq_len: int, n_embd: int, dtype: torch.dtype) -> int:
    """Bytes for the keys and values of every layer, sequence and position."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "3ba89d45a302e91cf80e106f3c576865", "grade": true, "grade_id": "check_kv_cache_bytes", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_kv_cache_bytes(kv_cache_bytes)


# %% [markdown]
# ## Exercise 3: the causal mask with a cache
#
# Write `causal_mask_with_cache(past_length, new_length)`: `past_length` tokens are in the cache and
# `new_length` new ones are fed now. Return a boolean (new_length, past_length + new_length) tensor that is
# True where new token i, which sits at position `past_length + i`, may attend to key j: itself and every
# earlier position, nothing later.
#
# Example: `causal_mask_with_cache(2, 2)` is `[[True, True, True, False], [True, True, True, True]]`.
#
# *Hint:* compare the positions of the queries with the positions of the keys.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "ed349a135509bd2a319843a9e1bd6170", "grade": false, "grade_id": "causal_mask_with_cache", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_mask_with_cache(past_length: int, new_length: int) -> torch.Tensor:
    """True where a new token may look at a key: at its own position or earlier."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "422b9dd01dd506cd10f2cd34ca3c2dbf", "grade": true, "grade_id": "check_causal_mask_with_cache", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_causal_mask_with_cache(causal_mask_with_cache)

# %% [markdown]
# ## Exercise 4: a whole sampler
#
# Put the pieces of chapters 2–5 and this chapter together. Write `sample(model, prompt_ids,
# max_new_tokens, settings, generator)`: sample `max_new_tokens` tokens after each of the (B, T) prompts and
# return the prompt and the new tokens, (B, T + max_new_tokens). `settings` is a
# `minigpt.logits.LogitsSettings`; any of `repetition_penalty`, `top_k`, `top_p` and `min_p` may be None (off),
# and `temperature` is a number > 0. At every step:
#
# 1. run the model with a `KVCache`: the whole prompt at the first step, then only the token just drawn;
# 1. take the logits of the last position, (B, V), and transform them in the library's order: the repetition
#    penalty over every token so far, prompt included (`repetition_penalty`), then the temperature
#    (`apply_temperature`), top-k (`top_k_filter`), top-p (`top_p_filter`) and min-p (`min_p_filter`);
# 1. draw the next token of every row at once, `torch.multinomial(probs, 1, generator=generator)` on the (B, V)
#    softmax.
#
# The check runs `minigpt.generate(model, prompt_ids, do_sample=True, logits=settings, generator=...)` with a
# generator seeded the same, and compares the tokens one for one, on a small random model. It also counts
# the positions your function feeds the model (a cache feeds each one once) and notices a draw from torch's
# global generator.
#
# *Hint:* you may use the library's filters, imported above; the exercise is putting them together.
# `model(ids, kv_cache=cache)` places `ids` after the positions the cache holds.

# %% [markdown]
# ### Predict, then run
#
# Before you run the next cell, write down your answer:
#
# 1. On the small random model's first step, `top_p=0.6` keeps some tokens. Does it keep more or fewer when
#    `temperature=1.5` is applied before it, as the library does, than when it is applied after it?
# 1. Two runs of `minigpt.generate` with generators seeded with the same number: the same tokens? And a run
#    with another seed?

# %%
prompt = torch.tensor([[1, 2, 3, 4]])
with torch.no_grad():
    logits = model(prompt)[:, -1]  # (1, 64): the first step's logits
kept_before = int(torch.isfinite(top_p_filter(apply_temperature(logits, 1.5), 0.6)).sum())
kept_after = int(torch.isfinite(top_p_filter(logits, 0.6)).sum())  # dividing afterwards brings no token back
print(f"top_p=0.6 keeps {kept_before} tokens when temperature 1.5 comes first, {kept_after} when it comes after")
for seed in (0, 0, 1):
    out = minigpt.generate(model, prompt, max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.6,
                           generator=torch.Generator().manual_seed(seed))
    print(f"generator seeded with {seed}: {out.new_tokens[0]}")

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "203c648aba20e21f65f451771c4bc966", "grade": false, "grade_id": "sample", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sample(
    model: torch.nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int, settings: LogitsSettings,
    generator: torch.Generator,
) -> torch.Tensor:
    """Sample after each prompt with the settings' transforms, in the library's order, with a KV cache."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "63951630826b05fd3f08562117e5cd8a", "grade": true, "grade_id": "check_sample", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_sample(sample)

# %% [markdown]
# ### To think about: the order of the transforms
#
# Your sampler follows transformers' order, temperature before the filters; llama.cpp's sampler applies
# temperature last. Which would you rather have, and for what kind of text?
#
# There is no single right answer: write yours in a few sentences, from what this exercise and
# [chapter 5](../05_controlling_the_loop.ipynb) showed.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "52501c113942617cd068a4badccfecfb", "grade": true, "grade_id": "open_question_sample", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE

# %% [markdown]
# ## To think about: an open question
#
# The cache trades memory for compute. When would you decode without one, or keep only part of it?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 7](../07_kv_cache.ipynb) showed. The [solutions notebook](../solutions/07_kv_cache_solutions.ipynb)
# ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
