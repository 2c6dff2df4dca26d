"""The machinery behind every ``check_…`` function: run a student's function on hidden cases, compare with the library.

A checker never raises because the student's code is wrong: it prints a verdict, ✓ or ✗ with the hidden
input that failed next to what was expected and what came back, and returns it as a ``CheckResult``. A
stub that still raises ``NotImplementedError`` is reported as "not implemented yet", so an exercise
notebook runs top to bottom before any exercise is solved. The student's function works on deep copies of
each input (the model too), so changing them cannot change what later cases expect, and each call has
``TIME_LIMIT_S`` seconds to return. It runs in a forked child process, killed at the limit, so that
neither a bare ``except:`` around a loop nor ``sys.exit()`` nor ``os._exit()`` can hang or end the caller.
A function that returns the right answer but changes one of its inputs in place (``logits[...] = -inf`` on
the caller's tensor) fails too, with a message that says so, unless the library's own function changes that
input as well: the caller's tensor would change under them.

>>> import torch
>>> double = lambda x: 2 * x
>>> result = check("double", double, lambda x: x + x, [Case((torch.tensor([1.0, 2.0]),))])
✓ double: all 1 hidden cases pass
>>> result.passed
True
>>> result = check("double", lambda x: 3 * x, lambda x: x + x, [Case((torch.tensor([1.0, 2.0]),), "small numbers")])
✗ double: hidden case 1 of 1 fails (small numbers)
  x = tensor([1.0, 2.0])
  wrong value at position [0]
  expected: tensor([2.0, 4.0])
  got:      tensor([3.0, 6.0])
"""

from __future__ import annotations

import copy
import gc
import inspect
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from minigpt.exercises.time_limit import TimedOut, call_with_time_limit

NOT_IMPLEMENTED = "not implemented yet: replace `raise NotImplementedError` with your code, then run this cell again"

# Seconds one hidden case may take. The cases are toy-sized (a few milliseconds, a second at most on a slow
# laptop), so only a loop that never ends gets near it, and the student hears about it after 10 s rather than
# staring at a cell that never finishes. Read at each check, so a test can shorten it.
TIME_LIMIT_S = 10.0

# What the student's function may print, in characters, before the rest is dropped: enough for any debugging
# print, and a function that prints in a loop cannot flood the notebook or the grader with output.
OUTPUT_LIMIT = 20_000

# The environment variable that holds an instructor's grading secret (minigpt.exercises.grading). The child
# that runs a student's function removes it before the first call, so the function cannot read it there.
SECRET_VARIABLE = "MINIGPT_GRADING_SECRET"

# Where fork exists (Linux, macOS) each check forks one child that runs the student's function on every case,
# and kills it at the time limit: nothing the function does (a bare ``except:`` around a loop, ``sys.exit()``,
# ``os._exit()``, a crash) can hang or end the student's kernel, and the fork costs a few milliseconds per
# check. Without fork (Windows), or inside a daemonic process (which may not start one), the function runs in
# this process under ``call_with_time_limit`` (minigpt/exercises/time_limit.py): a loop still fails at the
# limit, but a bare ``except:`` can swallow it and ``sys.exit()`` ends the caller's process.
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


@dataclass
class Case:
    """One hidden input: the positional ``args`` for both functions and ``why`` it is a case worth checking.

    ``shown`` replaces the printed arguments when they are too big to read (a model, a long tensor).
    """

    args: tuple
    why: str = ""
    shown: str | None = None
    kwargs: dict = field(default_factory=dict)


class DrawnCases(list):
    """The cases a seed drew (``cases_for``): verdicts call them "drawn cases", not "hidden cases"."""


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one exercise: truthy when every case passed; ``message`` is what ``check`` printed.

    >>> result = CheckResult("add one", True, "✓ add one: all 2 hidden cases pass")
    >>> bool(result), str(result)
    (True, '✓ add one: all 2 hidden cases pass')
    >>> result
    CheckResult(exercise='add one', passed=True)
    """

    exercise: str
    passed: bool
    message: str = field(repr=False)  # printed once by check; a repr that repeated it would show it twice

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def _ipython_display_(self) -> None:
        """Show nothing when the result is a cell's last value: ``check`` has printed the message already.

        Jupyter shows a cell's last value but a plain script does not, so the verdict is printed, which
        both show; without this, Jupyter would show it a second time.
        """


def cases_for(
    seed: int | None, visible: Callable[[], list[Case]], drawn: Callable[[torch.Generator], list[Case]]
) -> list[Case]:
    """A checker's cases: the ``visible`` ones when ``seed`` is None, else ``drawn`` from a generator seeded with it.

    The visible cases are the ones a student practises on (and can read in the package); a seed draws a fresh
    set of the same kinds (random ties, batches, lengths), which is how the hidden tests grade
    (``minigpt.exercises.grading``). The same seed draws the same cases.

    >>> drawn = lambda g: [Case((torch.randint(0, 10, (3,), generator=g),), "random ids")]
    >>> result = check("double", lambda x: 2 * x, lambda x: x + x, cases_for(7, list, drawn))
    ✓ double: all 1 drawn cases pass
    >>> cases_for(None, lambda: [Case((1,), "one")], drawn)[0].args
    (1,)
    >>> torch.equal(cases_for(7, list, drawn)[0].args[0], cases_for(7, list, drawn)[0].args[0])
    True
    >>> cases_for(-1, list, drawn)
    Traceback (most recent call last):
    ...
    ValueError: seed must be None (the visible cases) or an int from 0 to 2**63 - 1, got -1
    """
    if seed is None:
        return visible()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be None (the visible cases) or an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be None (the visible cases) or an int from 0 to 2**63 - 1, got {seed}")
    return DrawnCases(drawn(torch.Generator().manual_seed(seed)))


def check(
    exercise: str,
    student: Callable,
    reference: Callable,
    cases: Sequence[Case],
    *,
    atol: float = 1e-6,
    compare: Callable[[object, object, float], str | None] | None = None,
) -> CheckResult:
    """Run ``student`` and ``reference`` on each case, compare, print the verdict and return it.

    ``compare(expected, got, atol)`` returns None when they agree, else a short reason; the default
    compares tensors exactly in shape, -inf and NaN positions, and to ``atol`` elsewhere. The first case
    that fails (a wrong answer, an exception, no answer within ``TIME_LIMIT_S`` seconds) ends the check.

    >>> result = check("add one", lambda x: x + 1, lambda x: x + 1, [Case((1,)), Case((2,))])
    ✓ add one: all 2 hidden cases pass
    """
    if not callable(student):
        raise TypeError(f"{exercise}: pass your function itself (no parentheses), got {type(student).__name__}")
    result = _run_cases(exercise, student, reference, cases, atol, compare or compare_values)
    print(result.message, flush=True)
    return result


def _run_cases(
    exercise: str,
    student: Callable,
    reference: Callable,
    cases: Sequence[Case],
    atol: float,
    compare: Callable[[object, object, float], str | None],
) -> CheckResult:
    # Every answer comes from pristine inputs: a snapshot taken before the student's code runs (it could
    # reach a shared tensor such as TOY_LOGITS through an import), every expected value computed from it
    # up front, and each function handed a deep copy of its own, so nothing a student's function does to
    # its inputs (a tensor changed in place, a list appended to, a model's weights) reaches another case.
    pristine: list[Case] = copy.deepcopy(list(cases))
    reference_inputs = [(copy.deepcopy(case.args), copy.deepcopy(case.kwargs)) for case in pristine]
    expected = [reference(*args, **kwargs) for args, kwargs in reference_inputs]
    judge = _judge_in_child if _FORK is not None and not multiprocessing.current_process().daemon else _judge_in_process
    failure = judge(student, reference, pristine, expected, reference_inputs, atol, compare, TIME_LIMIT_S)
    kind = "drawn" if isinstance(cases, DrawnCases) else "hidden"
    if failure is None:
        return CheckResult(exercise, True, f"✓ {exercise}: all {len(cases)} {kind} cases pass")
    number, reason = failure
    if reason == NOT_IMPLEMENTED:
        return CheckResult(exercise, False, f"✗ {exercise}: {NOT_IMPLEMENTED}")
    return _failure(exercise, f"{kind} case {number} of {len(cases)}", pristine[number - 1], reference, reason)


def _judge_in_child(
    student: Callable,
    reference: Callable,
    cases: list[Case],
    expected: list,
    reference_inputs: list,
    atol: float,
    compare: Callable[[object, object, float], str | None],
    limit: float,
) -> tuple[int, str] | None:
    """The first case that fails and why (or None), judged in one forked child that is killed at the limit.

    The child is forked after every input and expected answer exists, so it inherits them (nothing is
    pickled on the way in, and a function defined in a notebook needs no pickling either); it runs the cases
    one after the other and sends back one verdict (a short string, or None) per case through a pipe. The
    parent waits at most ``limit`` seconds for each, so neither a loop that never ends, nor an ``except:``
    that swallows everything, nor ``sys.exit()``/``os._exit()``/a crash can keep it from answering.
    """
    reader, writer = _FORK.Pipe(duplex=False)

    def work() -> None:
        reader.close()
        os.environ.pop(SECRET_VARIABLE, None)  # the instructor's secret is not the student's to read
        sys.stdout, sys.stderr = _Bounded(sys.stdout), _Bounded(sys.stderr)
        # one thread: a thread pool the parent started (OpenMP's, for any torch op on more than a few
        # numbers) does not survive the fork, and the child's first parallel op would wait for it forever
        torch.set_num_threads(1)
        gc.freeze()  # a collection in the child skips every inherited object, so it does not copy their pages
        for number, (case, answer, inputs) in enumerate(zip(cases, expected, reference_inputs), 1):
            try:
                reason = _judge_case(student, reference, case, answer, inputs, atol, compare, _call)
            except SystemExit as exit:  # the checker's own process would have ended: a verdict instead
                reason = f"called sys.exit({exit.code!r}), which ends the program: return the answer instead"
            except BaseException as error:  # KeyboardInterrupt, GeneratorExit, a student's own BaseException
                reason = f"raised {type(error).__name__}: {error}"
            sys.stdout.flush()  # what the function printed comes out before the child is gone
            sys.stderr.flush()
            writer.send((number, reason))
            if reason is not None:
                break
        os._exit(0)  # at once: no thread the student started keeps it alive, and nobody waits for it

    worker = _FORK.Process(target=work, name="student function", daemon=True)  # daemon: never outlives us
    worker.start()
    writer.close()  # only the child writes: its end closing (however it ends) makes recv raise EOFError
    answered = False  # True once the child has sent its last verdict and ends itself
    try:
        for number in range(1, len(cases) + 1):
            if not reader.poll(limit):
                return number, _too_slow(limit)
            try:
                _, reason = reader.recv()
            except EOFError:  # the child ended without a verdict: os._exit, a crash, a signal
                worker.join(limit)  # it has ended or is ending; if it has not (it closed the pipe), it is killed
                return number, _how_it_ended(worker.exitcode)
            answered = reason is not None or number == len(cases)
            if reason is not None:
                return number, reason
        return None
    finally:
        reader.close()
        if not answered:  # stuck, or interrupted (Ctrl-C here); one that answered ends itself, and the next
            worker.kill()  # fork, or the interpreter's exit, collects it
            worker.join()


class _Bounded:
    """A text stream that passes on the first ``OUTPUT_LIMIT`` characters written to it, then one note, then nothing.

    >>> import io
    >>> stream = _Bounded(io.StringIO(), limit=5)
    >>> for _ in range(3):
    ...     _ = stream.write("abc")
    >>> print(stream.stream.getvalue(), end="")
    abcab
    [output cut: the function printed more than 5 characters]
    """

    def __init__(self, stream, limit: int | None = None) -> None:
        self.stream = stream
        self.limit = self.left = OUTPUT_LIMIT if limit is None else limit

    def write(self, text: str) -> int:
        if self.left > 0:
            self.stream.write(text[: self.left])
            self.left -= len(text)
            if self.left < 0:
                self.stream.write(f"\n[output cut: the function printed more than {self.limit} characters]\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> object:  # fileno, isatty, encoding: whatever else a caller asks for
        return getattr(self.stream, name)


def _how_it_ended(exitcode: int | None) -> str:
    """Why a child ended without a verdict, from its exit code (negative: the signal that killed it)."""
    if exitcode is None:  # still running, its end of the pipe closed by the student's code
        return "closed the checker's connection to it (os.close?) before it returned an answer"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crashed: the process was killed by {name} before it returned an answer"
    return (f"ended the process with exit code {exitcode} (os._exit?) before it returned an answer: "
            "return the answer instead")


def _judge_in_process(
    student: Callable,
    reference: Callable,
    cases: list[Case],
    expected: list,
    reference_inputs: list,
    atol: float,
    compare: Callable[[object, object, float], str | None],
    limit: float,
) -> tuple[int, str] | None:
    """The first case that fails and why (or None), judged in this process under ``call_with_time_limit``.

    Where there is no fork (Windows) or no child may be started (inside a daemonic process): a loop that
    never ends still fails at the limit, but an ``except:`` that swallows the time limit, ``sys.exit()`` or
    ``os._exit()`` reach the caller's own process.
    """
    def call(function: Callable, args: tuple, kwargs: dict) -> object:
        return call_with_time_limit(function, args, kwargs, seconds=limit)

    for number, (case, answer, inputs) in enumerate(zip(cases, expected, reference_inputs), 1):
        try:
            reason = _judge_case(student, reference, case, answer, inputs, atol, compare, call)
        except TimedOut:
            reason = _too_slow(limit)
        if reason is not None:
            return number, reason
    return None


def _too_slow(limit: float) -> str:
    """The verdict on a function still running at the time limit, whichever way the limit was kept."""
    return f"did not return within {limit:g} s: is there a loop that never ends?"


def _call(function: Callable, args: tuple, kwargs: dict) -> object:
    return function(*args, **kwargs)


def _judge_case(
    student: Callable,
    reference: Callable,
    case: Case,
    answer: object,
    reference_inputs: tuple,
    atol: float,
    compare: Callable[[object, object, float], str | None],
    call: Callable[[Callable, tuple, dict], object],
) -> str | None:
    """None when ``student`` passes ``case``, ``NOT_IMPLEMENTED`` for a stub, else the reason it fails.

    ``call(student, args, kwargs)`` runs the function; ``answer`` and ``reference_inputs`` are the
    reference's answer and its inputs after its own call, to tell which in-place changes are allowed.
    """
    args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
    try:
        got = call(student, args, kwargs)
    except NotImplementedError:
        return NOT_IMPLEMENTED
    except Exception as error:  # the student's bug, reported with the input that triggered it
        return f"raised {type(error).__name__}: {error}"
    try:
        problem = compare(answer, got, atol)
    except Exception as error:  # an answer of a kind no comparison foresaw (a set of lists, say)
        problem = f"returned something that cannot be compared with the answer ({type(error).__name__}: {error})"
    if problem is not None:
        return f"{problem}\n  expected: {show(answer)}\n  got:      {show(got)}"
    changed = _changed_in_place(reference, case, (args, kwargs), reference_inputs)
    if changed is not None:
        name, value = changed
        return (f"returned the right answer but changed its input `{name}` in place: the caller's "
                f"`{name}` is different after the call. {_how_to_leave_alone(name, value)}")
    return None


def _changed_in_place(
    reference: Callable, case: Case, student_inputs: tuple, reference_inputs: tuple
) -> tuple[str, object] | None:
    """The name and value of the first input the student's call changed and the reference's left alone."""
    names = list(inspect.signature(reference).parameters)
    (student_args, student_kwargs), (reference_args, reference_kwargs) = student_inputs, reference_inputs
    before = [*zip(names, case.args), *case.kwargs.items()]
    after_student = [*student_args, *student_kwargs.values()]
    after_reference = [*reference_args, *reference_kwargs.values()]
    for (name, original), mine, theirs in zip(before, after_student, after_reference):
        if not _same(original, mine) and _same(original, theirs):
            return name, original
    return None


def _how_to_leave_alone(name: str, value: object) -> str:
    if isinstance(value, torch.Tensor):
        return (f"Work on a copy (`{name} = {name}.clone()`) or use operations that return a new tensor "
                "(`masked_fill`, not `masked_fill_` or `x[mask] = ...`)")
    if isinstance(value, torch.nn.Module):
        return "A model's weights must come out as they went in: read them, never write them"
    return f"Copy it before changing it (`{name} = copy.deepcopy({name})`)"


def _same(a: object, b: object) -> bool:
    """Whether ``b`` (a deep copy of ``a``, after a call) still holds what ``a`` holds: tensors, containers,
    models' weights and objects' attributes, compared by value."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            return bool(((a == b) | (a.isnan() & b.isnan())).all())
        return torch.equal(a, b)
    if isinstance(a, torch.nn.Module):
        return isinstance(b, torch.nn.Module) and _same(a.state_dict(), b.state_dict())
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (int, float, str, bytes, bool, type(None))):
        return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
    if hasattr(a, "__dict__") and not isinstance(a, type):
        return _same(vars(a), vars(b))
    return True  # a generator, a function: nothing a student's function could have changed by value


def _failure(exercise: str, which: str, case: Case, reference: Callable, reason: str) -> CheckResult:
    why = f" ({case.why})" if case.why else ""
    inputs = case.shown if case.shown is not None else _show_args(reference, case)
    lines = [f"✗ {exercise}: {which} fails{why}", f"  {inputs}"]
    lines += [f"  {line.strip()}" for line in reason.splitlines() if line.strip()]
    return CheckResult(exercise, False, "\n".join(lines))


def _show_args(reference: Callable, case: Case) -> str:
    names = list(inspect.signature(reference).parameters)
    shown = [f"{name} = {show(value)}" for name, value in zip(names, case.args)]
    shown += [f"{name} = {show(value)}" for name, value in case.kwargs.items()]
    return ", ".join(shown)


def compare_values(expected: object, got: object, atol: float) -> str | None:
    """None when ``got`` matches ``expected`` (tensors to ``atol``, numbers to ``atol``, the rest with ==).

    >>> compare_values(torch.tensor([1.0, float("-inf")]), torch.tensor([1.0, 0.0]), 1e-6)
    'wrong value at position [1]'
    """
    if isinstance(expected, torch.Tensor):
        return _compare_tensors(expected, got, atol)
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"expected a {type(expected).__name__}, got a {type(got).__name__}"
        if len(got) != len(expected):
            return f"expected {len(expected)} items, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = compare_values(e, g, atol)
            if problem is not None:
                return f"item {i}: {problem}"
        return None
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()  # a 0-d tensor where a number was asked is fine
    if isinstance(expected, float):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"expected a number, got a {type(got).__name__}"
        same = got == expected or math.isclose(got, expected, rel_tol=0, abs_tol=atol)  # == handles inf
        return None if same else "wrong value"
    if isinstance(expected, int) and not isinstance(expected, bool):
        if isinstance(got, bool) or not isinstance(got, int):
            return f"expected an int, got a {type(got).__name__}"
    return None if got == expected else "wrong value"


def compare_distributions(expected: torch.Tensor, got: object, atol: float) -> str | None:
    """Like ``compare_values``, but first say which row of ``got`` does not sum to 1, the most telling symptom.

    >>> compare_distributions(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 1.0]]), 1e-6)
    'each row must sum to 1, but row 0 sums to 2.0'
    """
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.is_floating_point():
        sums = got.sum(dim=-1).reshape(-1)
        # 1e-4: far above float32 rounding, far below any real mistake; written so that a NaN sum is off
        off = ~((sums - 1).abs() <= 1e-4)
        if off.any():
            row = int(off.nonzero()[0])
            return f"each row must sum to 1, but row {row} sums to {show(sums[row].item())}"
    return compare_values(expected, got, atol)


def _compare_tensors(expected: torch.Tensor, got: object, atol: float) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"expected a tensor, got a {type(got).__name__}"
    if got.shape != expected.shape:
        return f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
    if not expected.is_floating_point():
        wrong = got != expected
    else:
        got = got.to(expected.dtype)
        both_inf = torch.isinf(expected) & (expected == got)
        both_nan = torch.isnan(expected) & torch.isnan(got)
        wrong = ~(both_inf | both_nan | ((expected - got).abs() <= atol))
    if wrong.any():
        first = [int(i) for i in wrong.nonzero()[0]]
        return f"wrong value at position {first}"
    return None


def show(value: object) -> str:
    """A short, readable form of a value: tensors rounded to 4 decimals on one line.

    >>> show(torch.tensor([[0.123456, float('-inf')]]))
    'tensor([[0.1235, -inf]])'
    """
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            value = value.to(torch.float64).round(decimals=4)
            return f"tensor({_format_nested(value.tolist())})"
        return f"tensor({value.tolist()})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(show(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' * (len(value) == 1)})"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        text = f"{value:.4f}".rstrip("0")  # 0.1235, 0.5, 2.
        return text + "0" if text.endswith(".") else text
    return repr(value)


def _format_nested(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_format_nested(v) for v in value) + "]"
    return show(float(value)) if isinstance(value, float) else repr(value)
