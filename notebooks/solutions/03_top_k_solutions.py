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
# # Chapter 3 exercises — top-k sampling (solutions)
#
# Two exercises on [chapter 3](../03_top_k.ipynb): the top-k filter, then the distribution a sampler draws
# from when temperature and top-k work together. Each exercise asks for one function; the cell after it
# checks your function on hidden cases against minigpt's own and, when one fails, shows that input with
# the expected and the actual answer.
# In the [exercise notebook](../exercises/03_top_k_exercises.ipynb) each function is a stub for you to fill
# in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/03_top_k_solutions.ipynb) has them filled in.

# %%
import torch

from minigpt.exercises.top_k import check_top_k_filter, check_top_k_probs

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Exercise 1: the top-k filter
#
# Write `top_k_filter(logits, k)`: in each row of the (B, V) logits, every logit *below* the k-th largest of
# that row becomes `-inf`; the others keep their value. As in the chapter (and in transformers), a logit
# tied with the k-th largest is kept, so a row can keep more than k tokens. A `k` larger than the
# vocabulary keeps every token.
#
# *Hints:* `torch.topk(logits, k, dim=-1).values` holds each row's k largest logits, largest first.
# `logits.masked_fill(mask, float("-inf"))` replaces the entries where `mask` is True.

# %%
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The (B, V) ``logits`` with every logit below the k-th largest of its row set to -inf."""
    k = min(k, logits.size(-1))  # more tokens than the vocabulary holds means all of them (topk would fail)
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1): each row's k-th largest logit
    # strictly below the k-th goes: a logit tied with it stays, so a row can keep more than k tokens
    return logits.masked_fill(logits < kth_largest, float("-inf"))


# %%
check_top_k_filter(top_k_filter)

# %% [markdown]
# ## Exercise 2: the distribution to sample from
#
# Write `top_k_probs(logits, k, temperature)`: the probabilities a sampler draws from with both settings,
# as minigpt applies them: divide the logits by the temperature, keep the top k, then softmax. Each row
# of the (B, V) answer sums to 1 over the tokens that survive and is exactly 0 elsewhere.
#
# *Hint:* reuse your `top_k_filter`; `torch.softmax(x, dim=-1)` is fine here (you wrote your own in
# chapter 2). Setting probabilities to 0 after the softmax is not the same: the survivors would not sum
# to 1.

# %%
def top_k_probs(logits: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """The (B, V) probabilities softmax(top-k(logits / temperature)), one distribution per row."""
    filtered = top_k_filter(logits / temperature, k)  # temperature first, then top-k, as minigpt does
    return torch.softmax(filtered, dim=-1)  # exp(-inf) = 0, so the survivors share all the mass


# %%
check_top_k_probs(top_k_probs)
