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
# # Chapter 7 exercises — the KV cache (solutions)
#
# Three exercises on [chapter 7](../07_kv_cache.ipynb): greedy decoding with a cache, the memory a cache
# takes, and the causal mask when new tokens follow cached ones. Each exercise asks for one function; the
# cell after it checks your function on hidden cases against minigpt's own and, when one fails, shows that
# input with the expected and the actual answer.
# In the [exercise notebook](../exercises/07_kv_cache_exercises.ipynb) each function is a stub for you to
# fill in (replace `raise NotImplementedError` with your code); the [solutions
# notebook](../solutions/07_kv_cache_solutions.ipynb) has them filled in.

# %%
import torch

from minigpt.exercises.kv_cache import check_causal_mask_with_cache, check_greedy_with_cache, check_kv_cache_bytes
from minigpt.kv_cache import KVCache

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

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

# %%
def greedy_with_cache(model: torch.nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding that feeds each token through the model once, keeping keys and values in a cache."""
    cache = KVCache.for_model(model, batch_size=prompt_ids.size(0))  # one cache row per prompt
    ids = prompt_ids
    fresh = prompt_ids  # the tokens the cache has not seen: the whole prompt at first
    for _ in range(max_new_tokens):
        past = cache.length  # positions already stored
        # the fresh tokens come after the cached ones: positions past, past + 1, … (not 0 again)
        position_ids = torch.arange(past, past + fresh.size(1)).unsqueeze(0)  # (1, T_fresh)
        with torch.no_grad():
            logits = model(fresh, kv_cache=cache, position_ids=position_ids)  # (B, T_fresh, V)
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
        ids = torch.cat([ids, next_id], dim=1)
        fresh = next_id  # the cache holds everything else: feed only the new token next time
    return ids


# %%
check_greedy_with_cache(greedy_with_cache)

# %% [markdown]
# ## Exercise 2: the memory a cache needs
#
# Write `kv_cache_bytes(n_layer, batch_size, seq_len, n_embd, dtype)`: the bytes a cache takes when every
# layer stores a key and a value vector of `n_embd` numbers (all heads together) for each of `seq_len`
# positions of each of `batch_size` sequences, every number of type `dtype`. Return an int.
#
# Example: GPT-2 small (12 layers, width 768) for one sequence of 1,024 tokens in float32 needs 72 MiB,
# `kv_cache_bytes(12, 1, 1024, 768, torch.float32) == 72 * 2**20`.
#
# *Hint:* `dtype.itemsize` is the size of one number in bytes.

# %%
def kv_cache_bytes(n_layer: int, batch_size: int, seq_len: int, n_embd: int, dtype: torch.dtype) -> int:
    """Bytes for the keys and values of every layer, sequence and position."""
    bytes_per_number = dtype.itemsize  # 4 for float32, 2 for float16 and bfloat16
    # the 2: a key AND a value; n_embd = n_head * head_size counts every head already
    return 2 * n_layer * batch_size * seq_len * n_embd * bytes_per_number


# %%
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

# %%
def causal_mask_with_cache(past_length: int, new_length: int) -> torch.Tensor:
    """True where a new token may look at a key: at its own position or earlier."""
    query_positions = torch.arange(past_length, past_length + new_length).unsqueeze(1)  # (T, 1): after the cache
    key_positions = torch.arange(past_length + new_length).unsqueeze(0)  # (1, past + T): cached keys, then new
    return key_positions <= query_positions  # (T, past + T); a plain tril(T, T) would forget the cached keys


# %%
check_causal_mask_with_cache(causal_mask_with_cache)
