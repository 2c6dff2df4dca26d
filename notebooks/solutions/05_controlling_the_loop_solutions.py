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
# # Chapter 5 exercises — controlling the loop (solutions)
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

# %% nbgrader={"grade": false, "grade_id": "apply_repetition_penalty", "locked": false, "schema_version": 3, "solution": true, "task": false}
def apply_repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalise every token of each row's context, once: positive logits / penalty, negative ones * penalty."""
    ### BEGIN SOLUTION
    out = logits.clone()  # the caller's logits stay as they were
    for row, context in enumerate(input_ids.tolist()):
        for token in set(context):  # a set: a token seen three times is penalised once
            logit = out[row, token]
            # dividing a negative logit would move it towards 0, making the token MORE likely
            out[row, token] = logit * penalty if logit < 0 else logit / penalty
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_apply_repetition_penalty", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_apply_repetition_penalty(apply_repetition_penalty)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_apply_repetition_penalty, apply_repetition_penalty)
### END HIDDEN TESTS

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

# %% nbgrader={"grade": false, "grade_id": "banned_ngram_tokens", "locked": false, "schema_version": 3, "solution": true, "task": false}
def banned_ngram_tokens(ids: list[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram already in ``ids``."""
    ### BEGIN SOLUTION
    prefix = ids[len(ids) - n + 1 :]  # the last n - 1 tokens; empty when n == 1, so every token matches
    banned = set()
    for start in range(len(ids) - n + 1):  # every complete n-gram, the one ending at the last token included
        if ids[start : start + n - 1] == prefix:
            banned.add(ids[start + n - 1])  # the token that completed the n-gram last time
    return banned
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_banned_ngram_tokens", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_banned_ngram_tokens(banned_ngram_tokens)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_banned_ngram_tokens, banned_ngram_tokens)
### END HIDDEN TESTS

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

# %% nbgrader={"grade": false, "grade_id": "cut_at_stop", "locked": false, "schema_version": 3, "solution": true, "task": false}
def cut_at_stop(text: str, stop_strings: list[str]) -> str:
    """``text`` cut just before the first stop string it contains."""
    ### BEGIN SOLUTION
    starts = [text.find(stop) for stop in stop_strings if stop in text]  # where each present one begins
    return text[: min(starts)] if starts else text  # the earliest in the text wins, not the first listed
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_cut_at_stop", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_cut_at_stop(cut_at_stop)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_cut_at_stop, cut_at_stop)
### END HIDDEN TESTS

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

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# For a story: a mild repetition penalty, or a no-repeat n-gram rule with n of three or four, together with
# sampling. Chapter 5 showed the problem they solve: greedy decoding after "ROMEO:" repeated "And I am a man,
# and a man," line after line; a mild repetition penalty gave a text of many more distinct tokens, and the
# trigram rule broke the loop as well. The risk in a story is that the characters' names and "the" are pushed
# down every time they recur, so the model drifts to odd substitutes. A strong penalty changes the ranking
# outright, as the prediction showed: at 1.5 "forward" fell from 6.750 to 4.500, just below "closer" (4.510),
# only because it had been said before. The penalty also moves probabilities in ways that are easy to
# misjudge: the logit of "pizza" went down (−1.890 to −2.835), yet its probability more than doubled (0.000101
# to 0.000225), because "forward" and "toward", which held 0.930 of the probability, lost far more. And its
# sign test matters: divided like the others, "pizza" would have become about ten times more likely
# (0.00109), a reward, not a penalty.
#
# For a summary of a document in the prompt I would use neither, or only gently. The context includes the
# prompt, so the penalty pushes down every name and term of the document, the very words a faithful summary
# must copy. The n-gram rule, for the same reason, forbids copying any n consecutive tokens of the document: a
# trigram ban would not let the summary say "the Duke of York" if the document did. (Summarisation models that
# ship with `no_repeat_ngram_size=3` are encoder-decoders, whose decoder does not see the document as its own
# context.) If the summary repeats itself, a large n (say, eight) blocks long repeats while still allowing
# short quotations; a stop string or `max_new_tokens` keeps it short.
#
# For code: neither. Code repeats itself legitimately: `self.`, the same variable on every line, a second
# `for i in range(`. The penalty would push the model to rename things, and the n-gram ban forbids the repeat
# outright (its logit is −∞; there are no degrees). Code wants a low temperature or greedy decoding, stop
# strings that end the snippet (`"\ndef "`, a closing fence), and, if it stops too early, `min_new_tokens`.
#
# #### Rubric (1 point)
#
# - **1 point**: makes a choice for each of the story, the summary and the code, and names what could go wrong with each (for instance that the penalty also pushes down the prompt's names and terms, which a summary must copy, and that code repeats itself legitimately); supports at least one claim with a number from this notebook or chapter 5 (such as "forward" falling from 6.750 to 4.500, below "closer", only because it was said before, or the greedy loop after "ROMEO:" that a penalty or the trigram rule broke).
# - **½ point**: sensible choices for some of the three uses, or choices for all three with no risk named and nothing from the notebook or the chapter to support them.
# - **0 points**: no choice made, or reasoning that contradicts what the notebook showed (that the penalty only touches generated tokens, or that a penalised token always becomes less likely).
