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
# # Chapter 1 exercises — greedy decoding (solutions)
#
# Two exercises on [chapter 1](../01_greedy.ipynb): pick the most likely next token, then write the whole
# greedy loop. Each exercise asks for one function; the cell after it checks your function on hidden cases
# against minigpt's own and, when one fails, shows that input with the expected and the actual answer.
# Your function works on copies of the inputs, so changing them in place cannot upset a later case, and it
# has 10 seconds per case: a loop that never ends fails the check instead of hanging the notebook.
# In the [exercise notebook](../exercises/01_greedy_exercises.ipynb) each function is a stub for you to fill
# in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/01_greedy_solutions.ipynb) has them filled in.

# %%
import torch

from minigpt.exercises.greedy import check_greedy_generate, check_greedy_next_token

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Exercise 1: the greedy next token
#
# The model scores every token of the vocabulary: for a batch of B sequences it gives (B, V) logits, one
# row per sequence. Greedy decoding picks, in every row, the token with the largest logit.
#
# Write `greedy_next_token(logits)`: it takes (B, V) logits and returns a (B,) tensor of token ids, the
# *positions* of the largest logits (integers), not the largest values themselves.
#
# *Hint:* `torch.argmax` takes a `dim`. Which dimension is the vocabulary?

# %%
def greedy_next_token(logits: torch.Tensor) -> torch.Tensor:
    """The (B,) ids of the largest logit in each row of the (B, V) ``logits``."""
    # the vocabulary is the last dimension: argmax along it gives one index per row, (B,)
    return logits.argmax(dim=-1)


# %%
check_greedy_next_token(greedy_next_token)

# %% [markdown]
# ## Exercise 2: the greedy loop
#
# Write `greedy_generate(model, ids, max_new_tokens)`, the loop of chapter 1 for a batch: `ids` is a
# (B, T) tensor of prompts. At every step, run the model on the whole sequence so far, take the logits at
# the **last** position (they predict the next token), pick each row's greedy token and append it.
# After `max_new_tokens` steps, return the (B, T + max_new_tokens) ids, prompt included.
#
# The check runs your loop on a small random model and compares with
# `minigpt.generate(model, ids, max_new_tokens=max_new_tokens, temperature=0)`.
#
# *Hints:* `model(ids)` returns (B, T, V) logits. Reuse `greedy_next_token`. `torch.cat(..., dim=1)`
# appends a column; a (B,) tensor becomes a (B, 1) column with `.unsqueeze(1)`. Wrap the model call in
# `with torch.no_grad():`, since nothing here needs gradients.

# %%
def greedy_generate(model: torch.nn.Module, ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Append ``max_new_tokens`` greedy tokens to every row of ``ids`` (B, T); return (B, T + max_new_tokens)."""
    for _ in range(max_new_tokens):
        with torch.no_grad():  # generating, not training: no gradients to keep track of
            logits = model(ids)  # (B, T, V): the whole sequence again, every step (no cache)
        next_ids = greedy_next_token(logits[:, -1])  # (B,): only the last position predicts what comes next
        ids = torch.cat([ids, next_ids.unsqueeze(1)], dim=1)  # (B, T + 1): the new token is part of the input
    return ids


# %%
check_greedy_generate(greedy_generate)
