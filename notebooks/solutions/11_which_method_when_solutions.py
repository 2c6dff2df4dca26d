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
# # Chapter 11 exercises — measuring decoders (solutions)
#
# Two exercises on [chapter 11](../11_which_method_when.ipynb), on how it measures decoding methods: first one
# of its three measures, the repeated n-gram rate, then the paired comparison of two settings that drew with
# the same random numbers ("common random numbers", the chapter's Step 6). Each exercise asks for one
# function; the cell after it checks your function on hidden cases against minigpt's own and, when one fails,
# shows that input with the expected and the actual answer. In the
# [exercise notebook](../exercises/11_which_method_when_exercises.ipynb) each function is a stub for you to
# fill in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/11_which_method_when_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import math

import torch

from minigpt.exercises.which_method import check_paired_difference, check_repeated_ngram_rate

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# Take the toy logits after *"every effort moves you"* (closer 4.51, every 0.89, effort −1.90, forward 6.75,
# inches 1.63, moves −1.62, pizza −1.89, toward 6.28, you 1.79) and sample one word from them many times at
# two temperatures, 0.7 and 1.0. Score each word as chapter 11 scores text: by its log-probability under the
# raw distribution (temperature 1, no filter), how likely the model finds it. Draw i of each temperature uses
# a generator seeded with i: the *same* random numbers for both, as chapter 11 ran its sampled methods. For
# comparison, the cell also draws T 1.0 again with numbers of its own (seeds that T 0.7 never used).
#
# Before you run the next cell, write down your answers:
#
# 1. Which temperature picks words the model finds more likely on average, and by a lot or a little?
# 2. With the same random numbers, in how many of the draws do the two temperatures pick the same word: about
#    half, or most of them?
# 3. The difference of the two mean scores has a standard error. Is it smaller with the same numbers or with
#    numbers of their own? With which can the difference be told apart from 0 (its interval, mean ± 2 standard
#    errors, clear of 0)?

# %%
from minigpt.metrics import spread

vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])  # (1, 9)
log_p = logits.log_softmax(dim=-1)[0]  # (9,) the score: how likely the model finds each word, at T = 1
DRAWS = 200


def draw(temperature, seed):
    """One word from softmax(logits / temperature), drawn with a generator seeded with ``seed``."""
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).item()


def clear_of_zero(s):
    low, high = s.interval()  # mean ± 2 standard errors
    return low > 0 or high < 0


cold = [draw(0.7, i) for i in range(DRAWS)]
warm_same = [draw(1.0, i) for i in range(DRAWS)]  # the same numbers as T 0.7: seed i for draw i
warm_own = [draw(1.0, DRAWS + i) for i in range(DRAWS)]  # numbers of its own
alike = sum(a == b for a, b in zip(cold, warm_same))
print(f"the same word in {alike} of {DRAWS} draws with the same numbers, "
      f"in {sum(a == b for a, b in zip(cold, warm_own))} with numbers of its own")
scores = {"T 0.7": [log_p[t].item() for t in cold], "T 1.0": [log_p[t].item() for t in warm_own]}
print("mean log p, each with its own standard error:", ", ".join(f"{T} {spread(v)}" for T, v in scores.items()))
differences = {}
for numbers, warm in (("the same numbers", warm_same), ("numbers of its own", warm_own)):
    differences[numbers] = spread([log_p[a].item() - log_p[b].item() for a, b in zip(cold, warm)])  # pair i
    d = differences[numbers]
    print(f"T 0.7 - T 1.0 with {numbers:>18}: {d.mean:+.3f} ± {d.stderr:.3f}, interval clear of 0: {clear_of_zero(d)}")
same, own = differences["the same numbers"], differences["numbers of its own"]
# what the answers below say: most draws alike, a standard error under half as large, and only the paired one clear
assert alike > DRAWS * 3 // 4 and same.stderr < own.stderr / 2
assert clear_of_zero(same) and not clear_of_zero(own)

# %% [markdown]
# With the same numbers the two temperatures pick the same word in most draws (the exponential race of
# chapter 11's Step 6: the same random times, and a temperature that moves every p a little), and in those
# pairs the difference is exactly 0. So the differences vary much less than two independent readings would,
# and the paired standard error comes out under half as large. With it, T 0.7's small advantage is clear of 0;
# with numbers of its own, the same comparison ends inside the noise, and no winner can be named. Exercise 2
# writes that paired comparison.

# %% [markdown]
# ## Exercise 1: the repeated n-gram rate
#
# Write `repeated_ngram_rate(tokens, n)`: of the n-grams of the list `tokens` (runs of n tokens, one starting
# at each position that leaves room for n), the share that repeat an n-gram seen *earlier* in it. The first
# copy of an n-gram is not a repeat; every later copy is. A loop such as "I will, I will, I will" drives it up,
# a text with no repeated phrase scores 0. Chapter 11 reads it on runs of four tokens; yours takes any n from
# 1 to the length of `tokens`.
#
# *Hints:* `tuple(tokens[i : i + n])` is an n-gram you can put in a `set`; a text of length L has L − n + 1
# of them.

# %% nbgrader={"grade": false, "grade_id": "repeated_ngram_rate", "locked": false, "schema_version": 3, "solution": true, "task": false}
def repeated_ngram_rate(tokens: list[int], n: int) -> float:
    """The share of the n-grams of ``tokens`` that repeat an n-gram seen earlier in it (0.0: none repeats)."""
    ### BEGIN SOLUTION
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]  # one per start that leaves room
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen  # the first copy is new; every later copy repeats
        seen.add(gram)
    return repeats / len(grams)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_repeated_ngram_rate", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_repeated_ngram_rate(repeated_ngram_rate)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_repeated_ngram_rate, repeated_ngram_rate)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 2: the paired comparison
#
# Write `paired_difference(scores_a, scores_b)`: two settings' scores, pair i from the same prompt and the same
# random numbers, as in the prediction above. Return the mean of the differences `scores_a[i] - scores_b[i]`
# and its standard error, as a tuple of two floats. The standard error is the differences' sample standard
# deviation (the squared deviations summed, divided by n − 1, square-rooted) divided by √n, the same as
# `minigpt.metrics.spread` computes for any list of readings.
#
# The point of pairing: do *not* work out each setting's own standard error and combine them, which treats
# the two lists as independent. Paired scores move together, and only the differences show how much.
#
# *Hint:* `math.sqrt` (math is imported at the top); there are at least two pairs.

# %% nbgrader={"grade": false, "grade_id": "paired_difference", "locked": false, "schema_version": 3, "solution": true, "task": false}
def paired_difference(scores_a: list[float], scores_b: list[float]) -> tuple[float, float]:
    """The mean of ``scores_a[i] - scores_b[i]`` over the pairs, and its standard error."""
    ### BEGIN SOLUTION
    differences = [a - b for a, b in zip(scores_a, scores_b)]  # one per pair: the same prompt, the same numbers
    n = len(differences)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)  # the sample variance
    return mean, math.sqrt(variance / n)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_paired_difference", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_paired_difference(paired_difference)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_paired_difference, paired_difference)
### END HIDDEN TESTS

# %% [markdown]
# ## To think about: an open question
#
# Chapter 11 gives each method its own standard error and names a method only where the intervals are clear
# of each other, although its sampled methods all drew with the same seed and ran on the same prompts. Where
# in its comparisons would a paired comparison, like your `paired_difference` over the same prompts and
# draws, help most, and where would it hardly help?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 11](../11_which_method_when.ipynb) showed. The
# [solutions notebook](../solutions/11_which_method_when_solutions.ipynb) ends with one worked answer.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# Pairing helps where the two scores of a pair move together, because then the differences vary much less than
# either list. The prediction above shows it: T 0.7 and T 1.0, drawing with the same numbers, picked the same
# word in 188 of 200 draws, each such pair differs by exactly 0, and the standard error of the difference was
# 0.030 against 0.061 with numbers of their own. Only the first difference was clear of 0: with numbers of
# their own, the same two temperatures could not be told apart.
#
# In chapter 11 two things make the pairs move together. First the prompts: the chapter says its standard
# deviations are large because some prompts are much easier to continue than others, and that spread is shared
# by every method run on the same prompt, so a difference per prompt removes it. That helps even the
# deterministic methods (greedy against beam search, or contrastive search against a sampler). Second the
# draws: where two sampled methods keep the same likely tokens, the race gives them the same token, as
# `typical_p=0.9` and `top_p=0.9` showed (most of their continuations token for token alike). There a paired
# comparison would narrow the interval most, and it is the honest test of whether the two differ at all: their
# separate intervals overlap on every measure of the chapter's table and cannot say.
#
# Pairing hardly helps where the two methods part early and stay parted: `temperature=0.7` against
# `temperature=1.3` over a continuation of dozens of tokens. From their first different token on the two texts
# share no context, so the draws no longer pair up token for token; only the prompt's share of the spread is
# removed. And pairing does
# not make a difference real: a verdict still needs the paired interval clear of 0, and with few prompts it can
# still come out "a tie", which is then the answer to report.
#
# #### Rubric (1 point)
#
# - **1 point**: says that pairing helps where the two scores of a pair move together (the same prompt's difficulty, the same draws picking the same token) and names where that holds in chapter 11 (two close methods such as `typical_p=0.9` and `top_p=0.9`, or any two methods on the same prompts), and where it does not (methods that part early, such as two far-apart temperatures); supports it with a number from this notebook (the paired against the unpaired standard error of the prediction) or from the chapter.
# - **½ point**: says that the same seed or the same prompts make the difference's spread smaller, without saying where it helps and where not, or without a number.
# - **0 points**: names a winner from intervals that overlap, or says that using the same random numbers makes the comparison unfair or biased.
