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
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_verify_greedy, verify_greedy)
### END HIDDEN TESTS

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
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_accept_probability, accept_probability)
### END HIDDEN TESTS

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
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_residual_distribution, residual_distribution)
### END HIDDEN TESTS

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

# %% nbgrader={"grade": false, "grade_id": "speculative_sample", "locked": false, "schema_version": 3, "solution": true, "task": false}
def speculative_sample(
    target: torch.nn.Module, draft: torch.nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int, k: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Speculative sampling: the draft proposes, the target keeps what it would have drawn itself."""
    ### BEGIN SOLUTION
    ids, prompt_length = prompt_ids, prompt_ids.size(1)
    while ids.size(1) - prompt_length < max_new_tokens:
        left = max_new_tokens - (ids.size(1) - prompt_length)  # new tokens still to make
        drafts, q, seq = [], [], ids
        with torch.no_grad():
            for _ in range(min(k, left - 1)):  # a round yields up to one token more than it drafts
                q_i = draft(seq)[0, -1].softmax(dim=-1)  # (V,) the draft's distribution
                x = torch.multinomial(q_i, 1, generator=generator).item()
                drafts.append(x)
                q.append(q_i)
                seq = torch.cat([seq, torch.tensor([[x]])], dim=1)
            p = target(seq)[0, -(len(drafts) + 1) :].softmax(dim=-1)  # (m + 1, V): one pass scores every draft
        kept = []
        for i, x in enumerate(drafts):
            if torch.rand((), generator=generator) * q[i][x] < p[i, x]:  # kept with probability min(1, p/q)
                kept.append(x)
                continue
            kept.append(torch.multinomial(residual_distribution(p[i], q[i]), 1, generator=generator).item())
            break  # the later drafts followed a rejected token: drop them
        else:  # every draft kept: the target's last row gives one more token for free
            kept.append(torch.multinomial(p[-1], 1, generator=generator).item())
        ids = torch.cat([ids, torch.tensor([kept])], dim=1)
    return ids
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_speculative_sample", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_speculative_sample(speculative_sample)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_speculative_sample, speculative_sample)
### END HIDDEN TESTS

# %% [markdown]
# ### To think about: two checks of one sampler
#
# The check ran two tests: the chi-square test on the first token of many runs, and token-for-token equality
# with the library on single runs. Which would still pass if you drew the random numbers in another order, and
# what does each one tell you that the other cannot?
#
# There is no single right answer: write yours in a few sentences, from what this exercise and
# [chapter 8](../08_speculative_decoding.ipynb) showed.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question_speculative_sample", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# #### Worked answer
#
# The chi-square test would still pass: it looks only at what comes out, how often each token comes first
# over many runs, and drawing the same random numbers in another order changes which token a given run gives,
# not how often each token comes. Token equality would fail, since it holds only when every draw takes the same
# number from the generator that the library's draw takes.
#
# So they answer different questions. The chi-square test checks the algorithm: that keeping a draft with
# probability min(1, p/q) and drawing from the residual after a rejection make the output follow the target,
# whatever the draft. It is the test that would accept a correct sampler written in another way, and it is the
# one chapter 8 runs on the library itself. But it sees only what a few hundred runs can show at one step: a bug
# that moves the distribution a little passes it, and a bug that leaves the distribution right passes it
# always. Forgetting the bonus token is such a bug: every token still follows p, the round just wastes the
# target's last row. Token equality catches any difference on every run, however small its effect on the
# distribution, but it ties the solution to one order of draws. The prediction shows what neither test looks
# at, the speed: with the target as its own draft, 9 of 9 drafts were kept and 12 tokens took 3 target passes;
# with another random model as the draft, 1 of 34 was kept and they took 11. The output is the target's either
# way.
#
# #### Rubric (1 point)
#
# - **1 point**: says that the chi-square test passes with another order of draws and token equality fails, and what each one sees: the distribution (the algorithm is right, however it is written) against every single draw (bugs too small to show in a few hundred runs, or that leave the distribution right, such as a forgotten bonus token); supports it with a number from this notebook (the kept drafts or target passes of the prediction) or chapter 8.
# - **½ point**: one of the two tests explained correctly, or both without an example.
# - **0 points**: says that the two tests check the same thing, or that equal tokens on a few seeds prove the distribution.

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
#
# #### Rubric (1 point)
#
# - **1 point**: says what makes a good draft (it agrees with the target, sharing its tokenizer and data, and costs much less) and how to choose k (the acceptance falls as k grows: measure, and stop where the target passes stop falling), and names when it does not pay off (a compute-bound target, a large batch, a draft not much cheaper, a low acceptance), with a number from the notebook (the acceptance falling from 0.77 to 0.31, the passes from 23 to 12, or the 0.700 the prediction's p and q share).
# - **½ point**: the draft or k chosen with reasons but no number, or no case where it does not pay off.
# - **0 points**: "the larger k the faster", or no reasoning.
