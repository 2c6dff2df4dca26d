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

from minigpt.exercises.checking import Case, CheckResult, cases_for, check
from minigpt.exercises.models import TOY_CONFIG, toy_model, toy_model_case
from minigpt.model import GPT
from minigpt.search import INACTIVE_SCORE, beam_search


def check_beam_score(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``beam_score(sum_logprobs, sequence_length, prompt_length, length_penalty)``.

    A finished hypothesis is ``sequence_length`` tokens long, the first ``prompt_length`` of them the
    prompt; ``sum_logprobs`` adds up the log-probs of the new tokens (EOS included). Its score, the one
    ``minigpt.search.beam_search`` ranks by, is ``sum_logprobs / new_tokens ** length_penalty``. A ``seed``
    checks on cases drawn from it.

    >>> def beam_score(sum_logprobs, sequence_length, prompt_length, length_penalty):
    ...     return sum_logprobs / (sequence_length - prompt_length) ** length_penalty
    >>> result = check_beam_score(beam_score)
    ✓ beam_score: all 6 hidden cases pass
    >>> result = check_beam_score(beam_score, seed=1)
    ✓ beam_score: all 6 drawn cases pass
    """
    return check("beam_score", student, _beam_score, cases_for(seed, _score_cases, _drawn_score_cases), atol=1e-6)


def _score_cases() -> list[Case]:
    g = torch.Generator().manual_seed(6)
    random_sum = -torch.rand((), generator=g).item() * 20
    return [
        Case((-6.0, 8, 5, 0.0), "length_penalty 0: the score is the plain sum of log-probs"),
        Case((-6.0, 8, 5, 1.0), "length_penalty 1: divide by the number of NEW tokens, 8 - 5 = 3; the prompt does "
             "not count"),
        Case((-6.0, 9, 5, 2.0), "length_penalty 2: divide by the number of new tokens squared, 4 ** 2"),
        Case((-6.0, 7, 4, -1.0), "a negative length_penalty multiplies by the length: short hypotheses win"),
        Case((-0.5, 2, 1, 1.0), "a single new token: the score is its log-prob"),
        Case((random_sum, 30, 10, 1.3), "a random score"),
    ]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An int from ``low`` to ``high``, both included, drawn from ``g``."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _uniform(g: torch.Generator, low: float, high: float, decimals: int = 2) -> float:
    """A float between ``low`` and ``high``, rounded to ``decimals`` so that a failure message shows it whole."""
    return round(low + (high - low) * float(torch.rand(1, generator=g)), decimals)


def _drawn_score_cases(g: torch.Generator) -> list[Case]:
    def hypothesis() -> tuple[float, int, int]:  # a sum of log-probs, the length, the prompt's length
        prompt = _randint(g, 1, 10)
        return -_uniform(g, 0.5, 20), prompt + _randint(g, 2, 20), prompt

    s, length, prompt = hypothesis()
    cases = [Case((s, length, prompt, 0.0), "length_penalty 0: the score is the plain sum of log-probs")]
    s, length, prompt = hypothesis()
    cases.append(Case((s, length, prompt, 1.0), f"length_penalty 1: divide by the number of NEW tokens, {length} - "
                      f"{prompt} = {length - prompt}; the prompt does not count"))
    s, length, prompt = hypothesis()
    cases.append(Case((s, length, prompt, 2.0), f"length_penalty 2: divide by the number of new tokens squared, "
                      f"{length - prompt} ** 2"))
    s, length, prompt = hypothesis()
    cases.append(Case((s, length, prompt, -_uniform(g, 0.5, 2, 1)), "a negative length_penalty multiplies by the "
                      "length: short hypotheses win"))
    s, _, prompt = hypothesis()
    cases.append(Case((s / 10, prompt + 1, prompt, _uniform(g, 0.5, 2, 1)), "a single new token: the score is its "
                      "log-prob, whatever the length_penalty"))
    s, length, prompt = hypothesis()
    cases.append(Case((s, length, prompt, _uniform(g, 0.3, 2.5)), "a random score"))
    return cases


def _beam_score(sum_logprobs: float, sequence_length: int, prompt_length: int, length_penalty: float) -> float:
    # minigpt.search scores a finished candidate as `scores / (step + 1) ** length_penalty`, step + 1 new tokens
    return sum_logprobs / (sequence_length - prompt_length) ** length_penalty


def check_beam_step(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``beam_step(beam_scores, log_probs, num_beams)``: pick the next beams from all candidates.

    ``beam_scores`` (nb,) holds each beam's running sum of log-probs, ``log_probs`` (nb, V) each beam's
    next-token log-probs. Every (beam, token) pair is a candidate scored ``beam_scores[b] + log_probs[b, t]``;
    return the ``num_beams`` best as three (num_beams,) tensors, best first: their scores, the beam each
    extends, and its token. A ``seed`` checks on cases drawn from it.

    >>> def beam_step(beam_scores, log_probs, num_beams):
    ...     scores, flat = (beam_scores[:, None] + log_probs).flatten().topk(num_beams)
    ...     return scores, flat // log_probs.size(1), flat % log_probs.size(1)
    >>> result = check_beam_step(beam_step)
    ✓ beam_step: all 5 hidden cases pass
    >>> result = check_beam_step(beam_step, seed=1)
    ✓ beam_step: all 5 drawn cases pass
    """
    return check("beam_step", student, _beam_step, cases_for(seed, _step_cases, _drawn_step_cases), atol=1e-5)


def _step_cases() -> list[Case]:
    g = torch.Generator().manual_seed(6)
    row = torch.tensor([-0.5, -1.5, -2.5, -1.0, -3.0])
    return [
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


# A gap between two compared scores (candidates, logits) that float rounding on any machine cannot close: the
# drawn cases rank clearly, so a correct answer computed in another order still picks the same ones.
MARGIN = 1e-3


def _log_probs(g: torch.Generator, beams: int, vocab_size: int) -> torch.Tensor:
    """(beams, vocab_size) log-probs from -3 to -0.2, 2 decimals: readable, and no two candidates of a row tie."""
    while True:
        values = -_uniform_tensor(g, (beams, vocab_size), 0.2, 3)
        if all(len(set(row)) == vocab_size for row in values.tolist()):
            return values


def _uniform_tensor(g: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return (low + (high - low) * torch.rand(shape, generator=g)).round(decimals=2)


def _ranks_clearly(beam_scores: torch.Tensor, log_probs: torch.Tensor, num_beams: int) -> bool:
    """Whether the ``num_beams`` + 1 best candidates are at least ``MARGIN`` apart, so no tie decides the order."""
    best = (beam_scores[:, None] + log_probs).flatten().topk(num_beams + 1).values
    return bool((best[:-1] - best[1:] >= MARGIN).all())


def _drawn_step_cases(g: torch.Generator) -> list[Case]:
    nb, v = _randint(g, 2, 4), _randint(g, 6, 9)

    def clear_case(make: Callable[[], tuple[torch.Tensor, torch.Tensor]], why: str) -> Case:
        while True:  # redraw until the ranking is clear
            beam_scores, log_probs = make()
            if _ranks_clearly(beam_scores, log_probs, nb):
                return Case((beam_scores, log_probs, nb), why)

    def first_step() -> tuple[torch.Tensor, torch.Tensor]:  # copies of the prompt, only beam 0 live
        return torch.tensor([0.0] + [INACTIVE_SCORE] * (nb - 1)), _log_probs(g, 1, v).repeat(nb, 1)

    def one_beam_wins() -> tuple[torch.Tensor, torch.Tensor]:  # beam 0's nb best beat every other beam's best
        log_probs = _log_probs(g, nb, v)
        nth_best = log_probs[0].topk(nb).values[-1]
        log_probs[1:] -= (log_probs[1:].max() - nth_best + _uniform(g, 0.1, 1)).clamp(min=0)
        return torch.full((nb,), -_uniform(g, 0.5, 3)), log_probs.round(decimals=2)

    def likely_token_unlikely_beam() -> tuple[torch.Tensor, torch.Tensor]:
        # beam 1 holds the largest log-prob, -0.01 to -0.15, but runs 3 or more behind beam 0, whose every
        # candidate (all above -3) beats all of beam 1's
        log_probs = _log_probs(g, nb, v)
        log_probs[1, _randint(g, 0, v - 1)] = -_uniform(g, 0.01, 0.15)
        ahead = -_uniform(g, 0.1, 1)
        return torch.tensor([ahead] + [ahead - _uniform(g, 3, 5) for _ in range(nb - 1)]), log_probs

    def last_beam_wins() -> tuple[torch.Tensor, torch.Tensor]:  # the last beam runs 3 or more ahead of the others
        behind = -_uniform(g, 4, 8)
        return torch.tensor([behind] * (nb - 1) + [behind + _uniform(g, 3, 4)]), _log_probs(g, nb, v)

    def random_beams() -> tuple[torch.Tensor, torch.Tensor]:
        return -_uniform_tensor(g, (nb,), 0, 3).sort().values, _log_probs(g, nb, v)

    return [
        clear_case(first_step, f"first step: the beams are copies of the prompt and only beam 0 is live (the others "
                   f"start at -1e9), so the {nb} best tokens all extend beam 0"),
        clear_case(one_beam_wins, f"the candidates of all beams compete: beam 0's {nb} best tokens beat the best of "
                   "every other beam"),
        clear_case(likely_token_unlikely_beam, "a candidate's score includes its beam's running score: a likely "
                   "token on an unlikely beam loses"),
        clear_case(last_beam_wins, f"the token is the position within its beam's row, not in the flattened scores: "
                   f"all {nb} best extend beam {nb - 1}"),
        clear_case(random_beams, "random beams"),
    ]


def _beam_step(
    beam_scores: torch.Tensor, log_probs: torch.Tensor, num_beams: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # minigpt.search does this on (B, nb * V) with 2 * num_beams candidates, keeping spares for EOS; without
    # EOS its next beams are these num_beams best
    scores, flat = (beam_scores[:, None] + log_probs).flatten().topk(num_beams)
    vocab_size = log_probs.size(1)
    return scores, flat // vocab_size, flat % vocab_size


def check_beam_search_by_hand(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``beam_search_by_hand(model, prompt_ids, num_beams, steps)`` against ``minigpt.search.beam_search``.

    Starting from ``prompt_ids`` (1, T), run ``steps`` steps of beam search with ``num_beams`` beams (no
    end-of-text: every beam grows by one token per step) and return the final beams as (num_beams, T + steps)
    ids, best first. The hidden cases run on a small random model. A ``seed`` checks on cases drawn from it,
    on a random model drawn from it too.

    >>> result = check_beam_search_by_hand(lambda model, prompt_ids, num_beams, steps: prompt_ids)
    ✗ beam_search_by_hand: hidden case 1 of 4 fails (three beams on a short prompt)
      model = a random GPT (...), prompt_ids = tensor([[1, 2, 3]]), num_beams = 3, steps = 5
      wrong shape: expected (3, 8), got (1, 3)
    ...
    """
    return check("beam_search_by_hand", student, _beam_search_by_hand,
                 cases_for(seed, _by_hand_cases, _drawn_by_hand_cases))


def _by_hand_cases() -> list[Case]:
    model = toy_model(seed=6)
    g = torch.Generator().manual_seed(6)
    settings = [
        (torch.tensor([[1, 2, 3]]), 3, 5, "three beams on a short prompt"),
        (torch.tensor([[7]]), 2, 6, "a one-token prompt: only beam 0 may propose at the first step"),
        (torch.tensor([[4, 20]]), 1, 5, "one beam is greedy decoding"),
        (torch.randint(0, 64, (1, 6), generator=g), 4, 6, "a random prompt"),
    ]
    return [toy_model_case(model, why, prompt_ids=ids, num_beams=nb, steps=steps) for ids, nb, steps, why in settings]


def _beams_by_hand(model: GPT, prompt_ids: torch.Tensor, num_beams: int, steps: int) -> tuple[torch.Tensor, bool]:
    """The final beams (num_beams, T + steps), best first, and whether every step ranked its candidates clearly.

    Beam search written out, without a cache: a correct answer written another way (with a cache, in float64)
    picks the same beams where every step's ``num_beams`` + 1 best candidates are ``MARGIN`` apart.
    """
    beams = prompt_ids.repeat(num_beams, 1)  # (nb, T): copies of the prompt, of which only beam 0 is live
    scores = torch.full((num_beams,), INACTIVE_SCORE)
    scores[0] = 0.0
    clear = True
    for _ in range(steps):
        with torch.no_grad():
            log_probs = model(beams)[:, -1].log_softmax(dim=-1)  # (nb, V)
        clear = clear and _ranks_clearly(scores, log_probs, num_beams)
        scores, parents, tokens = _beam_step(scores, log_probs, num_beams)
        beams = torch.cat([beams[parents], tokens[:, None]], dim=1)
    return beams, clear


def _drawn_by_hand_cases(g: torch.Generator) -> list[Case]:
    model = toy_model(seed=_randint(g, 0, 10_000))

    def draw(length: int, num_beams: int, steps: int, reordered: bool, why: str) -> Case:
        """A prompt of ``length`` random ids whose beams rank clearly at every step and, if ``reordered``, whose
        final beams do not keep the order of their first new tokens: a loop that forgets which beam each
        winner extends keeps that order."""
        while True:
            prompt_ids = torch.randint(0, TOY_CONFIG.vocab_size, (1, length), generator=g)
            beams, clear = _beams_by_hand(model, prompt_ids, num_beams, steps)
            with torch.no_grad():
                first_tokens = model(prompt_ids)[0, -1].topk(num_beams).indices
            if clear and not (reordered and torch.equal(beams[:, length], first_tokens)):
                return toy_model_case(model, why, prompt_ids=prompt_ids, num_beams=num_beams, steps=steps)

    return [
        draw(_randint(g, 2, 4), 3, _randint(g, 4, 6), True, "three beams on a short prompt: the beams change places, "
             "so each winner must extend its own beam"),
        draw(1, 2, _randint(g, 5, 7), False, "a one-token prompt: only beam 0 may propose at the first step"),
        draw(_randint(g, 2, 5), 1, _randint(g, 4, 6), False, "one beam is greedy decoding"),
        draw(_randint(g, 5, 8), 4, _randint(g, 5, 7), False, "a random prompt, four beams"),
    ]


def _beam_search_by_hand(model: GPT, prompt_ids: torch.Tensor, num_beams: int, steps: int) -> torch.Tensor:
    out = beam_search(model, prompt_ids, num_beams=num_beams, max_new_tokens=steps, num_return_sequences=num_beams)
    return out.ids
