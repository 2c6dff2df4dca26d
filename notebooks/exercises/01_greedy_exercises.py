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
# # Chapter 1 exercises — greedy decoding
#
# Two exercises on [chapter 1](../01_greedy.ipynb): pick the most likely next token, then write the whole
# greedy loop. Each exercise asks for one function; the cell after it checks your function on hidden cases
# against minigpt's own and, when one fails, shows that input with the expected and the actual answer.
# Your function works on copies of the inputs, so changing them in place cannot upset a later case, and each
# case has a time limit: a loop that never ends fails the check instead of hanging the notebook.
# In the [exercise notebook](../exercises/01_greedy_exercises.ipynb) each function is a stub for you to fill
# in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/01_greedy_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.greedy import check_greedy_generate, check_greedy_next_token

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# A toy model's next-token logits after *"every effort moves you"*, one per word of a nine-word vocabulary
# (chapters 2–5 use them too): closer 4.51, every 0.89, effort −1.90, forward 6.75, inches 1.63, moves −1.62,
# pizza −1.89, toward 6.28, you 1.79. The second row of the batch below is the same, except that "toward" is
# 0.5 higher (6.78).
#
# Before you run the next cell, write down your answers:
#
# 1. Which word does greedy decoding pick in the first row?
# 2. How sure is the model of that word: is its probability (the softmax of the logits) above or below one half?
# 3. Which word does greedy pick in the second row? Does the probability of "forward" fall a little or a lot?

# %%
vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79],   # (2, 9): a batch of two
                       [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.78, 1.79]])  # "toward" 0.5 higher
picks = logits.argmax(dim=-1)  # (2,): greedy's choice in each row
probs = torch.softmax(logits, dim=-1)  # (2, 9): how sure the model is of each word
for row in range(2):
    print(f"row {row}: greedy picks {vocab[picks[row]]!r:9} forward {probs[row, 3]:.3f}, "
          f"toward {probs[row, 7]:.3f}, closer {probs[row, 0]:.3f}")
assert picks.tolist() == [3, 7] and probs[0, 3] > 0.5 > probs[1, 7]


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

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "089c10b6af9f1a93fb974503109aef54", "grade": false, "grade_id": "greedy_next_token", "locked": false, "schema_version": 3, "solution": true, "task": false}
def greedy_next_token(logits: torch.Tensor) -> torch.Tensor:
    """The (B,) ids of the largest logit in each row of the (B, V) ``logits``."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "777c710d390eb03ad89c110cde0214d1", "grade": true, "grade_id": "check_greedy_next_token", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
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

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "e647425d4c8ff0cd7c8fb2219cce0210", "grade": false, "grade_id": "greedy_generate", "locked": false, "schema_version": 3, "solution": true, "task": false}
def greedy_generate(model: torch.nn.Module, ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Append ``max_new_tokens`` greedy tokens to every row of ``ids`` (B, T); return (B, T + max_new_tokens)."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "832265d048bb15e09ff157e7248ec521", "grade": true, "grade_id": "check_greedy_generate", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_greedy_generate(greedy_generate)

# %% [markdown]
# ## To think about: an open question
#
# Chapter 1 showed greedy decoding going round in a loop ("And I am a man, and a man,") and missing the more
# likely "The dog has" for "The nice woman"; the prediction above showed it choosing a word just as firmly at
# 0.479 as at 0.572. When would you still choose greedy decoding over sampling, and what would you check
# before trusting its output?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 1](../01_greedy.ipynb) showed. The [solutions notebook](../solutions/01_greedy_solutions.ipynb)
# ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
