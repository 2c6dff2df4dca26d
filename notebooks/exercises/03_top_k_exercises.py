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
# # Chapter 3 exercises — top-k sampling
#
# Two exercises on [chapter 3](../03_top_k.ipynb): the top-k filter, then the distribution a sampler draws
# from when temperature and top-k work together. Each exercise asks for one function; the cell after it
# checks your function on hidden cases against minigpt's own and, when one fails, shows that input with
# the expected and the actual answer.
# In the [exercise notebook](../exercises/03_top_k_exercises.ipynb) each function is a stub for you to fill
# in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/03_top_k_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.top_k import check_top_k_filter, check_top_k_probs

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# Top-k with k = 2 on the toy logits after *"every effort moves you"*: closer 4.51, every 0.89, effort −1.90,
# forward 6.75, inches 1.63, moves −1.62, pizza −1.89, toward 6.28, you 1.79. At temperature 1, before any
# filtering, "forward" has probability 0.572.
#
# Before you run the next cell, write down your answers:
#
# 1. Which two words survive top-k = 2? After renormalising, does the probability of "forward" rise a little
#    or a lot?
# 2. At temperature 5 the distribution is much flatter. Are the survivors the same two words?
# 3. At which of the two temperatures does top-2 throw away more of the probability, and roughly how much?

# %%
from minigpt.logits import apply_temperature, top_k_filter

vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])  # (1, 9)
for T in (1.0, 5.0):
    scaled = apply_temperature(logits, T)  # temperature first, then top-k, as minigpt applies them
    before = torch.softmax(scaled, dim=-1)[0]
    after = torch.softmax(top_k_filter(scaled, 2), dim=-1)[0]
    kept = after > 0
    print(f"T = {T:g}: keeps {[vocab[i] for i in kept.nonzero().flatten()]}, "
          f"forward {before[3]:.3f} -> {after[3]:.3f}, probability thrown away {1 - before[kept].sum():.3f}")


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

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "2f166b58badc0ba5d0c4d21aa1470598", "grade": false, "grade_id": "top_k_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The (B, V) ``logits`` with every logit below the k-th largest of its row set to -inf."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "90aa280ddcdf2197dcb3fd532d96f33b", "grade": true, "grade_id": "check_top_k_filter", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
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

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "bdafee4ee68c61fd8000f6d2b146ec95", "grade": false, "grade_id": "top_k_probs", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_k_probs(logits: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """The (B, V) probabilities softmax(top-k(logits / temperature)), one distribution per row."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "4a337f9f508132b95f5fc66914d3fbbb", "grade": true, "grade_id": "check_top_k_probs", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_top_k_probs(top_k_probs)

# %% [markdown]
# ## To think about: an open question
#
# Is there one value of k you would use for every prompt? When would k = 50 let in too many tokens, and when
# too few?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 3](../03_top_k.ipynb) showed. The [solutions notebook](../solutions/03_top_k_solutions.ipynb) ends
# with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
