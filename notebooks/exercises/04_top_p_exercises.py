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
# # Chapter 4 exercises — top-p and min-p sampling
#
# Two exercises on [chapter 4](../04_top_p.ipynb): nucleus (top-p) filtering, then min-p beside it. Each
# exercise asks for one function; the cell after it checks your function on hidden cases against minigpt's
# own and, when one fails, shows that input with the expected and the actual answer.
# In the [exercise notebook](../exercises/04_top_p_exercises.ipynb) each function is a stub for you to fill
# in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/04_top_p_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.top_p import check_min_p_filter, check_top_p_filter

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# Chapter 4 ran top-p = 0.9 on the toy logits after *"every effort moves you"* (closer 4.51, every 0.89,
# effort −1.90, forward 6.75, inches 1.63, moves −1.62, pizza −1.89, toward 6.28, you 1.79) at temperature 1:
# it kept two words, "forward" and "toward". Min-p = 0.1 keeps every word at least a tenth as likely as the
# most likely one; top-k = 3 always keeps three. The temperature is applied first.
#
# Before you run the next cell, write down your answers:
#
# 1. At temperature 2 the distribution is flatter. Does top-p 0.9 keep more words, fewer, or the same two?
# 2. How many words does min-p 0.1 keep at temperature 1? Does that number grow with the temperature as
#    top-p's does?
# 3. At temperature 5 (nearly flat), which of the two keeps more?

# %%
from minigpt.logits import apply_temperature, min_p_filter, top_k_filter, top_p_filter

vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])  # (1, 9)
filters = {"top-k 3": lambda z: top_k_filter(z, 3), "top-p 0.9": lambda z: top_p_filter(z, 0.9),
           "min-p 0.1": lambda z: min_p_filter(z, 0.1)}
print("words kept\nT    " + "".join(f"{name:>11}" for name in filters))
for T in (0.5, 1.0, 2.0, 5.0):
    scaled = apply_temperature(logits, T)
    kept = [int((f(scaled) > float("-inf")).sum()) for f in filters.values()]
    print(f"{T:<5g}" + "".join(f"{n:>11}" for n in kept))


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

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "537c012b0f1177543f5636a186daf722", "grade": false, "grade_id": "top_p_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """The (B, V) ``logits`` with every token outside its row's nucleus of mass ``p`` set to -inf."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "897f5b43e1f20acc46739813b29b82af", "grade": true, "grade_id": "check_top_p_filter", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
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

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "7dc39713062606631215d97897664e2a", "grade": false, "grade_id": "min_p_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """The (B, V) ``logits`` with every token less likely than ``min_p`` × its row's top probability at -inf."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "f2273941a0314505335d225d3b0aa8f9", "grade": true, "grade_id": "check_min_p_filter", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_min_p_filter(min_p_filter)

# %% [markdown]
# ## To think about: an open question
#
# When would you prefer min-p over top-p?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 4](../04_top_p.ipynb) showed. The [solutions notebook](../solutions/04_top_p_solutions.ipynb) ends
# with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
