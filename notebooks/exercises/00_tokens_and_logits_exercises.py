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
# # Chapter 0 exercises — tokens and logits
#
# Two exercises on [chapter 0](../00_tokens_and_logits.ipynb): the next-token logits of a batch, read at the
# last position of the model's (B, T, V) output, then the log-probability the model gives a continuation,
# where each position's logits score the token after it. Each exercise asks for one function; the cell after it
# checks your function on hidden cases against minigpt's own and, when one fails, shows that input with
# the expected and the actual answer. The checks run on a small random GPT with a small vocabulary, so that a
# row of logits fits on a line.
# In the [exercise notebook](../exercises/00_tokens_and_logits_exercises.ipynb) each function is a stub for you
# to fill in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/00_tokens_and_logits_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

import minigpt
from minigpt.exercises.tokens_and_logits import check_continuation_log_prob, check_next_token_logits
from minigpt.tokenizer import decode, encode

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# The next cell feeds the chapter's model one prompt, *"ROMEO:\nBut soft, what light"*, then the same prompt
# with its last token swapped, " light" for " dark", and compares the logits of the two runs position by
# position.
#
# Before you run the next cell, write down your answers:
#
# 1. The prompt is a batch of one row of 9 tokens, and the vocabulary has 50,257 entries. What shape are the
#    logits?
# 2. Only the last token differs between the two runs. Which positions get different logits: all 9, only the
#    last, or none?
# 3. Which position's logits does generation read to choose the next token, and does the swap change them?

# %%
model = minigpt.load_model("shakespeare")
light = torch.tensor([encode("ROMEO:\nBut soft, what light")])  # (B, T) = (1, 9)
dark = light.clone()
dark[0, -1] = encode(" dark")[0]  # the same prompt but for its last token
with torch.no_grad():
    logits_light, logits_dark = model(light), model(dark)  # (1, 9, 50257) each
print("tokens:", [decode([i]) for i in light[0].tolist()])
print("ids", tuple(light.shape), "-> logits", tuple(logits_light.shape))
# 1e-4: far above float rounding (chapter 9), far below the change a different token makes
changed = (logits_light - logits_dark)[0].abs().amax(dim=-1) > 1e-4  # (T,): which positions' logits moved
print("positions whose logits changed:", changed.nonzero().flatten().tolist(), "of", light.size(1))
for name, logits in (("light", logits_light), ("dark", logits_dark)):
    best = logits[0, -1].argmax().item()  # the last position scores the next token
    print(f"after ' {name}', the most likely next token: {decode([best])!r}")


# %% [markdown]
# ## Exercise 1: the logits of the next token
#
# Write `next_token_logits(model, ids)`: for a (B, T) batch of prompts, the (B, V) logits the model gives the
# token that comes after each prompt. The model returns (B, T, V) logits, one row of V scores per position of
# each prompt, and the row at position t scores the token at t + 1: the next token after the whole prompt is
# scored at the last position.
#
# *Hints:* `model(ids)` returns the (B, T, V) logits. Index the positions (dimension 1) for every row of the
# batch at once; `-1` is the last. Compute them under `with torch.no_grad():`, as generation does.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "07ecd9b225982caece12b5c191d6291f", "grade": false, "grade_id": "next_token_logits", "locked": false, "schema_version": 3, "solution": true, "task": false}
def next_token_logits(model: minigpt.GPT, ids: torch.Tensor) -> torch.Tensor:
    """The (B, V) logits of the token after each row of the (B, T) ``ids``: the model's last position."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "64f9c775f12362b230c7eeda377c2da1", "grade": true, "grade_id": "check_next_token_logits", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_next_token_logits(next_token_logits)


# %% [markdown]
# ## Exercise 2: the log-probability of a continuation
#
# Write `continuation_log_prob(model, ids, continuation)`: how likely the model finds that the (B, N)
# `continuation` follows the (B, T) prompts `ids`, as one log-probability per row, a (B,) tensor. The
# probability of N tokens is the product of each one's probability given everything before it, so its
# logarithm is the sum of their log-probabilities:
#
# $$\log P(c_1 \dots c_N \mid \text{prompt}) = \sum_{n=1}^{N} \log P(c_n \mid \text{prompt}, c_1 \dots c_{n-1}).$$
#
# One forward pass over the prompt and the continuation together gives all N terms: the logits at position t
# score the token at t + 1, so the first continuation token is scored at the prompt's last position, and the
# last one at the position before it.
#
# *Hints:* `torch.cat([ids, continuation], dim=1)` joins them into a (B, T + N) batch.
# `torch.log_softmax(x, dim=-1)` turns logits into log-probabilities; `log_probs.gather(-1, index)` picks, in
# each row, the entries at `index` (which needs as many dimensions as `log_probs`: `continuation.unsqueeze(-1)`).

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "7b8a8ae9a31dd149ccf343fb0dd65992", "grade": false, "grade_id": "continuation_log_prob", "locked": false, "schema_version": 3, "solution": true, "task": false}
def continuation_log_prob(model: minigpt.GPT, ids: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """The (B,) log-probabilities log P(continuation | ids), for (B, T) ``ids`` and a (B, N) ``continuation``."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "ac5787080106da16b29b30d64ec235c1", "grade": true, "grade_id": "check_continuation_log_prob", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_continuation_log_prob(continuation_log_prob)

# %% [markdown]
# ## To think about: an open question
#
# The model computed logits for all 9 positions of the prompt, and generation read only the last one. Is the
# work the model did for the other positions wasted? When is it needed, and when could a generator skip it?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 0](../00_tokens_and_logits.ipynb) showed. The
# [solutions notebook](../solutions/00_tokens_and_logits_solutions.ipynb) ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
