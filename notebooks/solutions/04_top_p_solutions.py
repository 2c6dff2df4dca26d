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
# # Chapter 4 exercises — top-p and min-p sampling (solutions)
#
# Two exercises on [chapter 4](../04_top_p.ipynb): nucleus (top-p) filtering, then min-p beside it. Each
# exercise asks for one function; the cell after it checks your function on hidden cases against minigpt's
# own and, when one fails, shows that input with the expected and the actual answer.
# In the [exercise notebook](../exercises/04_top_p_exercises.ipynb) each function is a stub for you to fill
# in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/04_top_p_solutions.ipynb) has them filled in.

# %%
import torch

from minigpt.exercises.top_p import check_min_p_filter, check_top_p_filter

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Exercise 1: the top-p filter
#
# Write `top_p_filter(logits, p)`: in each row of the (B, V) logits, keep the smallest set of most likely
# tokens whose probabilities add up to at least `p`, and set every other logit to `-inf`. The token that
# *crosses* p is kept (without it the kept mass would fall short of p), so a token more likely than p on
# its own survives alone. The answer keeps the vocabulary's order, like the input.
#
# *Hints:* sort each row's probabilities, most likely first (`torch.sort(..., descending=True, dim=-1)`
# also returns where each sorted entry came from); `torch.cumsum` gives running totals. A token is
# dropped when the tokens *before* it already reach p. To put a mask computed in sorted order back into
# vocabulary order, `torch.zeros_like(sorted_mask).scatter(-1, order, sorted_mask)`.

# %%
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """The (B, V) ``logits`` with every token outside its row's nucleus of mass ``p`` set to -inf."""
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True, dim=-1)  # most likely first; order[:, j] = its id
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the more likely tokens
    # a token goes only when the tokens before it already reach p, so the one that crosses p stays
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


# %%
check_top_p_filter(top_p_filter)

# %% [markdown]
# ## Exercise 2: the min-p filter
#
# Write `min_p_filter(logits, min_p)`: drop every token whose probability is less than `min_p` times the
# probability of the most likely token of its row (its logit becomes `-inf`). The cut-off scales with the
# model's confidence: strict when one token dominates, loose when it hesitates.
#
# *Hint:* compare probabilities (a softmax of each row), not logits: logits can be negative, and their
# ratios mean nothing.

# %%
def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """The (B, V) ``logits`` with every token less likely than ``min_p`` × its row's top probability at -inf."""
    probs = torch.softmax(logits, dim=-1)
    # the cut-off follows each row's confidence: min_p times the probability of its most likely token
    threshold = min_p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


# %%
check_min_p_filter(min_p_filter)
