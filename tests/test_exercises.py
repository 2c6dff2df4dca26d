"""Every exercise checker (minigpt.exercises) accepts correct solutions, rejects the typical wrong answers with a
message that says what went wrong, and reports a stub that still raises NotImplementedError as not implemented.
A student's function cannot hang a check (time limit) or change later cases (it works on copies), and every
check prints its verdict once, in a script as in Jupyter.

The answers, right and wrong, live in the tests/exercise_answers_*.py files, a few chapters each: every one
defines ``CORRECT`` and ``WRONG``. Each checker also draws cases from a seed (the hidden tests grade with
them): a correct answer passes every drawn set, and each typical wrong answer fails every one.
"""

import importlib
import signal
import threading
import time
from functools import partial
from pathlib import Path

import exercise_answers_sampling as sampling
import pytest
import torch
from exercise_answers_sampling import greedy_generate, top_k_by_indices
from exercise_answers_search import beam_score, beam_search_by_hand, greedy_with_cache, wrong

from minigpt.exercises import beam_search as ch6
from minigpt.exercises import checking
from minigpt.exercises import greedy as ch1
from minigpt.exercises import kv_cache as ch7
from minigpt.exercises import loop as ch5
from minigpt.exercises import top_k as ch3
from minigpt.exercises import top_p as ch4
from minigpt.exercises.checking import NOT_IMPLEMENTED, Case, check
from minigpt.exercises.models import toy_model
from minigpt.exercises.time_limit import TimedOut, call_with_time_limit
from minigpt.search import beam_search

ANSWERS = [importlib.import_module(path.stem) for path in sorted(Path(__file__).parent.glob("exercise_answers_*.py"))]
CORRECT = [pair for answers in ANSWERS for pair in answers.CORRECT]
WRONG = {name: wrong for answers in ANSWERS for name, wrong in answers.WRONG.items()}
DRAWN_SEEDS = range(3)  # the generic tests; each checker's drawn cases were tried on 100 seeds when written
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


@pytest.mark.parametrize("checker, solution", CORRECT, ids=lambda x: getattr(x, "__name__", ""))
def test_drawn_cases_accept_a_correct_solution(checker, solution):
    for seed in DRAWN_SEEDS:
        result = checker(solution, seed=seed)
        assert result, f"seed {seed}: {result.message}"
        assert result.message.startswith("✓ ") and " drawn cases pass" in result.message


@pytest.mark.parametrize("checker, answer, reason", WRONG.values(), ids=WRONG.keys())
def test_drawn_cases_reject_every_typical_wrong_answer(checker, answer, reason):
    for seed in DRAWN_SEEDS:
        result = checker(answer, seed=seed)
        assert not result, f"seed {seed} let a wrong answer pass"
        assert result.message.startswith(f"✗ {checker.__name__.removeprefix('check_')}: drawn case ")
        assert "expected" in result.message or "raised" in result.message


def test_the_same_seed_draws_the_same_cases_and_another_seed_others(capsys):
    seen = []
    answer = sampling.WRONG[next(name for name, wrong in sampling.WRONG.items() if wrong[0] is ch3.check_top_k_filter)]
    for seed in (1, 1, 2):
        ch3.check_top_k_filter(answer[1], seed=seed)
        seen.append(capsys.readouterr().out)
    assert seen[0] == seen[1] != seen[2]


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (2**63, ValueError), (1.5, TypeError), (True, TypeError)])
def test_a_bad_seed_is_refused_with_what_is_allowed(seed, error):
    with pytest.raises(error, match=f"seed must be None \\(the visible cases\\) or an int.*got .*{seed}"):
        ch3.check_top_k_filter(ch3.top_k_filter, seed=seed)


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


# ---- printing: the verdict shows once, in a script as in Jupyter ----


def test_a_check_prints_its_verdict_once_and_returns_it(capsys):
    result = ch3.check_top_k_filter(top_k_by_indices)
    assert capsys.readouterr().out == result.message + "\n"  # a script shows it: nothing else prints for it
    assert not result and str(result) == result.message
    assert repr(result) == "CheckResult(exercise='top_k_filter', passed=False)"  # the REPL does not repeat it


def test_jupyter_does_not_show_the_printed_verdict_a_second_time():
    formatters = pytest.importorskip("IPython.core.formatters")
    result = ch6.check_beam_score(beam_score)
    # what Jupyter shows for a cell's last value: nothing, where a plain object would show its text/plain
    assert formatters.DisplayFormatter().format(result) == ({}, {})
    assert "text/plain" in formatters.DisplayFormatter().format(object())[0]


# ---- the time limit: a function that never returns fails its check ----


def loops_forever(*args):
    while True:
        pass


def swallows_every_exception(*args):
    while True:
        try:
            time.sleep(0.01)
        except Exception:  # TimedOut is not an Exception, like KeyboardInterrupt
            pass


@pytest.mark.parametrize("student", [loops_forever, swallows_every_exception], ids=lambda f: f.__name__)
def test_a_function_that_never_returns_fails_after_the_time_limit(student, monkeypatch):
    monkeypatch.setattr(checking, "TIME_LIMIT_S", 0.2)
    start = time.perf_counter()
    result = ch1.check_greedy_generate(student)
    assert time.perf_counter() - start < 5
    assert not result
    assert result.message.splitlines()[0].startswith("✗ greedy_generate: hidden case 1 of 4 fails")
    assert "did not return within 0.2 s" in result.message
    assert "model = a random GPT" in result.message  # the input it was stuck on


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="SIGALRM is Unix-only")
def test_the_time_limit_leaves_no_alarm_behind(monkeypatch):
    monkeypatch.setattr(checking, "TIME_LIMIT_S", 0.2)
    handler = signal.getsignal(signal.SIGALRM)
    assert not ch1.check_greedy_next_token(loops_forever)
    assert ch1.check_greedy_next_token(lambda logits: logits.argmax(dim=-1))
    assert signal.getsignal(signal.SIGALRM) is handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_slow_function_within_the_limit_passes(monkeypatch):
    monkeypatch.setattr(checking, "TIME_LIMIT_S", 2.0)

    def slow_argmax(logits):
        time.sleep(0.05)
        return logits.argmax(dim=-1)

    assert ch1.check_greedy_next_token(slow_argmax)


def test_the_time_limit_works_outside_the_main_thread(monkeypatch, tmp_path):
    """A check started from a thread answers at the limit too, and the abandoned loop is stopped."""
    monkeypatch.setattr(checking, "TIME_LIMIT_S", 0.2)
    log = tmp_path / "steps"  # the function may run in another process: it counts its steps in a file

    def loops_in_small_steps(logits):
        while True:
            with log.open("a") as file:
                file.write(".")
            time.sleep(0.01)

    def steps():
        return len(log.read_text()) if log.exists() else 0

    results = []
    thread = threading.Thread(target=lambda: results.append(ch1.check_greedy_next_token(loops_in_small_steps)))
    thread.start()
    thread.join(10)
    assert "did not return within 0.2 s" in results[0].message
    time.sleep(0.1)
    count = steps()
    time.sleep(0.1)
    assert steps() == count > 0  # the abandoned loop was stopped, not left running in the background


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="SIGALRM is Unix-only")
def test_an_alarm_set_by_someone_else_is_left_alone():
    rang = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: rang.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        with pytest.raises(TimedOut, match="did not return within 0.1 s"):
            call_with_time_limit(swallows_every_exception, seconds=0.1)
        assert 29 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30  # still running, not reset or cancelled
        assert signal.getsignal(signal.SIGALRM) is not previous and not rang
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_exceptions_come_through_the_time_limit():
    with pytest.raises(ZeroDivisionError):
        call_with_time_limit(lambda: 1 / 0, seconds=1.0)


# ---- copies: nothing a student's function changes reaches another case ----


def test_expected_answers_come_from_pristine_inputs(capsys):
    model = toy_model(seed=1)
    weight_sum = model.lm_head.weight.sum().item()
    logits, ids, options = torch.tensor([[1.0, 2.0]]), [1, 2], {"k": 3}
    seen = []

    def reference(model, logits, ids, options):
        seen.append((model.lm_head.weight.sum().item(), logits.tolist(), list(ids), dict(options)))
        return (logits.sum() + len(ids) + options["k"]).item()

    def answers_then_vandalises(model, logits, ids, options):
        answer = (logits.sum() + len(ids) + options["k"]).item()
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        logits.mul_(100)
        ids.append(99)
        options["k"] = 0
        return answer

    result = check("vandal", answers_then_vandalises, reference, [Case((model, logits, ids, options))] * 3)
    assert not result and "changed its input `model` in place" in result.message  # the first input it changed
    assert seen == [(weight_sum, [[1.0, 2.0]], [1, 2], {"k": 3})] * 3
    assert model.lm_head.weight.sum().item() == weight_sum and logits.tolist() == [[1.0, 2.0]]
    assert ids == [1, 2] and options == {"k": 3}


def test_a_student_cannot_pass_by_changing_the_model():
    """A wrong loop that answers the first case right and then zeroes the model's weights: a zeroed model picks
    token 0 every time, so had later cases shared that model, their expected answers would have become the
    zero-padded prompts this function returns, and it would pass."""
    calls = []

    def zeroes_the_model_then_pads_with_zeros(model, ids, max_new_tokens):
        calls.append(None)
        if len(calls) > 1:
            return torch.cat([ids, torch.zeros(ids.size(0), max_new_tokens, dtype=torch.long)], dim=1)
        answer = greedy_generate(model, ids, max_new_tokens)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return answer

    result = ch1.check_greedy_generate(zeroes_the_model_then_pads_with_zeros)
    assert result.message.splitlines()[0].startswith("✗ greedy_generate: hidden case 1 of 4 fails")
    assert result.message.splitlines()[2] == (
        "  returned the right answer but changed its input `model` in place: the caller's `model` is different "
        "after the call. A model's weights must come out as they went in: read them, never write them")


def test_an_answer_that_cannot_be_compared_is_a_failure_not_a_crash():
    result = ch5.check_banned_ngram_tokens(lambda ids, n: [[3]])  # set() of a list of lists raises TypeError
    assert not result
    assert "returned something that cannot be compared" in result.message


# ---- a function that changes its input in place fails, with a message that says so ----


def _min_p_in_place(logits, min_p):
    probs = torch.softmax(logits, dim=-1)
    logits[probs < min_p * probs.max(dim=-1, keepdim=True).values] = float("-inf")  # the caller's tensor
    return logits


def test_a_right_answer_that_changes_its_input_in_place_fails():
    result = ch4.check_min_p_filter(_min_p_in_place)
    assert not result
    assert result.message.splitlines()[2] == (
        "  returned the right answer but changed its input `logits` in place: the caller's `logits` is different "
        "after the call. Work on a copy (`logits = logits.clone()`) or use operations that return a new tensor "
        "(`masked_fill`, not `masked_fill_` or `x[mask] = ...`)")
    assert ch4.check_min_p_filter(lambda logits, min_p: _min_p_in_place(logits.clone(), min_p))


def test_an_input_the_library_itself_changes_may_change():
    def append(items, x):  # the reference changes its list too: that is the exercise's contract
        items.append(x)
        return len(items)

    assert check("append", append, append, [Case(([1, 2], 3))])
    assert not check("append", lambda items, x: append(list(items), x) and append(items, x) - 1,
                     lambda items, x: len(items) + 1, [Case(([1, 2], 3))])


# ---- nothing a student's function does takes the checker down: it runs in a child that is killed at the limit ----

needs_fork = pytest.mark.skipif(checking._FORK is None, reason="no fork here: the function runs in this process")


def swallows_everything(*args):
    while True:
        try:
            time.sleep(0.01)
        except:  # noqa: E722 - the student's bare except, which catches the time limit itself
            pass


def exits(*args):
    import sys

    sys.exit(0)


def exits_at_once(*args):
    import os

    os._exit(3)


def kills_itself(*args):
    import os

    os.kill(os.getpid(), signal.SIGKILL)


@needs_fork
@pytest.mark.parametrize("student, reason", [
    (swallows_everything, "did not return within 0.3 s: is there a loop that never ends?"),
    (exits, "called sys.exit(0), which ends the program: return the answer instead"),
    (exits_at_once, "ended the process with exit code 3 (os._exit?) before it returned an answer: "
                    "return the answer instead"),
    (kills_itself, "crashed: the process was killed by SIGKILL before it returned an answer"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_a_function_that_would_end_the_checker_gets_a_verdict(student, reason, monkeypatch):
    monkeypatch.setattr(checking, "TIME_LIMIT_S", 0.3)
    start = time.perf_counter()
    result = ch3.check_top_k_filter(student)
    assert time.perf_counter() - start < 5
    assert result.message.splitlines() == [
        "✗ top_k_filter: hidden case 1 of 8 fails (k = 3: keep 'forward', 'toward' and 'closer', the 3rd largest "
        "included)",
        "  logits = tensor([[4.51, 0.89, -1.9, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]]), k = 3",
        f"  {reason}",
    ]


@needs_fork
def test_the_verdict_names_the_case_the_function_stopped_on(monkeypatch):
    monkeypatch.setattr(checking, "TIME_LIMIT_S", 0.3)
    from minigpt.logits import top_k_filter

    def hangs_on_the_tie(logits, k):
        if logits.size(-1) == 4:  # case 3, the tie
            swallows_everything()
        return top_k_filter(logits, k)

    result = ch3.check_top_k_filter(hangs_on_the_tie)
    assert result.message.splitlines()[0].startswith("✗ top_k_filter: hidden case 3 of 8 fails (a tie")
    assert result.message.splitlines()[-1] == "  did not return within 0.3 s: is there a loop that never ends?"


def test_without_fork_the_function_runs_here_under_the_time_limit(monkeypatch):
    """Windows has no fork: the function runs in the checker's process, a loop still fails at the limit."""
    monkeypatch.setattr(checking, "_FORK", None)
    monkeypatch.setattr(checking, "TIME_LIMIT_S", 0.2)
    calls = []

    def counts_then_loops(logits):
        calls.append(None)
        loops_forever()

    result = ch1.check_greedy_next_token(counts_then_loops)
    assert "did not return within 0.2 s" in result.message
    assert calls == [None]  # it ran in this process
    assert ch4.check_min_p_filter(lambda logits, min_p: _min_p_in_place(logits.clone(), min_p))
    assert "changed its input `logits` in place" in ch4.check_min_p_filter(_min_p_in_place).message
