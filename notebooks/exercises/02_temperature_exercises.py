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
# # Chapter 2 exercises — temperature
#
# Two exercises on [chapter 2](../02_temperature.ipynb): a softmax with temperature, then the entropy that
# measures how spread out a distribution is. Each exercise asks for one function; the cell after it checks
# your function on hidden cases against minigpt's own and, when one fails, shows that input with the
# expected and the actual answer.
# In the [exercise notebook](../exercises/02_temperature_exercises.ipynb) each function is a stub for you to
# fill in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/02_temperature_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.temperature import check_entropy, check_softmax_with_temperature

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# The toy logits after *"every effort moves you"*: closer 4.51, every 0.89, effort −1.90, forward 6.75, inches
# 1.63, moves −1.62, pizza −1.89, toward 6.28, you 1.79. At temperature 1 the most likely word, "forward", has
# probability 0.572, and the least likely, "effort", 0.000 (to 3 decimals).
#
# Before you run the next cell, write down your answers:
#
# 1. Will temperature 0.5 make the top probability larger or smaller than 0.572?
# 2. And temperature 2? Does "effort", the least likely word, gain or lose probability there?
# 3. Can a temperature change which word is the most likely?

# %%
from minigpt.logits import apply_temperature

vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])  # (1, 9)
tops = []
for T in (0.5, 1.0, 2.0):
    probs = torch.softmax(apply_temperature(logits, T), dim=-1)[0]  # softmax(logits / T)
    print(f"T = {T:g}: most likely {vocab[probs.argmax()]!r}; "
          + ", ".join(f"{vocab[i]} {probs[i]:.3f}" for i in (3, 7, 0, 2)))
    assert probs.argmax() == 3
    tops.append(probs[3].item())
assert tops[0] > tops[1] > tops[2]  # colder: the top word gains; hotter: it loses


# %% [markdown]
# ## Exercise 1: softmax with temperature
#
# Write `softmax_with_temperature(logits, temperature)`: divide the logits by the temperature T, then turn
# each row into probabilities with a softmax, `exp(z / T) / Σ exp(z / T)`. The logits are (B, V), one row
# per sequence as in the library, so every row of the answer is a distribution of its own that sums to 1.
#
# Write the softmax yourself, as the chapter did, rather than calling `torch.softmax`: the hidden cases
# include a temperature so low that the scaled logits reach the hundreds and `exp` overflows to `inf`, and
# rows whose logits are in the thousands, positive and negative, so remember the chapter's trick.
#
# *Hints:* `logits.max(dim=-1, keepdim=True).values` is each row's largest logit, as a (B, 1) column that
# broadcasts against the (B, V) logits; `.sum(dim=-1, keepdim=True)` likewise.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "db4ee8f81cd6d87911c5a8d3cd291d76", "grade": false, "grade_id": "softmax_with_temperature", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The (B, V) probabilities softmax(logits / temperature), one distribution per row."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "64436c485285a672f5cd72a0e5beabf0", "grade": true, "grade_id": "check_softmax_with_temperature", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_softmax_with_temperature(softmax_with_temperature)


# %% [markdown]
# ## Exercise 2: entropy
#
# Write `entropy(probs)`: the entropy `-Σ p log p` of each row of the (B, V) probabilities, in nats (the
# natural logarithm), as a (B,) tensor. Nine equally likely tokens give $\log 9 \approx 2.1972$ nats; one
# certain token gives 0.
#
# A probability of exactly 0 contributes nothing (p log p → 0 as p → 0), but the computer evaluates
# `0 * log(0)` as `0 * -inf = nan`: make sure those terms count as 0.
#
# *Hint:* `torch.where(condition, a, b)` picks `a` where the condition holds and `b` elsewhere.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "c93bab8db225b92babb0cf65ae1195fd", "grade": false, "grade_id": "entropy", "locked": false, "schema_version": 3, "solution": true, "task": false}
def entropy(probs: torch.Tensor) -> torch.Tensor:
    """The (B,) entropies, in nats, of the rows of the (B, V) ``probs``."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "72f66b93a4eade1851ae9aa9f7904023", "grade": true, "grade_id": "check_entropy", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_entropy(entropy)

# %% [markdown]
# ## To think about: an open question
#
# One assistant has two jobs: it answers arithmetic questions and it writes sonnets. Would you give both jobs
# the same temperature? How would you choose each value, and how could the entropy you wrote in Exercise 2
# help you?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 2](../02_temperature.ipynb) showed. The
# [solutions notebook](../solutions/02_temperature_solutions.ipynb) ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
