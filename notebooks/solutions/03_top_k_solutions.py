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
# # Chapter 3 exercises — top-k sampling (solutions)
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

# %% nbgrader={"grade": false, "grade_id": "top_k_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The (B, V) ``logits`` with every logit below the k-th largest of its row set to -inf."""
    ### BEGIN SOLUTION
    k = min(k, logits.size(-1))  # more tokens than the vocabulary holds means all of them (topk would fail)
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1): each row's k-th largest logit
    # strictly below the k-th goes: a logit tied with it stays, so a row can keep more than k tokens
    return logits.masked_fill(logits < kth_largest, float("-inf"))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_top_k_filter", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_top_k_filter(top_k_filter)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_top_k_filter, top_k_filter)
### END HIDDEN TESTS

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

# %% nbgrader={"grade": false, "grade_id": "top_k_probs", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_k_probs(logits: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """The (B, V) probabilities softmax(top-k(logits / temperature)), one distribution per row."""
    ### BEGIN SOLUTION
    filtered = top_k_filter(logits / temperature, k)  # temperature first, then top-k, as minigpt does
    return torch.softmax(filtered, dim=-1)  # exp(-inf) = 0, so the survivors share all the mass
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_top_k_probs", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_top_k_probs(top_k_probs)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_top_k_probs, top_k_probs)
### END HIDDEN TESTS

# %% [markdown]
# ## To think about: an open question
#
# Is there one value of k you would use for every prompt? When would k = 50 let in too many tokens, and when
# too few?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 3](../03_top_k.ipynb) showed. The [solutions notebook](../solutions/03_top_k_solutions.ipynb) ends
# with one worked answer.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# No single k fits every prompt, because the number of tokens worth considering changes from one step to the
# next and k does not. The prediction above shows it on nine words: top-2 threw away 0.070 of the probability
# at T = 1, where two words held almost all of it, but 0.538 at T = 5, where the distribution was flat and the
# other seven words were still plausible, and renormalising then more than doubled the share of "forward"
# (0.242 → 0.523). Chapter 3 found the same on the real model, at two steps of one greedy text: top-10 kept
# less than a quarter of the mass where the model was unsure, and all but a sliver of it where the model was
# sure. Chapter 4 counted the tokens top-p needs (`top_p=0.9`) along the same text: one at the sure step,
# thousands at the unsure one.
#
# k = 50 is too few at an open step, such as the first word of a new line or chapter 3's *"as I am a ..."*,
# where thousands of words are reasonable: top-50 kept less than half of the mass there, so the text comes out
# blander than the model is, and renormalising hands the 50 a larger share than the model meant. At a
# confident step, after a speaker's name where a newline is all but certain, k = 50 lets in dozens of tokens
# the model hardly considers. That costs less than it sounds: at chapter 3's peaked step the nine extra tokens
# of top-10 held so little mass that a sampler would pick one of them less than once in ten thousand
# draws. Over a long text, though, such steps add up, and an occasional misspelt name or broken-off line is
# what they cost.
#
# A fixed k still has its uses. k = 1 is greedy decoding (chapter 3's `top_k = 1` text); a small k is a cheap
# guard against the worst of the tail; and since `topk` is cheap, a cap such as `top_k=50` is often combined
# with top-p or min-p (chapter 4), which follow the model's confidence. If I had to pick one k, I would look at
# how many tokens the model needs at its confident and at its open steps on prompts like mine, choose k near
# the upper end, and let temperature and top-p do the rest.
#
# #### Rubric (1 point)
#
# - **1 point**: says no single k fits every prompt, because the number of plausible tokens changes from step to step while k does not; names when k = 50 lets in too few tokens (an open step, where thousands are plausible) and when too many (a confident step), supported by a number from this notebook or chapter 3 (top-2 threw away 0.070 of the probability at T = 1 but 0.538 at T = 5, or chapter 3's top-10 at its unsure and its sure step).
# - **½ point**: only one side (too few or too many), or both without any number from the notebooks.
# - **0 points**: one k for every prompt without a reason, or no answer.
