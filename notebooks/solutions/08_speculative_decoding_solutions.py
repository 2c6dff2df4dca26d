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
# # Chapter 8 exercises — speculative decoding (solutions)
#
# Three exercises on [chapter 8](../08_speculative_decoding.ipynb): verifying a round of drafts greedily,
# then the two pieces of speculative sampling: the chance of keeping a draft token and what to draw after a
# rejection. Each exercise asks for one function; the cell after it checks your function on hidden cases
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
from minigpt.exercises.speculative import (
    check_accept_probability,
    check_residual_distribution,
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

# %% nbgrader={"grade": false, "grade_id": "verify_greedy", "locked": false, "schema_version": 3, "solution": true, "task": false}
def verify_greedy(drafts: list[int], target_logits: torch.Tensor) -> list[int]:
    """The drafts the target agrees with, then one token of the target's own."""
    ### BEGIN SOLUTION
    best = target_logits.argmax(dim=-1).tolist()  # (m + 1,) the target's choice at each position
    kept = 0
    while kept < len(drafts) and drafts[kept] == best[kept]:  # stop at the first miss: later drafts
        kept += 1  # were drafted after a wrong token, so they are dropped even if they match
    # the target's token at the first miss replaces it; after m hits it is a bonus token
    return drafts[:kept] + [best[kept]]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_verify_greedy", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
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

# %% nbgrader={"grade": false, "grade_id": "accept_probability", "locked": false, "schema_version": 3, "solution": true, "task": false}
def accept_probability(p_x: float, q_x: float) -> float:
    """How likely the target keeps a drafted token: min(1, p / q)."""
    ### BEGIN SOLUTION
    # the draft proposed x too often when q_x > p_x: keep it only in that share of cases; when the target
    # likes x at least as much as the draft, always keep it (a probability cannot exceed 1)
    return min(1.0, p_x / q_x)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_accept_probability", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
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

# %% nbgrader={"grade": false, "grade_id": "residual_distribution", "locked": false, "schema_version": 3, "solution": true, "task": false}
def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The target's leftover probability, max(p - q, 0), normalised."""
    ### BEGIN SOLUTION
    leftover = (p - q).clamp(min=0)  # where the draft over-proposed, p - q < 0: nothing is left there
    total = leftover.sum()
    if total == 0:  # p == q: a rejection never happens, and p is the right distribution anyway
        return p
    return leftover / total  # so the draw is from a distribution that sums to 1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_residual_distribution", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_residual_distribution(residual_distribution)

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

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# The draft has two jobs that pull against each other: it must agree with the target often, and it must cost
# much less. Agreement has a number. The share of the draft's proposals the target keeps is the sum over
# tokens of q · min(1, p / q), which is the sum of min(p, q): the probability the two distributions share,
# 0.700 in the prediction above, and 1 for a draft identical to the target. A good draft is a small model
# trained on the same data, with the same tokenizer (its tokens must be the target's tokens), as
# `shakespeare-draft` (1.6M parameters) is for `shakespeare` (12.4M); a model distilled from the target agrees
# better still. Where the output copies the prompt (summaries, code edits), no model is needed at all: prompt
# lookup (`minigpt.speculative.prompt_lookup_generate`) drafts by copying what followed the same words
# earlier.
#
# The right k depends on the acceptance, because every draft token after the first miss is wasted. The numbers
# above show it: as k went from 1 to 8 the acceptance fell from 0.77 to 0.31, and the target passes for 40
# tokens went from 23 to 12 and then stopped falling (12 from k = 5 on), while the draft did more and more
# useless work. If each guess were kept independently with probability a, one round would yield
# `(1 - a**(k + 1)) / (1 - a)` tokens on average; with a = 0.7 that is 1.7 at k = 1, 2.8 at k = 4 and 3.2 at
# k = 8, so each extra guess gains less. I would time k = 1 … 8 on real prompts, several times each and in
# turns (chapter 8 names a fastest k only when its timings are clear of the others'), count target passes and
# wall-clock time, and take the smallest k at the knee of the curve: past it, a longer draft only adds draft
# work.
#
# It does not pay off when the target's pass is not dominated by reading its weights. Scoring k + 1 tokens
# costs about one pass only while the model is memory-bound, as at batch 1 on a GPU; with a big batch the
# target is already compute-bound, and verifying k extra tokens per row costs nearly k times more. It also
# loses when the draft is not much cheaper than the target (on a CPU, per-pass overhead shrinks the gap
# between 1.6M and 12.4M parameters), when acceptance is low (text unlike the draft's training data, or a high
# sampling temperature that spreads p and q apart), and for short outputs, with few rounds to save.
