"""Checkers for chapter 10, constrained decoding (``notebooks/exercises/10_constrained_decoding_exercises.ipynb``).

Two exercises: walking a regular expression's machine over a text, and the regex mask (which tokens keep the
machine alive from a state).

>>> from minigpt.constrained import allowed_tokens
>>> result = check_walk(lambda dfa, text, state: dfa.walk(text, state))
✓ walk: all 5 hidden cases pass
>>> result = check_allowed_tokens(allowed_tokens)
✓ allowed_tokens: all 5 hidden cases pass
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from minigpt.constrained import DFA, allowed_tokens, compile_regex
from minigpt.exercises.checking import Case, CheckResult, check

NUMBER = r" [0-9]+(\.[0-9]+)?"
DATE = r"[0-3]?[0-9]/[01]?[0-9]"
ANSWER = r"(yes|no)!?"
TOKENS = [" 1", " 12", " x", "12", ".", ".5", "5", " ", "yes", "y", "no!", "nope", "/", "3/", "1/1", None, "x", "1a"]


def check_walk(student: Callable[[DFA, str, int], int | None]) -> CheckResult:
    """Check ``walk(dfa, text, state)``: the state after reading ``text`` from ``state``, or None once it dies.

    ``dfa.transitions[s]`` maps a character to the next state; a missing character kills the machine (and
    a state not in ``dfa.live`` is as good as dead).

    >>> def only_first_char(dfa, text, state):
    ...     return dfa.transitions[state].get(text[0]) if text else state
    >>> result = check_walk(only_first_char)
    ✗ walk: hidden case 2 of 5 fails (' 12' from the start: every character counts, not just the first)
      dfa = compile_regex(' [0-9]+(\\\\.[0-9]+)?'), text = ' 12', state = 0
      wrong value
      expected: 2
      got:      1
    """
    return check("walk", student, _walk, _walk_cases())


def check_allowed_tokens(student: Callable[[DFA, int, Sequence[str | None]], list[int]]) -> CheckResult:
    """Check ``allowed_tokens(dfa, state, strings)``: the sorted ids whose whole string keeps ``dfa`` alive.

    A token is allowed when reading all its characters from ``state`` never kills the machine; ``None``
    strings (no text of their own) are never allowed.

    >>> def first_char_only(dfa, state, strings):
    ...     return [i for i, s in enumerate(strings) if s and s[0] in dfa.transitions[state]]
    >>> result = check_allowed_tokens(first_char_only)
    ✗ allowed_tokens: hidden case 1 of 5 fails (a number from the start: ' 1', ' 12' and ' ' only; ' x' dies at 'x')
      dfa = compile_regex(' [0-9]+(\\\\.[0-9]+)?'), state = 0, strings = 18 token strings
      expected 3 items, got 4
      expected: [0, 1, 7]
      got:      [0, 1, 2, 7]
    """
    return check("allowed_tokens", student, allowed_tokens, _mask_cases())


def _walk(dfa: DFA, text: str, state: int) -> int | None:
    return dfa.walk(text, state)


def _shown(pattern: str, *rest: str) -> str:
    return ", ".join([f"dfa = compile_regex({pattern!r})", *rest])


def _walk_cases() -> list[Case]:
    number, date, answer = compile_regex(NUMBER), compile_regex(DATE), compile_regex(ANSWER)
    return [
        Case((number, "", 0), "the empty text leaves the machine where it is",
             _shown(NUMBER, "text = ''", "state = 0")),
        Case((number, " 12", 0), "' 12' from the start: every character counts, not just the first",
             _shown(NUMBER, "text = ' 12'", "state = 0")),
        Case((number, "12", 0), "'12' without its space dies at once: None",
             _shown(NUMBER, "text = '12'", "state = 0")),
        Case((date, "1/", 2), "from the middle of a date: start where you are told",
             _shown(DATE, "text = '1/'", "state = 2")),
        Case((answer, "yes!x", 0), "dies at the last character: None, not the state before",
             _shown(ANSWER, "text = 'yes!x'", "state = 0")),
    ]


def _mask_cases() -> list[Case]:
    number, date, answer = compile_regex(NUMBER), compile_regex(DATE), compile_regex(ANSWER)
    shown = f"strings = {len(TOKENS)} token strings"
    return [
        Case((number, 0, TOKENS), "a number from the start: ' 1', ' 12' and ' ' only; ' x' dies at 'x'",
             _shown(NUMBER, "state = 0", shown)),
        Case((number, number.walk(" 3"), TOKENS), "after ' 3': digits, '.', '.5', but no space",
             _shown(NUMBER, "state = dfa.walk(' 3')", shown)),
        Case((date, 0, TOKENS), "tokens that cross a '/' stay alive: '3/' and '1/1'", _shown(DATE, "state = 0", shown)),
        Case((answer, 0, TOKENS), "'no!' reaches the end and is allowed; 'nope' dies; None is never allowed",
             _shown(ANSWER, "state = 0", shown)),
        Case((answer, answer.walk("yes!"), TOKENS), "a finished answer: no token can follow, the list is empty",
             _shown(ANSWER, "state = dfa.walk('yes!')", shown)),
    ]
