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
# # Chapter 4 exercises — top-p and min-p sampling (solutions)
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

# %% nbgrader={"grade": false, "grade_id": "top_p_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """The (B, V) ``logits`` with every token outside its row's nucleus of mass ``p`` set to -inf."""
    ### BEGIN SOLUTION
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True, dim=-1)  # most likely first; order[:, j] = its id
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the more likely tokens
    # a token goes only when the tokens before it already reach p, so the one that crosses p stays
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_top_p_filter", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_top_p_filter(top_p_filter)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_top_p_filter, top_p_filter)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 2: the min-p filter
#
# Write `min_p_filter(logits, min_p)`: drop every token whose probability is less than `min_p` times the
# probability of the most likely token of its row (its logit becomes `-inf`). The cut-off scales with the
# model's confidence: strict when one token dominates, loose when it hesitates.
#
# *Hint:* compare probabilities (a softmax of each row), not logits: logits can be negative, and their
# ratios mean nothing.

# %% nbgrader={"grade": false, "grade_id": "min_p_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """The (B, V) ``logits`` with every token less likely than ``min_p`` × its row's top probability at -inf."""
    ### BEGIN SOLUTION
    probs = torch.softmax(logits, dim=-1)
    # the cut-off follows each row's confidence: min_p times the probability of its most likely token
    threshold = min_p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_min_p_filter", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_min_p_filter(min_p_filter)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_min_p_filter, min_p_filter)
### END HIDDEN TESTS

# %% [markdown]
# ## To think about: an open question
#
# When would you prefer min-p over top-p?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 4](../04_top_p.ipynb) showed. The [solutions notebook](../solutions/04_top_p_solutions.ipynb) ends
# with one worked answer.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# Both rules keep fewer tokens when the model is sure and more when it is not; they differ in what they look
# at. Top-p counts mass: it goes down the sorted list until the kept tokens hold p of the probability, however
# many that takes and however unlikely the last ones are. Min-p sets a floor relative to the best token: a
# token stays if it is at least `min_p` times as likely as the top one, whatever the rest of the distribution
# looks like.
#
# The difference matters most in a long, flat tail. At chapter 4's flattest step top-p 0.9 kept thousands of
# tokens (its Step 3 prints how many): to reach p it had to take in tokens down to about a millionth each,
# each a poor choice, though together they hold a real share, more than half of the mass it kept. Min-p 0.1 at
# that step keeps only the tokens at least a tenth as likely as the best: twenty of them. So I would prefer min-p for
# creative text at a raised temperature, where the flattened distribution swells top-p's nucleus with junk
# while min-p's floor still follows the best token (the argument of the min-p paper by Nguyen et al., in
# chapter 4's Sources), and generally where the vocabulary is large and the tail long. It is also simpler and
# cheaper: one max and one comparison, no sort and no cumulative sum.
#
# The prediction's table shows both rules adapting, and where they part. At T = 1 min-p kept "closer" (just
# over a tenth as likely as "forward") while top-p 0.9 dropped it, since "forward" and "toward" already held
# more than p. At T = 2 top-p kept 4 words, min-p 3. At T = 5 min-p kept all nine: on a nearly flat
# distribution every word is within a factor of ten of the best, so a floor relative to the top cuts nothing,
# while top-p still left out the two least likely words. So I would keep top-p when I want a guarantee on how
# much probability is given up
# (never more than 1 − p), or when I must match a reference setting (top-p is what most APIs and papers
# report). Nothing stops you from using both: min-p for the floor, a loose top-p or top-k as a cap.
#
# #### Rubric (1 point)
#
# - **1 point**: names when to prefer min-p (a long, flat tail, as at a raised temperature or with a large vocabulary) and why: top-p counts mass and must take in many unlikely tokens to reach p, while min-p keeps only the tokens at least `min_p` times as likely as the best; supported by a number from this notebook or chapter 4 (top-p 0.9 keeping thousands of tokens at the flattest step where min-p 0.1 kept twenty, or the prediction's table, where at T = 2 top-p kept 4 words and min-p 3).
# - **½ point**: the difference between the two rules right but no situation named, or a situation with no support from what the notebooks showed.
# - **0 points**: treats the two rules as the same, or no answer.
