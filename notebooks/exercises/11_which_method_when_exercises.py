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
# # Chapter 11 exercises — typical sampling
#
# Two exercises on [chapter 11](../11_which_method_when.ipynb), where typical sampling (`typical_p`) was one
# of the eleven methods measured: first how far each token's surprise is from the row's average, then the
# typical filter built on it. Each exercise asks for one function; the cell after it checks your function on
# hidden cases against minigpt's own and, when one fails, shows that input with the expected and the actual
# answer. In the [exercise notebook](../exercises/11_which_method_when_exercises.ipynb) each function is a stub
# for you to fill in (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/11_which_method_when_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.typical import check_surprise_gap, check_typical_filter

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# Take the toy logits after *"every effort moves you"* (closer 4.51, every 0.89, effort −1.90, forward 6.75,
# inches 1.63, moves −1.62, pizza −1.89, toward 6.28, you 1.79). "forward" is the most likely word (0.57),
# "toward" next (0.36). Typical sampling ranks words not by probability but by how close their surprise,
# −log p, is to the average surprise of the row (its entropy, here 0.91 nats), and keeps words in that order
# until they hold `typical_p` of the mass.
#
# Before you run the next cell, write down your answers:
#
# 1. Which word is the most *typical*: "forward" (surprise 0.56 nats) or "toward" (1.03 nats)?
# 2. Top-p 0.3 keeps only "forward". What does typical 0.3 keep?
# 3. At 0.9, do top-p and typical keep the same words?

# %%
from minigpt.logits import top_p_filter, typical_filter

vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])  # (1, 9)
log_probs = logits.log_softmax(dim=-1)
entropy = -(log_probs * log_probs.exp()).sum().item()
print(f"p(forward) {log_probs[0, 3].exp():.2f}, p(toward) {log_probs[0, 7].exp():.2f}")
print(f"entropy {entropy:.2f} nats; surprise of forward {-log_probs[0, 3]:.2f}, toward {-log_probs[0, 7]:.2f}")
for mass in (0.3, 0.9):
    for name, f in (("top-p", top_p_filter), ("typical", typical_filter)):
        kept = [w for w, z in zip(vocab, f(logits, mass)[0].tolist()) if z > float("-inf")]
        print(f"{name:>8} {mass}: {kept}")


# %% [markdown]
# ## Exercise 1: the surprise gap
#
# Write `surprise_gap(logits)`: for each row of the (B, V) logits, the entropy H = −Σ p log p (in nats, the
# row's average surprise), and for each token |−log p − H|, how far its surprise is from that average. A token
# already removed by an earlier filter has logit −inf and p = 0: it adds nothing to H (0 · log 0 counts as 0,
# not NaN) and its gap is inf.
#
# *Hints:* `torch.log_softmax` gives log p directly (−inf for removed tokens); `torch.nansum` skips the NaN
# that −inf · 0 makes.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "c0b98f687ce5d78be1910f470d87462b", "grade": false, "grade_id": "surprise_gap", "locked": false, "schema_version": 3, "solution": true, "task": false}
def surprise_gap(logits: torch.Tensor) -> torch.Tensor:
    """|-log p - H| for every token of each row of the (B, V) ``logits`` (H: the row's entropy, in nats)."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "f199f5c81e269f3fda433fd7f7aafcf8", "grade": true, "grade_id": "check_surprise_gap", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_surprise_gap(surprise_gap)

# %% [markdown]
# ## Exercise 2: the typical filter
#
# Write `typical_filter(logits, mass, min_tokens_to_keep=1)`: in each row, sort the tokens by their surprise
# gap, most typical (smallest gap) first, and keep them in that order until their probabilities add up to
# `mass`. As in top-p, the token that *crosses* `mass` is kept; so is every token whose gap equals its (ties),
# and the `min_tokens_to_keep` most typical tokens are always kept. Every other logit becomes `-inf`, and the
# answer keeps the vocabulary's order.
#
# *Hints:* your `surprise_gap` from Exercise 1; `torch.sort` returns the order; the probabilities in that
# order are `torch.softmax(logits, dim=-1).gather(-1, order)`. Find the gap of the token that crosses `mass`,
# then drop every token whose gap is larger. `torch.zeros_like(mask).scatter(-1, order, mask)` puts a mask
# back into vocabulary order.

# %% deletable=false nbgrader={"cell_type": "code", "checksum": "3c18cc1eb14542c861acaa66a11ca2fd", "grade": false, "grade_id": "typical_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def typical_filter(logits: torch.Tensor, mass: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """The (B, V) ``logits`` with every token outside its row's typical set of mass ``mass`` at -inf."""
    raise NotImplementedError  # EXERCISE: write this function


# %% deletable=false editable=false nbgrader={"cell_type": "code", "checksum": "76e2e017744f5c2daff9ba504c5ae27b", "grade": true, "grade_id": "check_typical_filter", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
check_typical_filter(typical_filter)

# %% [markdown]
# ## To think about: an open question
#
# In chapter 11, typical 0.9 and top-p 0.9 wrote most of their continuations token for token alike. When would
# you expect typical sampling to behave clearly differently from top-p, and would you want it to?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 11](../11_which_method_when.ipynb) showed. The
# [solutions notebook](../solutions/11_which_method_when_solutions.ipynb) ends with one worked answer.

# %% [markdown] deletable=false nbgrader={"cell_type": "markdown", "checksum": "40eeadb33a92d373dc04eb84b0b95861", "grade": true, "grade_id": "open_question", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# YOUR ANSWER HERE
