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
# Three exercises on [chapter 10](../10_constrained_decoding.ipynb): walking a regular expression's machine
# over a text, the regex mask (which tokens keep the machine alive), then the whole constrained loop that
# generates a date or a play line through them. Each exercise asks for one function; the cell after it checks
# your function on hidden cases against minigpt's own and, when one fails, shows that input with the expected
# and the actual answer. In the [exercise notebook](../exercises/10_constrained_decoding_exercises.ipynb) each
# function is a stub for you to fill in (replace `raise NotImplementedError` with your code); the [solutions
# notebook](../solutions/10_constrained_decoding_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it. Exercise 3,
# which puts the pieces together, has a prediction and an open question of its own.

# %%
import torch

from minigpt.constrained import TokenIndex, compile_regex
from minigpt.exercises.constrained import (
    DAY_MONTH,
    END_OF_TEXT,
    TOY_STRINGS,
    check_allowed_tokens,
    check_constrained_generate,
    check_walk,
)
from minigpt.exercises.models import toy_model

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
# ## Exercise 3: generate through the machine
#
# Now the whole loop, the one `minigpt.generate(..., prefix_allowed_tokens_fn=regex_allowed_tokens_fn(...))`
# runs in chapter 10's Step 6. Write `constrained_generate(model, prompt_ids, pattern, strings, end_token_id,
# max_new_tokens, generator=None)`: continue the list of token ids `prompt_ids` with at most `max_new_tokens`
# tokens whose text matches `pattern`, and return the new ids as a list. `strings[i]` is the text of token `i`
# (`None` for a token with no text of its own). Start the machine of `pattern` in its start state; then, at
# each step:
#
# 1. run the model on the ids so far and take the logits of the last position;
# 2. set to `-inf` the logit of every token outside the mask: the tokens that keep the machine alive from
#    its state, and `end_token_id` too when the state is accepting (the text so far is a whole match);
# 3. pick the token: the argmax when `generator` is None, else one draw
#    `torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=generator)`, at every step;
# 4. append it; stop if it is the end token (keep it in the list), else let the machine read its string.
#
# The check runs your loop on a small random GPT whose 64 tokens have the texts `TOY_STRINGS` (pieces of
# dates and play lines), for a date and for a line `Name. Text` as in chapter 10; your text must match the
# pattern, and your tokens must be the library's, one by one.
#
# *Hints:* `TokenIndex(compile_regex(pattern), strings).allowed(state)` is the mask of a state (your
# `allowed_tokens` gives the same ids), and `dfa.walk(text, state)` reads a token's string. Call the model
# under `torch.no_grad()`.

# %% [markdown]
# ### Predict, then run
#
# The machine of the day and month ` [0-3]?[0-9]/[01]?[0-9]` (`DAY_MONTH`), over the toy model's 64 tokens.
# Before you run the next cell, write down your answer:
#
# 1. How many tokens does the mask allow (the end token included) after ` 31/1`, and how many after
#    ` 31/12`? Which token is left in the second case, and what must the loop do when it picks it?

# %%
day_month = compile_regex(DAY_MONTH)
index = TokenIndex(day_month, TOY_STRINGS)  # the mask of every live state, over the toy model's 64 token texts
for text in [" ", " 31/", " 31/1", " 31/12"]:
    state = day_month.walk(text)
    allowed = index.allowed(state).tolist() + ([END_OF_TEXT] if state in day_month.accepting else [])
    names = ["<end>" if i == END_OF_TEXT else TOY_STRINGS[i] for i in allowed]
    print(f"after {text!r:9} {len(allowed):2} of {len(TOY_STRINGS)} tokens allowed: {names}")
with torch.no_grad():  # how much the model itself puts on the first step's mask, after a prompt of three tokens
    probs = torch.softmax(toy_model(seed=4)(torch.tensor([[34, 41, 46]]))[0, -1], dim=-1)
kept = probs[index.allowed(0)].sum().item()
print(f"the toy model's probability on the {len(index.allowed(0))} tokens allowed at the start: {kept:.3f}, "
      f"so the mask multiplies each of their shares by {1 / kept:.1f}")


# %% deletable=false nbgrader={"cell_type": "code", "checksum": "b7ae9edb81def942d14079cbc646939b", "grade": false, "grade_id": "constrained_generate", "locked": false, "schema_version": 3, "solution": true, "task": false}
def constrained_generate(model, prompt_ids, pattern, strings, end_token_id, max_new_tokens, generator=None):
    """The new token ids (end token included) of ``model`` continuing ``prompt_ids`` with a text that fits ``pattern``."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "700b40cd67805916ff15c320a8a2f9ff", "grade": true, "grade_id": "check_constrained_generate", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_constrained_generate(constrained_generate)

# %% [markdown]
# ### To think about: does the loop sample the model's own dates?
#
# Your loop draws each token from the model's distribution renormalised over the mask. Is a whole date then
# drawn with the probability the model gives it among all the texts that match the pattern, p(date | the text
# matches)? If not, which dates does it favour, and what would it take to sample from that distribution?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 10](../10_constrained_decoding.ipynb) showed.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "2b29d1bf658c34ac65cd7ad135d26642", "grade": true, "grade_id": "open_question_constrained_generate", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE

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
