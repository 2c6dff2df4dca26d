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
# # Chapter 14 exercises — watermarks
#
# Two exercises on [chapter 14](../14_watermarks.ipynb), one for each half of the watermark. The sampler
# hides it: before each token, the previous token seeds a random "green list" of a fraction γ of the
# vocabulary, and the green tokens' logits get a bonus δ. The detector finds it without the model: it counts
# how many tokens of a text are green, and asks how unlikely that count is for a text written without the
# watermark. The first exercise builds the green list, exactly as transformers does; the second computes the
# detector's z-score.
#
# Each exercise asks for one function; the cell after it checks your function on hidden cases against
# minigpt's own (`minigpt.logits.greenlist`, `minigpt.watermark.detect`) and, when one fails, shows that input
# with the expected and the actual answer. In the
# [exercise notebook](../exercises/14_watermarks_exercises.ipynb) each function is a stub for you to fill in
# (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/14_watermarks_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import math

import torch

from minigpt.exercises.watermark import check_greenlist, check_watermark_z_score

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# In a text written without the watermark, each scored token is green by chance, with probability γ = 0.25
# (transformers' default). So the green count of T tokens is binomial: on average γT, give or take
# √(Tγ(1 − γ)), its standard deviation. The detector's z-score is how many standard deviations the count lies
# above γT, and the detector calls a text watermarked when z is above a threshold, 3 by default.
#
# Before you run the next cell, write down your answers:
#
# 1. In 200 scored tokens of plain text, about how many are green, give or take how many?
# 2. A text has 80 green tokens out of 200 (40%). What is its z, and does the detector call it watermarked?
# 3. A shorter text is green in the same 40%: 10 tokens out of 25. Is its z the same?
#
# The cell prints its answers under the same numbers.

# %%
from minigpt.watermark import p_value, z_score

gamma, threshold = 0.25, 3.0  # transformers' default greenlist_ratio and z_threshold
print(f"1. {200 * gamma:.0f} green on average, give or take {math.sqrt(200 * gamma * (1 - gamma)):.1f}")
for question, (green, scored) in ((2, (80, 200)), (3, (10, 25))):
    z = z_score(green, scored, gamma)
    verdict = "watermarked" if z > threshold else "not watermarked"
    print(f"{question}. {green} green of {scored} ({green / scored:.0%}): z = {z:.2f}, {verdict}")
print(f"(plain text goes over z = {threshold:g} by chance with probability {p_value(threshold):.4f})")
assert z_score(10, 25, gamma) < threshold < z_score(80, 200, gamma)  # the same fraction, a different verdict

# %% [markdown]
# ## Exercise 1: the green list
#
# Write `greenlist(ids, vocab_size, greenlist_ratio, hashing_key)`: the green list for the token that follows
# the text `ids` (a list of token ids), as transformers' `WatermarkLogitsProcessor` makes it with its default
# seeding scheme, "lefthash":
#
# 1. the seed is `hashing_key * ids[-1]`: only the LAST token counts (transformers also takes it modulo
#    `2**64 - 1`, which changes nothing unless the key is huge);
# 2. a `torch.Generator` seeded with it draws `torch.randperm(vocab_size, generator=...)`, a shuffled vocabulary;
# 3. the green list is the first `int(vocab_size * greenlist_ratio)` ids of that permutation (`int` rounds down).
#
# Return them as a 1-D tensor of token ids; their order does not matter.
#
# *Hints:* `torch.Generator().manual_seed(seed)` makes a seeded generator. Anyone who knows the key can make
# the list again, which is how the detector works without the model; anyone who does not, cannot.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "cdc218e7fc3ba4fe530245d7f11fc159", "grade": false, "grade_id": "greenlist", "locked": false, "schema_version": 3, "solution": true, "task": false}
def greenlist(ids: list[int], vocab_size: int, greenlist_ratio: float, hashing_key: int) -> torch.Tensor:
    """The green token ids for the token after ``ids``: a seeded shuffle of the vocabulary, its first γV ids."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "cb1a3db7d708c1d949f0ba6976233d12", "grade": true, "grade_id": "check_greenlist", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_greenlist(greenlist)

# %% [markdown]
# ### Only the previous token matters
#
# The next cell asks minigpt's own `greenlist` (so it runs before you have finished) for the green lists of
# GPT-2's vocabulary that follow three texts: two that end in " the", and one that ends in " a". It prints
# how many tokens each list holds and how many two lists share.

# %%
from minigpt.logits import WatermarkSettings
from minigpt.logits import greenlist as library_greenlist
from minigpt.tokenizer import encode

settings = WatermarkSettings()  # γ = 0.25 and transformers' default key
texts = ["ROMEO: But soft, what light through the", "JULIET: O Romeo, the", "JULIET: O Romeo, a"]
lists = [set(library_greenlist(encode(text), settings).tolist()) for text in texts]
print(f"each list holds {len(lists[0]):,} of GPT-2's 50,257 tokens")
shared_the, shared_a = len(lists[0] & lists[1]), len(lists[0] & lists[2])
print(f"two texts ending in ' the' share {shared_the:,}; ' the' and ' a' share {shared_a:,} "
      f"({shared_a / len(lists[0]):.1%} of a list)")
assert lists[0] == lists[1]  # the same previous token, the same list, whatever came before
assert abs(shared_a / len(lists[0]) - settings.greenlist_ratio) < 0.02  # about γ: as if drawn independently

# %% [markdown]
# ## Exercise 2: the detector's z-score
#
# Write `watermark_z_score(ids, vocab_size, greenlist_ratio, hashing_key)`: the z-score the detector gives
# the text `ids`, with the same settings as Exercise 1.
#
# - Every token after the first is scored: token t is green when it is in the green list of `ids[:t]`, the
#   text before it. The first token has no token before it, so it is not scored: T = `len(ids) - 1`.
# - Every occurrence counts, a repeated pair of tokens too (transformers' default).
# - With G green tokens of T and γ = `greenlist_ratio`: z = (G − γT) / √(Tγ(1 − γ)), a float.
#
# *Hints:* use your `greenlist`. `token in tensor` tests whether a tensor holds a number; `math.sqrt` is the
# square root.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "64b79b9d59b4df3c976b5664dd17d227", "grade": false, "grade_id": "watermark_z_score", "locked": false, "schema_version": 3, "solution": true, "task": false}
def watermark_z_score(ids: list[int], vocab_size: int, greenlist_ratio: float, hashing_key: int) -> float:
    """How many standard deviations the green count of ``ids`` lies above what chance gives."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "3a50491193dd74573759b303b7c42d2d", "grade": true, "grade_id": "check_watermark_z_score", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_watermark_z_score(watermark_z_score)

# %% [markdown]
# ### What an attack costs
#
# Suppose a watermarked text has 60% green tokens, and someone replaces a fraction r of its tokens with random
# ones. A replaced token is green only by chance, γ; and so is the token after it, whose green list the
# replaced token now seeds. So a scored token keeps its watermark only when neither it nor the token before it
# was replaced, with probability (1 − r)², and the expected green fraction falls to
# (1 − r)² · 0.6 + (1 − (1 − r)²) · γ. The next cell prints the z-score that fraction gives, for a short text and
# a long one, with the formula of Exercise 2.

# %%
green_fraction = 0.6  # an example, not a measurement: chapter 14 measures what the shipped model gives
print(f"a watermarked text, {green_fraction:.0%} green (γ = {gamma}):")
for replaced in (0.0, 0.25, 0.5):
    kept = (1 - replaced) ** 2  # neither the token nor the one before it was replaced
    fraction = kept * green_fraction + (1 - kept) * gamma
    zs = {scored: (fraction - gamma) * math.sqrt(scored / (gamma * (1 - gamma))) for scored in (25, 200)}
    print(f"replace {replaced:.0%}: {fraction:.1%} green expected; z = {zs[25]:.1f} for 25 scored tokens, "
          f"{zs[200]:.1f} for 200")
    assert zs[200] > zs[25]  # the same fraction, more evidence: z grows as the square root of T

# %% [markdown]
# ## To think about: an open question
#
# Someone replaces a quarter of the tokens of a watermarked answer with random ones. Would the detector
# still find the watermark in an answer of 25 tokens? Of 200? What would you tell a teacher who wants to use
# it on students' essays?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 14](../14_watermarks.ipynb) showed. The [solutions notebook](../solutions/14_watermarks_solutions.ipynb)
# ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
