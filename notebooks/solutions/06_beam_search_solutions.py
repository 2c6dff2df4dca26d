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
# # Chapter 6 exercises — beam search (solutions)
#
# Three exercises on [chapter 6](../06_beam_search.ipynb): the length-penalised score of a finished
# hypothesis, one step of beam search, then the whole search by hand. Each exercise asks for one function;
# the cell after it checks your function on hidden cases against minigpt's own and, when one fails, shows
# that input with the expected and the actual answer.
# In the [exercise notebook](../exercises/06_beam_search_exercises.ipynb) each function is a stub for you to
# fill in (replace `raise NotImplementedError` with your code); the [solutions
# notebook](../solutions/06_beam_search_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.beam_search import check_beam_score, check_beam_search_by_hand, check_beam_step

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# A two-step toy tree like chapter 6's. After "The": cat 0.45, dog 0.35, sun 0.2. After "The cat": sat 0.4,
# ran 0.35, slept 0.25. After "The dog": barked 0.5, ran 0.3, sat 0.2. After "The sun": rose 0.95, set 0.05.
#
# Before you run the next cell, write down your answers:
#
# 1. Which sentence does greedy decoding (one beam) find, and with what probability?
# 1. Does beam search with two beams find a more probable one?
# 1. With three beams?

# %%
import math

tree = {
    "cat": (0.45, {"sat": (0.4, {}), "ran": (0.35, {}), "slept": (0.25, {})}),
    "dog": (0.35, {"barked": (0.5, {}), "ran": (0.3, {}), "sat": (0.2, {})}),
    "sun": (0.2, {"rose": (0.95, {}), "set": (0.05, {})}),
}


def toy_beam_search(tree, num_beams):  # chapter 6's, step 1
    beams = [([], 0.0, tree)]  # (words so far, sum of log-probs, subtree)
    while any(sub for _, _, sub in beams):
        candidates = [(words + [w], score + math.log(p), children)
                      for words, score, sub in beams for w, (p, children) in sub.items()]
        beams = sorted(candidates, key=lambda c: c[1], reverse=True)[:num_beams]  # keep the best few
        print("  kept:", ", ".join(f"{' '.join(w)} {math.exp(s):.3f}" for w, s, _ in beams))
    return beams[0][0], math.exp(beams[0][1])


for k in (1, 2, 3):
    print(f"num_beams = {k}")
    words, p = toy_beam_search(tree, k)
    print(f"  best: The {' '.join(words)} (p = {p:.3f})")


# %% [markdown]
# ## Exercise 1: the score of a finished hypothesis
#
# Write `beam_score(sum_logprobs, sequence_length, prompt_length, length_penalty)`. A finished hypothesis
# is `sequence_length` tokens long, of which the first `prompt_length` are the prompt; `sum_logprobs` is
# the sum of the log-probabilities of its new tokens (the end-of-text token included). Beam search ranks
# finished hypotheses by that sum divided by (number of new tokens) ** `length_penalty`.
#
# Example: `beam_score(-6.0, 8, 5, 1.0)` is `-2.0`, the average log-prob of the 3 new tokens.
#
# *Hint:* which tokens did the model actually choose? Try `length_penalty` 0, 1 and 2 by hand.

# %% nbgrader={"grade": false, "grade_id": "beam_score", "locked": false, "schema_version": 3, "solution": true, "task": false}
def beam_score(sum_logprobs: float, sequence_length: int, prompt_length: int, length_penalty: float) -> float:
    """The length-penalised score beam search ranks finished hypotheses by."""
    ### BEGIN SOLUTION
    new_tokens = sequence_length - prompt_length  # the prompt was given, not chosen: it does not count
    # 0 keeps the plain sum (short wins), 1 is the mean log-prob per token, above 1 favours long hypotheses
    return sum_logprobs / new_tokens**length_penalty
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_beam_score", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_beam_score(beam_score)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_beam_score, beam_score)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 2: one step of beam search
#
# Write `beam_step(beam_scores, log_probs, num_beams)`. `beam_scores` (nb,) holds each beam's running sum
# of log-probs, `log_probs` (nb, V) each beam's next-token log-probs. Every (beam, token) pair is a
# candidate, scored `beam_scores[b] + log_probs[b, t]`. Return the `num_beams` best candidates as three
# (num_beams,) tensors, best first: their scores, the beam each extends, and its token.
#
# Example: with `beam_scores = [0, -1e9]` (only beam 0 live) and `log_probs = [[-0.5, -1.0], [-0.5, -1.0]]`,
# two beams give scores `[-0.5, -1.0]`, beams `[0, 0]`, tokens `[0, 1]`.
#
# *Hint:* all candidates compete at once: flatten the (nb, V) totals, take `topk`, and turn each flat index
# back into a beam (`//`) and a token (`%`).

# %% nbgrader={"grade": false, "grade_id": "beam_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def beam_step(
    beam_scores: torch.Tensor, log_probs: torch.Tensor, num_beams: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``num_beams`` best (score, beam, token) candidates over all beams, best first."""
    ### BEGIN SOLUTION
    totals = beam_scores[:, None] + log_probs  # (nb, V): a candidate's score includes its beam's past
    scores, flat = totals.flatten().topk(num_beams)  # one ranking over all beams, not the best per beam
    vocab_size = log_probs.size(1)
    beams = flat // vocab_size  # row of the flattened index: the beam this candidate extends
    tokens = flat % vocab_size  # column: the token within that beam's row
    return scores, beams, tokens
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_beam_step", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_beam_step(beam_step)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_beam_step, beam_step)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 3: beam search by hand
#
# Write `beam_search_by_hand(model, prompt_ids, num_beams, steps)`: start every beam as the (1, T) prompt,
# run `steps` steps, and return the final beams as (num_beams, T + steps) ids, best first. No end-of-text:
# every beam grows by one token per step. The check runs it on a small random model and compares with
# `minigpt.search.beam_search`.
#
# *Hint:* at the first step the beams are identical, so only beam 0 may propose: start the others' scores
# at `-1e9`. After each step, each new beam is its *parent* beam plus its token. Reuse your `beam_step`.

# %% nbgrader={"grade": false, "grade_id": "beam_search_by_hand", "locked": false, "schema_version": 3, "solution": true, "task": false}
def beam_search_by_hand(
    model: torch.nn.Module, prompt_ids: torch.Tensor, num_beams: int, steps: int
) -> torch.Tensor:
    """Beam search without end-of-text; the final beams, best first."""
    ### BEGIN SOLUTION
    beams = prompt_ids.repeat(num_beams, 1)  # (num_beams, T): every beam starts as the prompt
    # the beams start identical: if all of them proposed, we would keep the same token num_beams times,
    # so only beam 0 is live at the first step (the others' -1e9 puts their candidates last)
    scores = torch.full((num_beams,), -1e9)
    scores[0] = 0.0
    for _ in range(steps):
        with torch.no_grad():
            log_probs = torch.log_softmax(model(beams)[:, -1], dim=-1)  # (num_beams, V), last position only
        scores, parents, tokens = beam_step(scores, log_probs, num_beams)
        beams = torch.cat([beams[parents], tokens[:, None]], dim=1)  # each new beam continues its parent
    return beams  # topk sorts, so the best beam is row 0
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_beam_search_by_hand", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_beam_search_by_hand(beam_search_by_hand)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_beam_search_by_hand, beam_search_by_hand)
### END HIDDEN TESTS

# %% [markdown]
# ## What beams cost, measured
#
# The open question below asks how many beams to use, so here is their price on this machine: greedy
# decoding, beam search with 4 beams, and 4 greedy runs one after another, on chapter 6's model and prompt,
# each timed 5 times in turns (`minigpt.metrics.interleaved_times`), as mean ± standard error.

# %%
# NBVAL_IGNORE_OUTPUT
# why: times measured on this machine, never the same twice; the asserts check what holds on any machine
import minigpt
from minigpt.metrics import interleaved_times, separated
from minigpt.search import beam_search

shakespeare = minigpt.load_model("shakespeare")


def greedy_run():
    return minigpt.generate(shakespeare, "HAMLET:\nO", max_new_tokens=20)


times = interleaved_times({
    "greedy": greedy_run,
    "4 beams": lambda: beam_search(shakespeare, "HAMLET:\nO", num_beams=4, max_new_tokens=20),
    "4 greedy runs": lambda: [greedy_run() for _ in range(4)],
}, repeats=5)
for name, t in times.items():
    print(f"{name:13} {t.mean * 1000:6.0f} ± {t.stderr * 1000:3.0f} ms ({t.low * 1000:.0f}-{t.high * 1000:.0f}), "
          f"{t.mean / times['greedy'].mean:.2f} times greedy")
for other in ("greedy", "4 greedy runs"):
    told = separated(times["4 beams"], times[other])
    print(f"4 beams against {other}: {'told apart' if told else 'a tie here (the intervals overlap)'}")
# the beams are rows of one batch: more work than one row, far less than four separate runs
assert times["greedy"].mean < times["4 beams"].mean < times["4 greedy runs"].mean

# %% [markdown]
# ## To think about: an open question
#
# Beam search finds more probable text than greedy decoding, yet chapter 6 showed its text to be the most
# repetitive of the three it compared. For which tasks is "more probable" what you want, and how would you
# choose `num_beams`?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 6](../06_beam_search.ipynb) showed. The
# [solutions notebook](../solutions/06_beam_search_solutions.ipynb) ends with one worked answer.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# More probable is what you want when the input pins the output down: translation, summarising, speech
# recognition, filling in a form, a short factual answer. There most of the probability sits on a few
# acceptable outputs, and a search that finds the most probable one finds a good one. Beam search helps
# exactly where greedy decoding's short-sightedness hurts. In the prediction above, "The sun rose" (0.190) was
# the best sentence, but its first word was only the third most likely (0.200), so greedy decoding and two
# beams both settled for "The cat sat" (0.180); three beams kept "sun" alive long enough for its very likely
# "rose" to pay off.
#
# It is not what you want for open-ended text. The most probable continuation of a story is generic and
# repetitive: chapter 6's four beams after "HAMLET:\nO" said "my lord, my lord" over and over, with far fewer
# distinct tokens than a top-p sample. People do not write the most probable text; a sample from the model is
# closer to the text it was trained on. For a story I would sample; if I used beams I would add a no-repeat
# n-gram rule (in chapter 6 it lifted every prompt's share of distinct tokens) or use one of the relatives:
# diverse beams, contrastive search.
#
# For `num_beams`, the gain shrinks fast while the cost grows. Every beam is a row of the batch with its own
# KV cache (chapter 7), so memory grows in proportion to the beams. Time grows more slowly: the beams of a
# step go through the model together, as one batched pass, so on this machine 4 beams cost more than greedy
# decoding but far less than 4 greedy runs (measured above, with its spread). In the toy tree a third beam
# found a sentence only slightly better (0.190 against 0.180), and only because the best path began with a less
# likely word. In practice a handful of beams captures most of the gain. Wider beams find higher-scoring
# outputs that are not better ones: in translation very wide beams prefer short outputs (Koehn and Knowles,
# see Sources), which is why Exercise 1's length penalty matters as soon as hypotheses can end at different
# lengths (in chapter 6, length penalty 0 chose a shorter ending than 1 and 2). I would try one, two, four and
# eight beams on a handful of real inputs, with the length penalty fixed, and stop where the output stops
# improving by the measure the task cares about, not where the score stops rising.
#
# ### Sources
#
# - Koehn, P., & Knowles, R. (2017). *Six Challenges for Neural Machine Translation*. Proceedings of the First
#   Workshop on Neural Machine Translation, 28–39. arXiv:1706.03872.
#
# #### Rubric (1 point)
#
# - **1 point**: names tasks where the input pins the output down (translation, a summary, a short factual answer) as the ones where "more probable" is wanted, and open-ended text as one where it is not, supported by what the notebook or chapter 6 showed (the beams after "HAMLET:\nO" repeating "my lord", with fewer distinct tokens than a top-p sample, or the toy tree where three beams found "The sun rose", 0.190 against 0.180); and chooses `num_beams` by weighing what another beam finds against what it costs (a batch row and a KV cache each, more time), for instance by trying a few values on real inputs.
# - **½ point**: one of the two parts done well (the tasks, or how to choose `num_beams`), or both without support from the notebook or the chapter.
# - **0 points**: "more beams are always better", or no task named.
