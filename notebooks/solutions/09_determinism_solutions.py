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
# # Chapter 9 exercises — determinism (solutions)
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

# %% nbgrader={"grade": false, "grade_id": "sum_left_to_right", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sum_left_to_right(x: torch.Tensor) -> float:
    """The float32 numbers of the (N,) ``x`` added first to last, the running total rounded to float32 each time."""
    ### BEGIN SOLUTION
    total = torch.tensor(0.0)  # float32: the sum of no numbers
    for value in x:  # value: a 0-d float32 tensor
        total = total + value  # float32 + float32: rounded to float32 at every step
    return total.item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sum_left_to_right", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_sum_left_to_right(sum_left_to_right)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_sum_left_to_right, sum_left_to_right)
### END HIDDEN TESTS

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

# %% nbgrader={"grade": false, "grade_id": "argmax_is_decided", "locked": false, "schema_version": 3, "solution": true, "task": false}
def argmax_is_decided(logits: torch.Tensor, d: float) -> torch.Tensor:
    """(B,) bool: whether each row's argmax survives any change of at most ``d`` in every logit."""
    ### BEGIN SOLUTION
    top2 = logits.topk(2, dim=-1).values  # (B, 2): the leader and the runner-up, equal when tied
    gap = top2[:, 0] - top2[:, 1]  # (B,)
    return gap > 2 * d  # each may move d towards the other: 2d in all, and meeting is a tie
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_argmax_is_decided", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_argmax_is_decided(argmax_is_decided)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_argmax_is_decided, argmax_is_decided)
### END HIDDEN TESTS

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

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# Yes, they can, although rarely. The batch size changes the shapes of the matrix products, so their sums are
# added in another order, and the prediction showed what order does in float32: `(2**24 + 1) + 1` came out as
# 16777216 and `2**24 + (1 + 1)` as 16777218, while float64 gave 16777218 both ways. In the model the same
# effect moves the logits in their last bits, a change far smaller than a logit. Exercise 2 says when such a
# change matters: only at a step whose top two logits are within 2d of each other, where d is the size of the
# noise. Chapter 9 measured its greedy generation's closest call and found it much farther from a tie than
# the noise could reach, so most prompts give the same text at any batch size. But over many prompts and long
# answers a near-tie will come, and once one token differs, every later token is computed from a different
# text, so the two answers can part completely.
#
# I would not promise bit-identical answers for free. What it takes is to remove the cause, not the symptom:
# compute each request in a way that does not depend on its neighbours (batch-invariant kernels that add every
# row in the same fixed order whatever the batch size, or running each request alone), pin the software and
# the hardware, since another CPU or library blocks its sums differently, and seed every sampler. Each of
# these costs speed or flexibility. A cheaper promise is an honest one: the same answer except where the model
# itself was undecided, which a service can detect with Exercise 2's test (a top-2 gap within 2d of a tie)
# and report, or break by a fixed rule such as the lower token id.
#
# #### Rubric (1 point)
#
# - **1 point**: says that different answers are possible but need a near-tie (a top-2 gap within 2d, Exercise 2), explains that the batch size changes the order of float32 additions, supported by a number from this notebook (such as `(2**24 + 1) + 1` giving 16777216 against 16777218) or chapter 9's measurement, and names a concrete way to keep the promise with its cost (batch-invariant kernels, running each request alone, pinned hardware and software).
# - **½ point**: explains why answers can differ without saying that only near-ties are at risk, or proposes a way to keep the promise without explaining where the differences come from.
# - **0 points**: says that greedy decoding or temperature 0 is always deterministic, or gives no reason.
