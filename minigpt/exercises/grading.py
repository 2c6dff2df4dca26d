"""Hidden tests for nbgrader: run a checker on cases drawn from the instructor's secret, and fail the cell if one fails.

A check cell in an exercise notebook calls ``check_top_k_filter(top_k_filter)``: the visible cases, which a
student can read in the package and practise on, and which never raise. The same cell in the instructor's
source (``notebooks/solutions/``) ends in a hidden test, which ``nbgrader generate_assignment`` removes from
the student's notebook and ``nbgrader autograde`` puts back::

    ### BEGIN HIDDEN TESTS
    from minigpt.exercises.grading import grade
    grade(check_top_k_filter, top_k_filter)
    ### END HIDDEN TESTS

``grade`` runs the same checker on cases of the same kinds drawn from a seed that only the instructor can
make: one per exercise, derived from the secret in the ``MINIGPT_GRADING_SECRET`` environment variable
(docs/teaching.md). A failing case is shown as the visible checks show it (the input, expected and got), so
the feedback teaches; the secret is not shown, nor is the seed of one exercise any help with another's. It
raises ``HiddenTestFailed`` when a case fails, which is how nbgrader scores the cell 0.

Without a secret (a student running the solutions, or CI) the cases come from the public ``PRACTICE_SECRET``,
and the verdict says so: grading with it would grade on cases anybody can draw.

>>> from minigpt.exercises.top_k import check_top_k_filter
>>> from minigpt.logits import top_k_filter
>>> result = grade(check_top_k_filter, top_k_filter, secret="a phrase only the instructor knows")
✓ top_k_filter: all 8 drawn cases pass
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from minigpt.exercises.checking import SECRET_VARIABLE, CheckResult

PRACTICE_SECRET = "practice"  # public: what the hidden tests draw from when no secret is set
NO_SECRET = (f"  (practice cases: {SECRET_VARIABLE} is not set, so these are cases anybody can draw; "
             "docs/teaching.md says how to grade)")


class HiddenTestFailed(AssertionError):
    """A hidden test's verdict: the student's function failed a case drawn from the instructor's secret."""


def exercise_seed(secret: str, exercise: str) -> int:
    """The seed that draws ``exercise``'s hidden cases: a hash of the secret and the exercise's name.

    A hash, so that neither a seed nor the cases it draws tell anything about the secret or another
    exercise's seed.

    >>> exercise_seed("swordfish", "top_k_filter") == exercise_seed("swordfish", "top_k_filter")
    True
    >>> exercise_seed("swordfish", "top_k_filter") == exercise_seed("swordfish", "top_k_probs")
    False
    >>> 0 <= exercise_seed("swordfish", "top_k_filter") < 2**63
    True
    """
    digest = hashlib.sha256(f"minigpt hidden cases\0{secret}\0{exercise}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: any torch.Generator seed


def grade(checker: Callable[..., CheckResult], student: Callable, *, secret: str | None = None) -> CheckResult:
    """Run ``checker`` on ``student`` with the hidden cases; raise ``HiddenTestFailed`` when one fails.

    ``secret`` defaults to the ``MINIGPT_GRADING_SECRET`` environment variable, then to ``PRACTICE_SECRET``.

    >>> from minigpt.exercises.top_k import check_top_k_filter
    >>> try:
    ...     grade(check_top_k_filter, lambda logits, k: logits, secret="swordfish")
    ... except HiddenTestFailed as error:
    ...     print("raised:", error)  # doctest: +ELLIPSIS
    ✗ top_k_filter: drawn case 1 of 8 fails (...)
    ...
    raised: top_k_filter fails a hidden case: the verdict above shows which
    """
    if not callable(checker) or not checker.__name__.startswith("check_"):
        raise TypeError(f"checker must be one of minigpt.exercises' check_… functions, got {checker!r}")
    exercise = checker.__name__.removeprefix("check_")
    result = checker(student, seed=exercise_seed(_secret(secret), exercise))
    if secret is None and SECRET_VARIABLE not in os.environ:
        print(NO_SECRET)
    if not result:
        raise HiddenTestFailed(f"{exercise} fails a hidden case: the verdict above shows which")
    return result


def _secret(secret: str | None) -> str:
    """The instructor's secret, read where it is needed so that no caller's frame holds it."""
    if secret is None:
        secret = os.environ.get(SECRET_VARIABLE, PRACTICE_SECRET)
    if not isinstance(secret, str) or not secret:
        raise ValueError(f"secret must be a non-empty string, got {secret!r}")
    return secret
