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
# # Chapter 10 exercises — constrained decoding
#
# Two exercises on [chapter 10](../10_constrained_decoding.ipynb): walking a regular expression's machine
# over a text, then the regex mask (which tokens keep the machine alive). Each exercise asks for one
# function; the cell after it checks your function on hidden cases against minigpt's own and, when one fails,
# shows that input with the expected and the actual answer.
# In the [exercise notebook](../exercises/10_constrained_decoding_exercises.ipynb) each function is a stub for
# you to fill in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/10_constrained_decoding_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.constrained import compile_regex
from minigpt.exercises.constrained import check_allowed_tokens, check_walk

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# Chapter 10 compiled ` [0-9]+(\.[0-9]+)?` (a space, digits, and maybe a point and more digits) into a
# machine with 5 states.
#
# Before you run the next cell, write down your answers:
#
# 1. How many states does `(yes|no)` need? And `(yes|no|maybe)`?
# 2. Does `[0-9][0-9]?` need more states than `[0-9]+`? Which of them has more accepting states?

# %%
for pattern in ["(yes|no)", "(yes|no|maybe)", "[0-9]+", "[0-9][0-9]?", r" [0-9]+(\.[0-9]+)?"]:
    dfa = compile_regex(pattern)
    print(f"{pattern:20} states {len(dfa.transitions)}   accepting {sorted(dfa.accepting)}")


# %% [markdown]
# ## Exercise 1: walk the machine
#
# Write `walk(dfa, text, state)`: read `text` one character at a time from `state` and return the state you
# end in, or `None` as soon as the machine dies. `dfa.transitions[s]` is a dict from a character to the next
# state; a character missing from it kills the machine. (States outside `dfa.live` can never reach a match:
# treat them as dead too.)

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "1575fa187d1f100d4fe19b591ebdff62", "grade": false, "grade_id": "walk", "locked": false, "schema_version": 3, "solution": true, "task": false}
def walk(dfa, text, state):
    """The state after reading ``text`` from ``state``, or None once no match is possible."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "e4000628dd896570e660d21422f821e7", "grade": true, "grade_id": "check_walk", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_walk(walk)


# %% [markdown]
# ## Exercise 2: the regex mask
#
# Write `allowed_tokens(dfa, state, strings)`: the ids (positions in `strings`, in increasing order) of the
# tokens whose *whole* string keeps the machine alive when read from `state`. A token need not finish a
# match: it only must not kill the machine. `None` strings (tokens with no text of their own) are never
# allowed.
#
# *Hint:* your `walk` does most of the work.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "10df500f9ef821e2ddbfa6b5ab381d52", "grade": false, "grade_id": "allowed_tokens", "locked": false, "schema_version": 3, "solution": true, "task": false}
def allowed_tokens(dfa, state, strings):
    """The sorted ids of the token strings that keep ``dfa`` alive from ``state``."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "8781d5ec4229609567808d7a9ef770fe", "grade": true, "grade_id": "check_allowed_tokens", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_allowed_tokens(allowed_tokens)

# %% [markdown]
# ## To think about: an open question
#
# A constraint guarantees the shape of the output. When would you rather not constrain, and instead let the
# model write freely and check the result afterwards?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 10](../10_constrained_decoding.ipynb) showed. The
# [solutions notebook](../solutions/10_constrained_decoding_solutions.ipynb) ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
