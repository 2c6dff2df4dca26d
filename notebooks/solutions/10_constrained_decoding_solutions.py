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
# # Chapter 10 exercises — constrained decoding (solutions)
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

# %% nbgrader={"grade": false, "grade_id": "walk", "locked": false, "schema_version": 3, "solution": true, "task": false}
def walk(dfa, text, state):
    """The state after reading ``text`` from ``state``, or None once no match is possible."""
    ### BEGIN SOLUTION
    for ch in text:
        state = dfa.transitions[state].get(ch)  # a missing character: the dead state
        if state is None or state not in dfa.live:
            return None  # no continuation can match any more
    return state
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_walk", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_walk(walk)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_walk, walk)
### END HIDDEN TESTS


# %% [markdown]
# ## Exercise 2: the regex mask
#
# Write `allowed_tokens(dfa, state, strings)`: the ids (positions in `strings`, in increasing order) of the
# tokens whose *whole* string keeps the machine alive when read from `state`. A token need not finish a
# match: it only must not kill the machine. `None` strings (tokens with no text of their own) are never
# allowed.
#
# *Hint:* your `walk` does most of the work.

# %% nbgrader={"grade": false, "grade_id": "allowed_tokens", "locked": false, "schema_version": 3, "solution": true, "task": false}
def allowed_tokens(dfa, state, strings):
    """The sorted ids of the token strings that keep ``dfa`` alive from ``state``."""
    ### BEGIN SOLUTION
    # every character of the token must be readable; None strings have no characters to read
    return [i for i, s in enumerate(strings) if s and walk(dfa, s, state) is not None]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_allowed_tokens", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_allowed_tokens(allowed_tokens)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_allowed_tokens, allowed_tokens)
### END HIDDEN TESTS


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


# %% nbgrader={"grade": false, "grade_id": "constrained_generate", "locked": false, "schema_version": 3, "solution": true, "task": false}
def constrained_generate(model, prompt_ids, pattern, strings, end_token_id, max_new_tokens, generator=None):
    """The new token ids (end token included) of ``model`` continuing ``prompt_ids`` with a text that fits ``pattern``."""
    ### BEGIN SOLUTION
    dfa = compile_regex(pattern)
    index = TokenIndex(dfa, strings)  # the allowed ids of every live state, computed once
    ids, new, state = list(prompt_ids), [], dfa.start
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1]  # (V,): the next token's logits
        allowed = index.allowed(state).tolist()
        if state in dfa.accepting:
            allowed.append(end_token_id)  # a whole match: the model may end it here
        masked = torch.full_like(logits, float("-inf"))
        masked[allowed] = logits[allowed]  # mask, then pick: only allowed tokens can be picked
        if generator is None:
            token = int(masked.argmax())
        else:
            token = int(torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=generator))
        new.append(token)
        ids.append(token)
        if token == end_token_id:
            break
        state = dfa.walk(strings[token], state)  # the machine reads the token's characters
    return new
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_constrained_generate", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_constrained_generate(constrained_generate)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_constrained_generate, constrained_generate)
### END HIDDEN TESTS

# %% [markdown]
# ### To think about: does the loop sample the model's own dates?
#
# Your loop draws each token from the model's distribution renormalised over the mask. Is a whole date then
# drawn with the probability the model gives it among all the texts that match the pattern, p(date | the text
# matches)? If not, which dates does it favour, and what would it take to sample from that distribution?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 10](../10_constrained_decoding.ipynb) showed.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question_constrained_generate", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# #### Worked answer
#
# No. The loop renormalises one step at a time: a token's share is its probability divided by the mass of
# the tokens allowed at that step, whatever happens after it. The model's own conditional, p(date | match),
# weighs each prefix by the mass of all its matching continuations instead, which the mask never looks at.
# The prediction above shows how large the correction can be: at the start, the toy model put only 0.145 of
# its probability on the tokens the date allows, so the mask multiplies every allowed token's share by 6.9,
# the same factor for all of them, whether the rest of the date is likely or not. A prefix after which
# the model would rather write anything but a date is favoured as much as one after which a date comes
# naturally; once chosen, later steps renormalise again and the date is finished regardless. Chapter 10's
# Step 9 measured how little mass the real model left on the allowed tokens at its median step: each such
# step distorts the distribution again.
#
# A second difference is tokenisation: the same text can be written as several token sequences (` 31` then
# `/0`, or ` 3`, `1`, `/`, `0`), and the model's probability of the text is the sum over them, while the loop
# follows one path and never adds them up.
#
# To sample from p(date | match) exactly, one would need, at each step, the probability that the model
# completes each prefix into a match: enumerating the matches (feasible for a finite pattern such as a day
# and a month, by scoring every date with the model as chapter 10's `choice_logprobs` scores options), or
# sampling freely and rejecting the texts that fail (exact, but slow when matches are rare), or importance
# weighting the constrained samples by the masses the mask removed. In practice the step-wise mask is used
# because it is cheap and always gives a valid text, and its bias is the price.
#
# #### Rubric (1 point)
#
# - **1 point**: says no, explains that the mask renormalises each step locally (ignoring how likely the continuations are) and names a consequence or a remedy (enumerate and score the matches, rejection sampling, weighting), supported by a number from this notebook or the chapter (the mass on the allowed tokens at the start, or chapter 10's Step 9).
# - **½ point**: says no and that the mask changes the distribution, without explaining why the step-by-step renormalisation differs from the conditional, or without any number.
# - **0 points**: says yes, or only restates that the output matches the pattern.

# %% [markdown]
# ## To think about: an open question
#
# A constraint guarantees the shape of the output. When would you rather not constrain, and instead let the
# model write freely and check the result afterwards?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 10](../10_constrained_decoding.ipynb) showed. The
# [solutions notebook](../solutions/10_constrained_decoding_solutions.ipynb) ends with one worked answer.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# Constraining is right when the shape is the whole point and a wrong shape is useless: a value a program
# will parse (a date, a number, a JSON object), or a choice among fixed labels. There it costs nothing to
# check afterwards, because the output cannot fail the check, and it never wastes a generation on a
# near-miss.
#
# But chapter 10 measured what it costs: when the shape is alien to the model, the mask overrules it at almost
# every step (its Steps 5 and 9 print how little of its mass the Shakespeare model put on digits, and on the
# JSON object's tokens at the median step). The output then has the right form and content the model did not
# believe in: the names in its JSON are whatever letters the mask let through, real words and invented ones
# alike. Letting it write freely and checking afterwards keeps the content the model's own; if the check
# fails, you learn that the model cannot do the task, which a constraint hides.
#
# So I would check afterwards when the shape is loose (free text with a length limit), when a failure is
# informative (evaluating a model), or when the constraint would cut through tokens the model naturally uses
# (a pattern that forbids the leading space of GPT-2's words forces odd tokenisations, and a prompt that
# stops where the corpus never puts a token boundary changes every answer: chapter 10, Steps 2 and 3). And I
# would often combine both: a constraint for the skeleton (the keys, the punctuation) and free generation,
# checked afterwards, inside the values.
#
# #### Rubric (1 point)
#
# - **1 point**: names when to check afterwards rather than constrain (a loose shape, a failure that is informative, a pattern that cuts through the model's usual tokens) and when to constrain, and supports it with a number or a measurement from this notebook or chapter 10 (how little mass the model put on the allowed tokens in Steps 5 and 9, or the changed answers of Steps 2 and 3).
# - **½ point**: a sensible choice between the two, but with no reason drawn from what the notebooks showed, or only one side (when to constrain, or when not to).
# - **0 points**: no choice made, or "always constrain" / "never constrain" without a reason.
