"""Answers to the exercises of chapter 10 (constrained decoding) for tests/test_exercises.py.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see.
"""

from functools import partial

import torch

from minigpt.constrained import TokenIndex, compile_regex
from minigpt.exercises import constrained as ch10
from minigpt.kv_cache import KVCache


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


def constrained_generate(model, prompt_ids, pattern, strings, end_token_id, max_new_tokens, generator=None, *,
                         bug=None):
    """The loop the exercise asks for; ``bug`` names a typical mistake to make instead."""
    dfa = compile_regex(pattern)
    ids, new, state = list(prompt_ids), [], dfa.start
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1]  # (V,)
        ok = allowed(dfa, state, strings)
        if state in dfa.accepting and bug not in ("no end token", "stops at the first match"):
            ok = ok + [end_token_id]
        if bug == "stops at the first match" and state in dfa.accepting:
            break  # the end token is the model's choice, not the loop's
        if not ok:  # only with the "no end token" bug: a finished date has nothing left
            ok = [0]
        masked = torch.full_like(logits, float("-inf"))
        masked[ok] = logits[ok]
        if bug == "masks after sampling" and generator is not None:
            token = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
            if token not in ok:
                token = int(masked.argmax())  # replaced by the best allowed token
        elif generator is None or bug == "always greedy":
            token = int(masked.argmax())
        else:
            token = int(torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=generator))
        new.append(token)
        ids.append(token)
        if token == end_token_id:
            if bug == "never stops":
                continue  # the machine stays where it was, and the loop goes on
            break
        if bug != "forgets to advance the state":
            state = walk(dfa, strings[token], state)
            if state is None:
                break
    return new


def constrained_generate_differently(model, prompt_ids, pattern, strings, end_token_id, max_new_tokens,
                                     generator=None):
    """Right, but written another way: the precomputed index, a KV cache, a (1, V) batch, the softmax in float64."""
    index = TokenIndex(compile_regex(pattern), strings)
    cache = KVCache.for_model(model, 1)
    fresh, state, new = torch.tensor([prompt_ids]), index.dfa.start, []
    for _ in range(max_new_tokens):
        positions = torch.arange(cache.length, cache.length + fresh.size(1))[None]
        with torch.no_grad():
            logits = model(fresh, kv_cache=cache, position_ids=positions)[:, -1].double()  # (1, V)
        ok = index.allowed(state).tolist() + ([end_token_id] if state in index.dfa.accepting else [])
        mask = torch.full_like(logits, float("-inf"))
        mask[0, ok] = 0.0
        scores = logits + mask
        if generator is None:
            token = int(scores.argmax(dim=-1))
        else:
            token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)[0])
        new.append(token)
        if token == end_token_id:
            break
        state = index.next_state[state][token]
        fresh = torch.tensor([[token]])
    return new


CORRECT = [(ch10.check_walk, walk), (ch10.check_allowed_tokens, allowed),
           (ch10.check_constrained_generate, constrained_generate),
           (ch10.check_constrained_generate, constrained_generate_differently)]
WRONG = {
    "walk reads only the first character": (ch10.check_walk, walk_first_char_only, "not just the first"),
    "walk returns the state before dying": (ch10.check_walk, walk_returns_last_live_state, "None"),
    "mask checks only the first character": (ch10.check_allowed_tokens, allowed_first_char_only, "' x' dies"),
    "mask keeps only tokens that finish a match": (ch10.check_allowed_tokens, allowed_only_full_matches, "and ' ' only"),
    "constrained loop forgets to advance the state": (
        ch10.check_constrained_generate, partial(constrained_generate, bug="forgets to advance the state"),
        "leaves the pattern"),
    "constrained loop draws from the whole softmax, then masks": (
        ch10.check_constrained_generate, partial(constrained_generate, bug="masks after sampling"), "not the library's"),
    "constrained loop never stops at the end token": (
        ch10.check_constrained_generate, partial(constrained_generate, bug="never stops"), "the loop must stop"),
    "constrained loop never allows the end token": (
        ch10.check_constrained_generate, partial(constrained_generate, bug="no end token"), "leaves the pattern"),
    "constrained loop stops at the first match": (
        ch10.check_constrained_generate, partial(constrained_generate, bug="stops at the first match"), "tokens where"),
    "constrained loop ignores the generator": (
        ch10.check_constrained_generate, partial(constrained_generate, bug="always greedy"), "not the library's"),
}
