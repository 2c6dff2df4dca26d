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
# # Chapter 8 exercises — speculative decoding
#
# Four exercises on [chapter 8](../08_speculative_decoding.ipynb): verifying a round of drafts greedily,
# the two pieces of speculative sampling (the chance of keeping a draft token and what to draw after a
# rejection), then the whole speculative sampling loop. Each exercise asks for one function; the cell after it checks your function on hidden cases
# against minigpt's own and, when one fails, shows that input with the expected and the actual answer.
# In the [exercise notebook](../exercises/08_speculative_decoding_exercises.ipynb) each function is a stub
# for you to fill in (replace `raise NotImplementedError` with your code); the [solutions
# notebook](../solutions/08_speculative_decoding_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

import minigpt
from minigpt.exercises.models import toy_model
from minigpt.exercises.speculative import (
    check_accept_probability,
    check_residual_distribution,
    check_speculative_sample,
    check_verify_greedy,
)
from minigpt.speculative import speculative_generate

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# Chapter 8's three-token example: the target gives tokens 0, 1 and 2 the probabilities p = (0.5, 0.3, 0.2),
# the draft q = (0.2, 0.6, 0.2). The draft proposes a token drawn from q, and the target keeps it with
# probability min(1, p / q).
#
# Before you run the next cell, write down your answers:
#
# 1. When the draft proposes token 1, how often does the target keep it?
# 2. When it proposes token 0?
# 3. Over all the draft's proposals, what share does the target keep?
# 4. After a rejection the target draws from the probability it has and the draft lacks. Which tokens can that
#    be?

# %%
p = torch.tensor([0.5, 0.3, 0.2])  # the target's next-token probabilities
q = torch.tensor([0.2, 0.6, 0.2])  # the draft's
keep = torch.clamp(p / q, max=1.0)  # min(1, p / q) for each token
for x in range(3):
    print(f"token {x}: draft {q[x]:.1f}, target {p[x]:.1f}, kept with probability {keep[x]:.3f}")
print(f"share of the draft's proposals kept: {(q * keep).sum():.3f}")
leftover = torch.clamp(p - q, min=0)
print("after a rejection, draw from:", [round(x, 3) for x in (leftover / leftover.sum()).tolist()])


# %% [markdown]
# ## Exercise 1: verify a round of drafts, greedily
#
# Write `verify_greedy(drafts, target_logits)`. `drafts` are the m tokens the draft model proposed, and
# `target_logits` (m + 1, V) are the target's logits from its one pass: row i scores the token at draft
# position i, the last row the token after all drafts. Keep drafts while each is the target's argmax; at
# the first miss, or after the last draft, add the target's own argmax. Return the kept tokens as a list.
#
# Example: drafts `[3, 1, 2]` where the target's argmaxes are `[3, 4, 2, 0]` give `[3, 4]`: `3` is kept, `1`
# is replaced by `4`, and `2` is dropped (it was drafted after a wrong token).
#
# *Hint:* every round yields at least one token and at most m + 1.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "247d907a330eed89a8e177da84567223", "grade": false, "grade_id": "verify_greedy", "locked": false, "schema_version": 3, "solution": true, "task": false}
def verify_greedy(drafts: list[int], target_logits: torch.Tensor) -> list[int]:
    """The drafts the target agrees with, then one token of the target's own."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "725f365563b1e2b7c6a7989171fe47fa", "grade": true, "grade_id": "check_verify_greedy", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_verify_greedy(verify_greedy)


# %% [markdown]
# ## Exercise 2: the probability of keeping a draft token
#
# Write `accept_probability(p_x, q_x)`: the draft drew token x with probability `q_x` (so `q_x` > 0), the
# target gives it `p_x`. Speculative sampling keeps x with probability min(1, p_x / q_x). Return a float.
#
# Example: `accept_probability(0.2, 0.5)` is `0.4`, `accept_probability(0.6, 0.3)` is `1.0`.
#
# *Hint:* which of the two may the draft over-propose?

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "0aef56c6266c6cf89c2434666799beb2", "grade": false, "grade_id": "accept_probability", "locked": false, "schema_version": 3, "solution": true, "task": false}
def accept_probability(p_x: float, q_x: float) -> float:
    """How likely the target keeps a drafted token: min(1, p / q)."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "eadecffeb03d6618f04275611c93525a", "grade": true, "grade_id": "check_accept_probability", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_accept_probability(accept_probability)


# %% [markdown]
# ## Exercise 3: what to draw after a rejection
#
# Write `residual_distribution(p, q)`. `p` and `q` are (V,) probabilities, the target's and the draft's.
# Return max(p − q, 0), the probability the target has and the draft lacks, divided by its sum so it adds
# up to 1. When nothing is left over (p equals q), return `p`.
#
# Example: `p = [0.4, 0.4, 0.1, 0.1]`, `q = [0.1, 0.2, 0.3, 0.4]` give `[0.6, 0.4, 0.0, 0.0]`.
#
# *Hint:* `tensor.clamp(min=0)`.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "324e3efb48b4bc8aebe959f607bbf448", "grade": false, "grade_id": "residual_distribution", "locked": false, "schema_version": 3, "solution": true, "task": false}
def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The target's leftover probability, max(p - q, 0), normalised."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "358c7b19b563d6d8c1ea1b44b40e5544", "grade": true, "grade_id": "check_residual_distribution", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_residual_distribution(residual_distribution)

# %% [markdown]
# ## Exercise 4: the speculative sampling loop
#
# Put exercises 2 and 3 to work. Write `speculative_sample(target, draft, prompt_ids, max_new_tokens, k,
# generator)`: continue the (1, T) `prompt_ids` by speculative sampling until `max_new_tokens` new tokens, and
# return the (1, T + max_new_tokens) ids. Each round:
#
# 1. draft m = min(k, tokens still to make − 1) tokens with the draft model, one at a time: q_i is the softmax
#    of the draft's last logits, and x_i = `torch.multinomial(q_i, 1, generator=generator)` (the − 1: a round
#    can add one token more than it drafts);
# 1. run the target once over the sequence and the m drafts; the softmax of its last m + 1 positions is p
#    (m + 1, V): row i scores draft i, the last row the token after all of them;
# 1. for each draft in turn, draw u = `torch.rand((), generator=generator)` and keep x_i when
#    u · q_i(x_i) < p_i(x_i), which happens with probability min(1, p/q); at the first rejection draw a
#    replacement from max(p_i − q_i, 0) (your `residual_distribution`) with `torch.multinomial` and end the round;
# 1. when all m drafts were kept, draw a bonus token from the last row of p.
#
# The check counts the first new token of many runs and tests, as chapter 8's Step 9 does, that it follows the
# target's p (Pearson's chi-square, on two tiny models); then it compares single runs with
# `minigpt.speculative.speculative_generate(..., do_sample=True, generator=...)` token for token, so draw
# every random number from `generator`, in the order above. No cache is needed: the toy models are small.

# %% [markdown]
# ### Predict, then run
#
# Before you run the next cell, write down your answer:
#
# 1. With a draft that is the target itself, `k=4` and 12 new tokens, what share of the drafts does the target
#    keep, and how many target passes does it take?
# 1. With a draft that is another random model, does the share go up or down, and the passes?

# %%
toy_target, toy_other = toy_model(seed=7), toy_model(seed=8)  # the check's small random GPTs, 64 tokens
toy_prompt = torch.tensor([[1, 2, 3, 4]])
for name, toy_draft in (("the target itself", toy_target), ("another random model", toy_other)):
    r = speculative_generate(toy_target, toy_draft, toy_prompt, k=4, max_new_tokens=12, do_sample=True, seed=0)
    print(f"draft = {name}: {r.num_accepted} of {r.num_proposed} drafts kept ({r.acceptance_rate:.2f}), "
          f"{r.num_target_passes} target passes for 12 tokens")

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "eae9db33cfafcedd44353abd8f52ce9c", "grade": false, "grade_id": "speculative_sample", "locked": false, "schema_version": 3, "solution": true, "task": false}
def speculative_sample(
    target: torch.nn.Module, draft: torch.nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int, k: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Speculative sampling: the draft proposes, the target keeps what it would have drawn itself."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "b868f8f0112cdc49b657b0cb5d2c369c", "grade": true, "grade_id": "check_speculative_sample", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_speculative_sample(speculative_sample)

# %% [markdown]
# ### To think about: two checks of one sampler
#
# The check ran two tests: the chi-square test on the first token of many runs, and token-for-token equality
# with the library on single runs. Which would still pass if you drew the random numbers in another order, and
# what does each one tell you that the other cannot?
#
# There is no single right answer: write yours in a few sentences, from what this exercise and
# [chapter 8](../08_speculative_decoding.ipynb) showed.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "537d403c35673d5337ab0e40af467f87", "grade": true, "grade_id": "open_question_speculative_sample", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE

# %% [markdown]
# ## Numbers to think with
#
# The open question below can lean on measurements: chapter 8's two models on its prompt, decoding 40 tokens
# greedily with each draft length k, and what the formula of chapter 8's Step 5, (1 − a^(k+1)) / (1 − a),
# expects per target pass from a draft whose guesses are each kept with probability a.

# %%
target, draft = minigpt.load_model("shakespeare"), minigpt.load_model("shakespeare-draft")
print(f"target {target.num_parameters() / 1e6:.1f}M parameters, draft {draft.num_parameters() / 1e6:.1f}M")
print("k  acceptance  target passes for 40 tokens")
for k in range(1, 9):
    r = speculative_generate(target, draft, "ROMEO:\nI", k=k, max_new_tokens=40)
    print(f"{k}  {r.acceptance_rate:10.2f}  {r.num_target_passes:27d}")
a = 0.7
print(f"a = {a}: " + ", ".join(f"{(1 - a ** (k + 1)) / (1 - a):.1f} tokens per pass at k = {k}" for k in (1, 4, 8)))

# %% [markdown]
# ## To think about: an open question
#
# You have a target model and want to speed it up with speculative decoding. How would you choose the draft
# model and the draft length k? When does speculative decoding not pay off?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 8](../08_speculative_decoding.ipynb) showed. The
# [solutions notebook](../solutions/08_speculative_decoding_solutions.ipynb) ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
