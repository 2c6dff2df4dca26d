"""Every exercise checker (minigpt.exercises) accepts correct solutions, rejects the typical wrong answers with a
message that says what went wrong, and reports a stub that still raises NotImplementedError as not implemented.

The answers, right and wrong, live in exercise_answers_sampling.py (chapters 1-4) and
exercise_answers_search.py (chapters 5-8).
"""

from functools import partial

import exercise_answers_sampling as sampling
import exercise_answers_search as search
import pytest
import torch
from exercise_answers_sampling import greedy_generate, top_k_by_indices
from exercise_answers_search import beam_score, beam_search_by_hand, greedy_with_cache, wrong

from minigpt.exercises import beam_search as ch6
from minigpt.exercises import greedy as ch1
from minigpt.exercises import kv_cache as ch7
from minigpt.exercises import top_k as ch3
from minigpt.exercises.checking import NOT_IMPLEMENTED
from minigpt.exercises.models import toy_model
from minigpt.search import beam_search

CORRECT = sampling.CORRECT + search.CORRECT
WRONG = {**sampling.WRONG, **search.WRONG}
CHECKERS = sorted({checker for checker, _ in CORRECT}, key=lambda c: c.__module__ + c.__name__)


def test_every_checker_is_tested():
    import importlib
    import inspect
    import pkgutil

    import minigpt.exercises

    every = {f for info in pkgutil.iter_modules(minigpt.exercises.__path__)
             for name, f in inspect.getmembers(importlib.import_module(f"minigpt.exercises.{info.name}"))
             if name.startswith("check_")}
    assert every == set(CHECKERS)
    assert every == {checker for checker, _, _ in WRONG.values()}


@pytest.mark.parametrize("checker, solution", CORRECT, ids=lambda x: getattr(x, "__name__", ""))
def test_checker_accepts_a_correct_solution(checker, solution):
    result = checker(solution)
    assert result, result.message
    assert result.message.startswith("✓ ")


@pytest.mark.parametrize("checker, answer, reason", WRONG.values(), ids=WRONG.keys())
def test_checker_rejects_a_typical_wrong_answer(checker, answer, reason):
    result = checker(answer)
    assert not result
    assert result.message.startswith("✗ ")
    assert reason in result.message
    assert "expected" in result.message or "raised" in result.message


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_a_stub_is_not_implemented_yet(checker):
    def stub(*args):
        raise NotImplementedError

    result = checker(stub)
    assert not result
    assert result.message == f"✗ {checker.__name__.removeprefix('check_')}: {NOT_IMPLEMENTED}"


def test_failure_shows_the_input_expected_and_got():
    assert ch3.check_top_k_filter(top_k_by_indices).message.splitlines() == [
        "✗ top_k_filter: hidden case 3 of 8 fails (a tie at the k-th largest logit: both tied tokens must be kept)",
        "  logits = tensor([[3.0, 2.0, 2.0, 1.0]]), k = 2",
        "  wrong value at position [0, 2]",
        "  expected: tensor([[3.0, 2.0, 2.0, -inf]])",
        "  got:      tensor([[3.0, 2.0, -inf, -inf]])",
    ]
    assert ch6.check_beam_score(wrong(beam_score, penalty=False)).message.splitlines() == [
        "✗ beam_score: hidden case 2 of 6 fails (length_penalty 1: divide by the number of NEW tokens, 8 - 5 = 3; "
        "the prompt does not count)",
        "  sum_logprobs = -6.0, sequence_length = 8, prompt_length = 5, length_penalty = 1.0",
        "  wrong value",
        "  expected: -2.0",
        "  got:      -6.0",
    ]


@pytest.mark.parametrize("checker, answer", [
    (ch1.check_greedy_generate, partial(greedy_generate, position=0)),
    (ch7.check_greedy_with_cache, wrong(greedy_with_cache, positions="zero")),
])
def test_a_model_case_is_described_not_printed(checker, answer):
    message = checker(answer).message
    assert "model = a random GPT (vocabulary of 64 tokens" in message
    assert "GPT(" not in message  # no module repr


def test_checkers_leave_the_global_random_state_alone():
    state = torch.get_rng_state()
    ch1.check_greedy_generate(greedy_generate)
    ch6.check_beam_search_by_hand(beam_search_by_hand)
    ch7.check_greedy_with_cache(greedy_with_cache)
    assert torch.equal(torch.get_rng_state(), state)


def test_beam_score_reference_is_what_beam_search_ranks_by():
    """The formula behind check_beam_score reproduces the scores beam_search reports for finished hypotheses."""
    model = toy_model(seed=6)
    prompt = torch.tensor([[1, 2, 3]])
    out = beam_search(model, prompt, num_beams=3, max_new_tokens=6, eos_token_id=23, length_penalty=0.5,
                      num_return_sequences=3)
    assert any(len(new) < 6 for new in out.new_tokens)  # some hypotheses ended early at EOS: lengths differ
    for new, score in zip(out.new_tokens, out.scores.tolist()):
        ids = torch.tensor([prompt[0].tolist() + new])
        with torch.no_grad():
            log_probs = model(ids[:, :-1])[0, 2:].log_softmax(dim=-1)  # rows predicting each new token
        total = log_probs.gather(1, torch.tensor(new)[:, None]).sum().item()
        assert ch6._beam_score(total, ids.size(1), prompt.size(1), 0.5) == pytest.approx(score, abs=1e-4)
