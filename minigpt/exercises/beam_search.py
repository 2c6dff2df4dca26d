"""Checkers for chapter 6, beam search (``notebooks/exercises/06_beam_search_exercises.ipynb``).

Three exercises: the score of a finished hypothesis (length penalty), one step of beam search (the best
(beam, token) candidates over all beams), and a whole beam search by hand, checked token for token
against ``minigpt.search.beam_search`` on a small random model.

>>> result = check_beam_score(lambda sum_logprobs, sequence_length, prompt_length, length_penalty: 0.0)
✗ beam_score: hidden case 1 of 6 fails (length_penalty 0: the score is the plain sum of log-probs)
  sum_logprobs = -6.0, sequence_length = 8, prompt_length = 5, length_penalty = 0.0
  wrong value
  expected: -6.0
  got:      0.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, check
from minigpt.exercises.models import toy_model, toy_model_case
from minigpt.model import GPT
from minigpt.search import INACTIVE_SCORE, beam_search


def check_beam_score(student: Callable) -> CheckResult:
    """Check ``beam_score(sum_logprobs, sequence_length, prompt_length, length_penalty)``.

    A finished hypothesis is ``sequence_length`` tokens long, the first ``prompt_length`` of them the
    prompt; ``sum_logprobs`` adds up the log-probs of the new tokens (EOS included). Its score, the one
    ``minigpt.search.beam_search`` ranks by, is ``sum_logprobs / new_tokens ** length_penalty``.

    >>> def beam_score(sum_logprobs, sequence_length, prompt_length, length_penalty):
    ...     return sum_logprobs / (sequence_length - prompt_length) ** length_penalty
    >>> result = check_beam_score(beam_score)
    ✓ beam_score: all 6 hidden cases pass
    """
    g = torch.Generator().manual_seed(6)
    random_sum = -torch.rand((), generator=g).item() * 20
    cases = [
        Case((-6.0, 8, 5, 0.0), "length_penalty 0: the score is the plain sum of log-probs"),
        Case((-6.0, 8, 5, 1.0), "length_penalty 1: divide by the number of NEW tokens, 8 - 5 = 3; the prompt does "
             "not count"),
        Case((-6.0, 9, 5, 2.0), "length_penalty 2: divide by the number of new tokens squared, 4 ** 2"),
        Case((-6.0, 7, 4, -1.0), "a negative length_penalty multiplies by the length: short hypotheses win"),
        Case((-0.5, 2, 1, 1.0), "a single new token: the score is its log-prob"),
        Case((random_sum, 30, 10, 1.3), "a random score"),
    ]
    return check("beam_score", student, _beam_score, cases, atol=1e-6)


def _beam_score(sum_logprobs: float, sequence_length: int, prompt_length: int, length_penalty: float) -> float:
    # minigpt.search scores a finished candidate as `scores / (step + 1) ** length_penalty`, step + 1 new tokens
    return sum_logprobs / (sequence_length - prompt_length) ** length_penalty


def check_beam_step(student: Callable) -> CheckResult:
    """Check ``beam_step(beam_scores, log_probs, num_beams)``: pick the next beams from all candidates.

    ``beam_scores`` (nb,) holds each beam's running sum of log-probs, ``log_probs`` (nb, V) each beam's
    next-token log-probs. Every (beam, token) pair is a candidate scored ``beam_scores[b] + log_probs[b, t]``;
    return the ``num_beams`` best as three (num_beams,) tensors, best first: their scores, the beam each
    extends, and its token.

    >>> def beam_step(beam_scores, log_probs, num_beams):
    ...     scores, flat = (beam_scores[:, None] + log_probs).flatten().topk(num_beams)
    ...     return scores, flat // log_probs.size(1), flat % log_probs.size(1)
    >>> result = check_beam_step(beam_step)
    ✓ beam_step: all 5 hidden cases pass
    """
    g = torch.Generator().manual_seed(6)
    row = torch.tensor([-0.5, -1.5, -2.5, -1.0, -3.0])
    cases = [
        Case((torch.tensor([0.0, INACTIVE_SCORE, INACTIVE_SCORE]), row.repeat(3, 1), 3),
             "first step: the beams are copies of the prompt and only beam 0 is live (the others start at -1e9), "
             "so the 3 best tokens all extend beam 0"),
        Case((torch.tensor([-1.0, -1.0]), torch.tensor([[-0.1, -0.2, -5.0], [-3.0, -4.0, -0.3]]), 2),
             "the candidates of all beams compete: beam 0's two best tokens beat beam 1's best"),
        Case((torch.tensor([-0.2, -4.0]), torch.tensor([[-1.0, -1.5, -2.0], [-0.01, -3.0, -3.0]]), 2),
             "a candidate's score includes its beam's running score: a likely token on an unlikely beam loses"),
        Case((torch.tensor([-1.0, -2.0]), torch.tensor([[-2.0, -0.1, -3.0], [-5.0, -4.0, -0.2]]), 3),
             "the token is the position within its beam's row, not in the flattened scores"),
        Case((-torch.rand(4, generator=g).sort(descending=True).values * 3,
              torch.randn(4, 10, generator=g).log_softmax(-1), 4), "random beams"),
    ]
    return check("beam_step", student, _beam_step, cases, atol=1e-5)


def _beam_step(
    beam_scores: torch.Tensor, log_probs: torch.Tensor, num_beams: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # minigpt.search does this on (B, nb * V) with 2 * num_beams candidates, keeping spares for EOS; without
    # EOS its next beams are these num_beams best
    scores, flat = (beam_scores[:, None] + log_probs).flatten().topk(num_beams)
    vocab_size = log_probs.size(1)
    return scores, flat // vocab_size, flat % vocab_size


def check_beam_search_by_hand(student: Callable) -> CheckResult:
    """Check ``beam_search_by_hand(model, prompt_ids, num_beams, steps)`` against ``minigpt.search.beam_search``.

    Starting from ``prompt_ids`` (1, T), run ``steps`` steps of beam search with ``num_beams`` beams (no
    end-of-text: every beam grows by one token per step) and return the final beams as (num_beams, T + steps)
    ids, best first. The hidden cases run on a small random model.

    >>> result = check_beam_search_by_hand(lambda model, prompt_ids, num_beams, steps: prompt_ids)
    ✗ beam_search_by_hand: hidden case 1 of 4 fails (three beams on a short prompt)
      model = a random GPT (...), prompt_ids = tensor([[1, 2, 3]]), num_beams = 3, steps = 5
      wrong shape: expected (3, 8), got (1, 3)
    ...
    """
    model = toy_model(seed=6)
    g = torch.Generator().manual_seed(6)
    settings = [
        (torch.tensor([[1, 2, 3]]), 3, 5, "three beams on a short prompt"),
        (torch.tensor([[7]]), 2, 6, "a one-token prompt: only beam 0 may propose at the first step"),
        (torch.tensor([[4, 20]]), 1, 5, "one beam is greedy decoding"),
        (torch.randint(0, 64, (1, 6), generator=g), 4, 6, "a random prompt"),
    ]
    cases = [toy_model_case(model, why, prompt_ids=ids, num_beams=nb, steps=steps) for ids, nb, steps, why in settings]
    return check("beam_search_by_hand", student, _beam_search_by_hand, cases)


def _beam_search_by_hand(model: GPT, prompt_ids: torch.Tensor, num_beams: int, steps: int) -> torch.Tensor:
    out = beam_search(model, prompt_ids, num_beams=num_beams, max_new_tokens=steps, num_return_sequences=num_beams)
    return out.ids
