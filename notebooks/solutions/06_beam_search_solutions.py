# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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

# %%
import torch

from minigpt.exercises.beam_search import check_beam_score, check_beam_search_by_hand, check_beam_step

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Exercise 1: the score of a finished hypothesis
#
# Write `beam_score(sum_logprobs, sequence_length, prompt_length, length_penalty)`. A finished hypothesis
# is `sequence_length` tokens long, of which the first `prompt_length` are the prompt; `sum_logprobs` is
# the sum of the log-probabilities of its new tokens (the end-of-text token included). Beam search ranks
# finished hypotheses by that sum divided by (number of new tokens) ** `length_penalty`.
#
# Example: `beam_score(-6.0, 8, 5, 1.0)` is −2.0, the average log-prob of the 3 new tokens.
#
# *Hint:* which tokens did the model actually choose? Try `length_penalty` 0, 1 and 2 by hand.

# %%
def beam_score(sum_logprobs: float, sequence_length: int, prompt_length: int, length_penalty: float) -> float:
    """The length-penalised score beam search ranks finished hypotheses by."""
    new_tokens = sequence_length - prompt_length  # the prompt was given, not chosen: it does not count
    # 0 keeps the plain sum (short wins), 1 is the mean log-prob per token, above 1 favours long hypotheses
    return sum_logprobs / new_tokens**length_penalty


# %%
check_beam_score(beam_score)

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

# %%
def beam_step(
    beam_scores: torch.Tensor, log_probs: torch.Tensor, num_beams: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``num_beams`` best (score, beam, token) candidates over all beams, best first."""
    totals = beam_scores[:, None] + log_probs  # (nb, V): a candidate's score includes its beam's past
    scores, flat = totals.flatten().topk(num_beams)  # one ranking over all beams, not the best per beam
    vocab_size = log_probs.size(1)
    beams = flat // vocab_size  # row of the flattened index: the beam this candidate extends
    tokens = flat % vocab_size  # column: the token within that beam's row
    return scores, beams, tokens


# %%
check_beam_step(beam_step)

# %% [markdown]
# ## Exercise 3: beam search by hand
#
# Write `beam_search_by_hand(model, prompt_ids, num_beams, steps)`: start every beam as the (1, T) prompt,
# run `steps` steps, and return the final beams as (num_beams, T + steps) ids, best first. No end-of-text:
# every beam grows by one token per step. The check runs it on a small random model and compares with
# `minigpt.search.beam_search`.
#
# *Hint:* at the first step the beams are identical, so only beam 0 may propose: start the others' scores
# at −1e9. After each step, each new beam is its *parent* beam plus its token. Reuse your `beam_step`.

# %%
def beam_search_by_hand(
    model: torch.nn.Module, prompt_ids: torch.Tensor, num_beams: int, steps: int
) -> torch.Tensor:
    """Beam search without end-of-text; the final beams, best first."""
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


# %%
check_beam_search_by_hand(beam_search_by_hand)
