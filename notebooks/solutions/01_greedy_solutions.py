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
# # Chapter 1 exercises — greedy decoding (solutions)
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

# %% nbgrader={"grade": false, "grade_id": "greedy_next_token", "locked": false, "schema_version": 3, "solution": true, "task": false}
def greedy_next_token(logits: torch.Tensor) -> torch.Tensor:
    """The (B,) ids of the largest logit in each row of the (B, V) ``logits``."""
    ### BEGIN SOLUTION
    # the vocabulary is the last dimension: argmax along it gives one index per row, (B,)
    return logits.argmax(dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_greedy_next_token", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_greedy_next_token(greedy_next_token)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_greedy_next_token, greedy_next_token)
### END HIDDEN TESTS

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

# %% nbgrader={"grade": false, "grade_id": "greedy_generate", "locked": false, "schema_version": 3, "solution": true, "task": false}
def greedy_generate(model: torch.nn.Module, ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Append ``max_new_tokens`` greedy tokens to every row of ``ids`` (B, T); return (B, T + max_new_tokens)."""
    ### BEGIN SOLUTION
    for _ in range(max_new_tokens):
        with torch.no_grad():  # generating, not training: no gradients to keep track of
            logits = model(ids)  # (B, T, V): the whole sequence again, every step (no cache)
        next_ids = greedy_next_token(logits[:, -1])  # (B,): only the last position predicts what comes next
        ids = torch.cat([ids, next_ids.unsqueeze(1)], dim=1)  # (B, T + 1): the new token is part of the input
    return ids
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_greedy_generate", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_greedy_generate(greedy_generate)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_greedy_generate, greedy_generate)
### END HIDDEN TESTS

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

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# Greedy decoding is the right tool when there is one answer you want, and you want the same one every time: a
# label, a number, the word that completes a fact, a short completion of code, the translation of a short
# phrase. There the most likely token at each step usually *is* the answer, and sampling would only add
# mistakes. Repeatability is worth a lot on its own: the check cells of this notebook compare your loop with
# `minigpt.generate(..., temperature=0)` token for token, which works only because greedy decoding has no
# randomness; the repository's tests pin greedy outputs the same way. It is also the cheapest decoder: one
# argmax per step and no random state to carry around.
#
# It is the wrong tool for long, open-ended text, and chapter 1 showed why. It is short-sighted: on the toy
# tree it took "The nice woman" and never looked at "The dog has", almost twice as likely, because "dog" lost
# the first step. And it is deterministic, so once the context repeats, the output repeats: after "ROMEO:" the
# first 4-gram came back a few tokens later, and "And I am a man, and a man," went round and round. The
# prediction above adds a third reason: greedy throws away how sure the model was. It took "forward" at 0.572
# and "toward" at 0.479 with the same finality, and a small rise of one logit flipped the word while
# "forward" fell only from 0.572 to 0.464.
#
# So before trusting a greedy output I would look along it: how likely the winner was at each step, and by how
# much it beat the runner-up (a near tie is a coin toss the model did not mean to make; docs/contributing.md asks every
# greedy example in the chapters to win each step by a clear margin because another CPU can flip a closer one),
# and whether an n-gram repeats (chapter 1's `first_repeat`). If the text loops, chapter 5's repetition
# penalty or no-repeat n-gram rule, or beam search (chapter 6), keep the output deterministic; if variety is
# wanted, sample (chapters 2–4).
#
# #### Rubric (1 point)
#
# - **1 point**: names a use where one repeatable answer is wanted (a label, a fact, a short completion of code, a test that compares tokens) and something to check before trusting the output (an n-gram that repeats, a short-sighted first step, a near tie between the winner and the runner-up), supported by what this notebook or chapter 1 showed (the "and a man," loop, "The dog has" missed for "The nice woman", or "forward" taken at 0.572 as firmly as "toward" at 0.479).
# - **½ point**: a sensible use of greedy decoding or a sensible check, but not both, or neither supported by what the notebooks showed.
# - **0 points**: "always greedy" or "never greedy" without a reason, or no answer to when.
