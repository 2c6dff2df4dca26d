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
# # Chapter 2 exercises — temperature (solutions)
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

# %% nbgrader={"grade": false, "grade_id": "softmax_with_temperature", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The (B, V) probabilities softmax(logits / temperature), one distribution per row."""
    ### BEGIN SOLUTION
    scaled = logits / temperature  # temperature reshapes the scores, before they become probabilities
    # subtracting each row's largest score leaves the softmax unchanged but keeps exp() finite: the
    # largest becomes exp(0) = 1 and nothing can overflow, whatever T and the scale of the logits
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values  # (B, V) - (B, 1), broadcast along the row
    weights = torch.exp(scaled)  # a logit of -inf gets weight exactly 0
    return weights / weights.sum(dim=-1, keepdim=True)  # each row divided by its own total: sums to 1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_softmax_with_temperature", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_softmax_with_temperature(softmax_with_temperature)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_softmax_with_temperature, softmax_with_temperature)
### END HIDDEN TESTS

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

# %% nbgrader={"grade": false, "grade_id": "entropy", "locked": false, "schema_version": 3, "solution": true, "task": false}
def entropy(probs: torch.Tensor) -> torch.Tensor:
    """The (B,) entropies, in nats, of the rows of the (B, V) ``probs``."""
    ### BEGIN SOLUTION
    # p log p tends to 0 as p -> 0, but 0 * log(0) computes as 0 * -inf = nan: count those terms as 0
    p_log_p = torch.where(probs > 0, probs * torch.log(probs), 0.0)
    return -p_log_p.sum(dim=-1)  # natural log, so nats; one value per row, (B,)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_entropy", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_entropy(entropy)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_entropy, entropy)
### END HIDDEN TESTS

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

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# Not the same one. Temperature never changes which word is the most likely (the prediction above: "forward"
# at every T); it changes how often the sampler picks something else. At T = 0.5 "forward" went from 0.572 to
# 0.713, and "toward" and "closer" lost; at T = 2 "forward" fell to 0.421, and even "effort", the least likely
# of the nine, rose from 0.000 to 0.006.
#
# For arithmetic a wrong digit is simply wrong, and the most likely token is the best guess, so I would use a
# low temperature, or T → 0, which is greedy decoding (chapter 2, step 5). For sonnets the most likely
# continuation is the dull one; a temperature a little below 1 lets the second and third choices through.
# Chapter 2's samples from the Shakespeare model show the range: at its lowest temperature readable but stock
# ("I'll be a man in my heart"), at its highest a jumble ("Juno fairy objects was furnace Tarquin bleed"),
# because at a high temperature the thousands of tail tokens together win a large share, as "effort" did. I
# would pick the value by
# generating a few samples at several temperatures with fixed seeds and reading them. The right value depends
# on the model (a weaker model needs a lower one) and on the truncation used with it: top-k, top-p or min-p
# (chapters 3 and 4) cut the tail and make a higher temperature safer.
#
# Entropy turns that reading into a number to watch. Measured at each step of a generation, it is near 0 nats
# where the model is sure (temperature hardly matters there) and near log V where it is guessing. For the
# arithmetic job a high-entropy step is a warning that the answer may be wrong: flag it, or answer "I am not
# sure". For the sonnet job you could choose the temperature so that the entropy of the distributions actually
# sampled stays in a band you found readable; some samplers go further and adapt the temperature at every step
# to hit a target entropy. On the toy logits the whole range is visible: from 0 at T → 0 to $\log 9$ as
# T → ∞ (chapter 2, step 4).
#
# #### Rubric (1 point)
#
# - **1 point**: gives the two jobs different temperatures (low, or greedy, for arithmetic; nearer 1 for sonnets), says how to choose each (samples at several temperatures with fixed seeds, read and compared), and uses entropy as a measure of how unsure the model is (flag high-entropy steps in the arithmetic, or keep the entropy of the sampled distributions in a readable band), supported by a number from this notebook or chapter 2 (such as "forward" going from 0.572 to 0.713 at a low temperature and falling to 0.421 at a high one).
# - **½ point**: different temperatures with a reason, but entropy unused or named without saying what it would decide; or no number from the notebooks.
# - **0 points**: the same temperature for both jobs without a reason, or no answer.
