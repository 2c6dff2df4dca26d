"""Answers to the exercises of chapter 10 (constrained decoding) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

from minigpt.exercises import constrained as ch10


def walk(dfa, text, state):
    for ch in text:
        state = dfa.transitions[state].get(ch)
        if state is None or state not in dfa.live:
            return None
    return state


def walk_first_char_only(dfa, text, state):
    return dfa.transitions[state].get(text[0]) if text else state


def walk_returns_last_live_state(dfa, text, state):
    for ch in text:
        nxt = dfa.transitions[state].get(ch)
        if nxt is None:
            return state
        state = nxt
    return state


def allowed(dfa, state, strings):
    return [i for i, s in enumerate(strings) if s and walk(dfa, s, state) is not None]


def allowed_first_char_only(dfa, state, strings):
    return [i for i, s in enumerate(strings) if s and s[0] in dfa.transitions[state]]


def allowed_only_full_matches(dfa, state, strings):
    return [i for i, s in enumerate(strings) if s and walk(dfa, s, state) in dfa.accepting]


CORRECT = [(ch10.check_walk, walk), (ch10.check_allowed_tokens, allowed)]
WRONG = {
    "walk reads only the first character": (ch10.check_walk, walk_first_char_only, "not just the first"),
    "walk returns the state before dying": (ch10.check_walk, walk_returns_last_live_state, "None"),
    "mask checks only the first character": (ch10.check_allowed_tokens, allowed_first_char_only, "' x' dies"),
    "mask keeps only tokens that finish a match": (ch10.check_allowed_tokens, allowed_only_full_matches, "and ' ' only"),
}
