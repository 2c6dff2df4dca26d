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
# # Chapter 9 exercises — determinism
#
# Two exercises on [chapter 9](../09_determinism.ipynb): a float32 sum added up strictly left to right, where
# the order of the additions decides the result, then whether rounding noise of a given size could change the
# token greedy decoding picks. Each exercise asks for one function; the cell after it checks your function on
# hidden cases against minigpt's own and, when one fails, shows that input with the expected and the actual
# answer. Every answer here is exact, on every machine: a single float32 addition is rounded the same way
# everywhere, so only the order of the additions can change a sum.
# In the [exercise notebook](../exercises/09_determinism_exercises.ipynb) each function is a stub for you to
# fill in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/09_determinism_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.determinism import check_argmax_is_decided, check_sum_left_to_right

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# `2**24` is 16,777,216. The next cell adds 1 to it twice, in two groupings, first in float32 (the model's
# numbers) and then in Python's float64; last, it asks `argmax` to choose between two float32 logits,
# `2.0` and `2.0 + 1e-7`.
#
# Before you run the next cell, write down your answers:
#
# 1. In float32, is `(2**24 + 1) + 1` the same number as `2**24 + (1 + 1)`? If not, which one is off, and by
#    how much?
# 2. In float64, the same question: same or not?
# 3. Which of the two logits, `2.0` (token 0) or `2.0 + 1e-7` (token 1), does `argmax` pick in float32?

# %%
big, one = torch.tensor(2.0**24), torch.tensor(1.0)  # float32, as the model computes
print(f"float32: (2**24 + 1) + 1 = {((big + one) + one).item():.0f}, "
      f"2**24 + (1 + 1) = {(big + (one + one)).item():.0f}")
print(f"float64: (2**24 + 1) + 1 = {(2.0**24 + 1) + 1:.0f}, 2**24 + (1 + 1) = {2.0**24 + (1 + 1):.0f}")
logits = torch.tensor([2.0, 2.0 + 1e-7])  # (2,) float32
print(f"float32 logits [2.0, 2.0 + 1e-7]: equal {bool(logits[0] == logits[1])}, "
      f"argmax picks token {logits.argmax().item()}")
# every line above is exact IEEE arithmetic on single numbers: the same on every machine
assert (big + one) + one != big + (one + one) and logits.argmax() == 0


# %% [markdown]
# ## Exercise 1: a float32 sum, left to right
#
# Write `sum_left_to_right(x)`: the float32 numbers of the 1-D tensor `x` added one at a time, first to last,
# with the running total kept in float32, so that it is rounded after every addition, as a plain loop over
# float32 numbers does. Return the total, a number (a 0-d tensor is fine too). An empty `x` sums to 0.
#
# The checker compares your answer *exactly* with the library's, to the last bit: the same additions in the
# same order give the same float32 result on every machine. `x.sum()` adds in blocks (chapter 9), and Python's
# `sum(x.tolist())` and `math.fsum` add in float64: each of them adds the same numbers differently, and the
# prediction showed that the result can differ.
#
# *Hint:* a `for` loop over `x` gives its numbers as 0-d float32 tensors; start from `torch.tensor(0.0)`,
# which is float32 too.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "3a15ae26c279f5230092b1caabcbc521", "grade": false, "grade_id": "sum_left_to_right", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sum_left_to_right(x: torch.Tensor) -> float:
    """The float32 numbers of the (N,) ``x`` added first to last, the running total rounded to float32 each time."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "ddd85f148977c64af926101d14f87421", "grade": true, "grade_id": "check_sum_left_to_right", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_sum_left_to_right(sum_left_to_right)


# %% [markdown]
# ## Exercise 2: is the argmax decided?
#
# Rounding noise moves every logit a little: chapter 9 measured it between a batch of one and a larger batch,
# and between two summation orders. Suppose no logit moves by more than `d`. The two leading logits can then
# move towards each other by at most 2`d`, so the argmax cannot change when the gap between them is larger
# than 2`d`; at a gap of exactly 2`d` they can meet in a tie, and a tie (a gap of 0) has no single argmax.
#
# Write `argmax_is_decided(logits, d)`: for each row of the (B, V) `logits`, whether its argmax is decided
# against noise of at most `d`, that is whether the gap between its two largest logits is larger than 2`d`.
# Return a (B,) bool tensor.
#
# *Hints:* `logits.topk(2, dim=-1).values` holds each row's two largest logits, largest first; two tokens
# tied for the lead appear there as two equal values. The noise is in the logits: compare their gap, not the
# gap between probabilities.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "0f3bdf03d15d1b2e91090f60ec2a15a8", "grade": false, "grade_id": "argmax_is_decided", "locked": false, "schema_version": 3, "solution": true, "task": false}
def argmax_is_decided(logits: torch.Tensor, d: float) -> torch.Tensor:
    """(B,) bool: whether each row's argmax survives any change of at most ``d`` in every logit."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "2107761b7c85a9c0b8664bb40f06675d", "grade": true, "grade_id": "check_argmax_is_decided", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_argmax_is_decided(argmax_is_decided)

# %% [markdown]
# ## To think about: an open question
#
# A service that answers with greedy decoding batches whoever's requests arrive together, so the same prompt
# runs in batches of different sizes. Can a user get two different answers to the same prompt? Would you
# promise the same answer every time, and what would it take?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 9](../09_determinism.ipynb) showed. The [solutions notebook](../solutions/09_determinism_solutions.ipynb)
# ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
