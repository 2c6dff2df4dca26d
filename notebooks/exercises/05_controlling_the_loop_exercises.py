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
# # Chapter 5 exercises — controlling the loop
#
# Three exercises on [chapter 5](../05_controlling_the_loop.ipynb): the repetition penalty, the tokens a
# no-repeat n-gram rule bans, and cutting a text at its first stop string. Each exercise asks for one
# function; the cell after it checks your function on hidden cases against minigpt's own and, when one
# fails, shows that input with the expected and the actual answer.
# In the [exercise notebook](../exercises/05_controlling_the_loop_exercises.ipynb) each function is a stub
# for you to fill in (replace `raise NotImplementedError` with your code); the [solutions
# notebook](../solutions/05_controlling_the_loop_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.loop import check_apply_repetition_penalty, check_banned_ngram_tokens, check_cut_at_stop

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# The toy logits after *"every effort moves you"*: closer 4.51, every 0.89, effort −1.90, forward 6.75, inches
# 1.63, moves −1.62, pizza −1.89, toward 6.28, you 1.79. Without a penalty greedy picks "forward". Now suppose
# "forward", "toward" and "pizza" are already in the text, and the repetition penalty is 1.5.
#
# Before you run the next cell, write down your answers:
#
# 1. Which word does greedy pick now?
# 1. The logit of "pizza" is negative (−1.89). Does the penalty make it higher or lower? And the probability
#    of "pizza": higher or lower than before?
# 1. If the penalty simply divided every seen logit by 1.5, negative ones too, what would happen to "pizza"?

# %%
from minigpt.logits import repetition_penalty

vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])  # (1, 9)
seen = torch.tensor([[3, 7, 6]])  # (1, 3): "forward", "toward" and "pizza" are already in the text
divided = logits.clone()
divided[0, seen[0]] /= 1.5  # the rule without its sign test
for name, z in (("no penalty", logits), ("penalty 1.5", repetition_penalty(logits, seen, 1.5)),
                ("divide all", divided)):
    p_pizza = torch.softmax(z, dim=-1)[0, 6]
    # the logits are one division or product each, exact on every CPU; P(pizza) is small: 3 significant digits
    print(f"{name:11}  greedy picks {vocab[z.argmax()]!r:9} forward {z[0, 3]:.3f}, toward {z[0, 7]:.3f}, "
          f"closer {z[0, 0]:.3f}, pizza {z[0, 6]:.3f} (P = {p_pizza:.3g})")
held = torch.softmax(logits, dim=-1)[0, [3, 7]].sum()  # what "forward" and "toward" hold without a penalty
print(f"without a penalty, 'forward' and 'toward' hold {held:.3f} of the probability")


# %% [markdown]
# ## Exercise 1: the repetition penalty
#
# Write `apply_repetition_penalty(logits, input_ids, penalty)`. `logits` is a (B, V) batch of next-token
# scores and `input_ids` the (B, T) context of each row, prompt included. Every token in a row's context
# gets its logit pushed towards "less likely": divided by `penalty` when positive, multiplied by it when
# negative. A token seen several times is penalised once. Return a new tensor; leave `logits` unchanged.
#
# Example: logits `[[2.0, -1.0, 0.5]]`, context `[[0, 1, 0]]` and penalty `2.0` give `[[1.0, -2.0, 0.5]]`.
#
# *Hint:* start from `logits.clone()`, loop over the rows and over `set(...)` of each row's ids.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "20ac0e3709c1e82f620ab27f3cd4b4de", "grade": false, "grade_id": "apply_repetition_penalty", "locked": false, "schema_version": 3, "solution": true, "task": false}
def apply_repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalise every token of each row's context, once: positive logits / penalty, negative ones * penalty."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "b054acfde788d484810853da16ed1124", "grade": true, "grade_id": "check_apply_repetition_penalty", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_apply_repetition_penalty(apply_repetition_penalty)


# %% [markdown]
# ## Exercise 2: the tokens a no-repeat n-gram rule bans
#
# Write `banned_ngram_tokens(ids, n)`. `ids` is a list of token ids. The last n − 1 ids are the *prefix*;
# every token that followed the same prefix earlier in `ids` would repeat an n-gram, so it is banned.
# Return the banned tokens as a set.
#
# Example: `banned_ngram_tokens([1, 2, 3, 1, 2], 3)` is `{3}`: the prefix `[1, 2]` was followed by `3`.
#
# *Hint:* look at every window `ids[i : i + n - 1]`, for each `i` whose window has a token after it. Check
# n = 1 (an empty prefix) and a sequence shorter than n.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "18d5b230e1c6ffd30ff2edb6397afcac", "grade": false, "grade_id": "banned_ngram_tokens", "locked": false, "schema_version": 3, "solution": true, "task": false}
def banned_ngram_tokens(ids: list[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram already in ``ids``."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "0788c0e5201d75c3eadf6a4e489eac62", "grade": true, "grade_id": "check_banned_ngram_tokens", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_banned_ngram_tokens(banned_ngram_tokens)


# %% [markdown]
# ## Exercise 3: cut at a stop string
#
# Write `cut_at_stop(text, stop_strings)`: return `text` up to, not including, the earliest place where
# any of the `stop_strings` begins, or all of `text` when none occurs. The stop string that comes first
# *in the text* wins, whatever its place in the list.
#
# Example: `cut_at_stop("Fair is foul. And foul is fair\n", ["\n", "."])` is `"Fair is foul"`.
#
# *Hint:* `text.find(s)` gives where `s` begins, or −1.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "44567d014712e8eccc28b01e1c595234", "grade": false, "grade_id": "cut_at_stop", "locked": false, "schema_version": 3, "solution": true, "task": false}
def cut_at_stop(text: str, stop_strings: list[str]) -> str:
    """``text`` cut just before the first stop string it contains."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "a4ca8478bafb108534574dbd46fc3f72", "grade": true, "grade_id": "check_cut_at_stop", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_cut_at_stop(cut_at_stop)

# %% [markdown]
# ## To think about: an open question
#
# The repetition penalty pushes down every token already in the context, the prompt's included, names and
# commas too; the no-repeat n-gram rule forbids only exact repeats of n tokens. Which would you use, if any,
# for a story, for a summary of a document given in the prompt, and for code? What could go wrong with each?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 5](../05_controlling_the_loop.ipynb) showed. The
# [solutions notebook](../solutions/05_controlling_the_loop_solutions.ipynb) ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
