"""Constrained decoding: force the output into a shape (a choice, a date, a number, a JSON object).

Two tools, both built by hand in chapter 10:

- ``choice_logprobs``: classification by constrained choice. Each option's full token sequence is scored
  after the prompt (the sum of its tokens' log-probabilities), so options of several tokens compete fairly.
- a regular expression compiled into a finite-state machine over characters (``compile_regex`` → ``DFA``),
  turned into a mask over GPT-2's 50,257 token strings (``allowed_tokens``: a token is allowed when its
  characters keep the machine alive), precomputed for every state (``TokenIndex``) so that a decoding step
  is a lookup, and handed to ``minigpt.generate`` as its ``prefix_allowed_tokens_fn``
  (``regex_allowed_tokens_fn``).

>>> dfa = compile_regex("[0-9]+")
>>> dfa.matches("2024"), dfa.matches("20a4")
(True, False)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minigpt.model import GPT
from minigpt.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, encode, gpt2_encoding

# ---- classification by constrained choice ----


@torch.inference_mode()
def choice_logprobs(model: GPT, prompt: str, options: Sequence[str]) -> torch.Tensor:
    """log p(option | prompt) for each option: the sum of the log-probs of all its tokens, in one batched pass.

    Each row is the prompt's tokens followed by one option's tokens (``encode(prompt) + encode(option)``,
    the tokens a decoder restricted to the options would produce), right-padded: padding comes after every
    scored position, so causal attention never sees it. Token j of an option is scored by the position
    before it. Returns a float64 tensor, one entry per option; the best option is its argmax.

    >>> from minigpt.model import GPTConfig
    >>> model = GPT(GPTConfig.from_preset("tiny"))
    >>> scores = choice_logprobs(model, "It is a", [" comedy", " tragedy"])
    >>> scores.shape, bool((scores < 0).all())
    (torch.Size([2]), True)
    """
    if not isinstance(prompt, str) or prompt == "":
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    if isinstance(options, str) or not isinstance(options, Sequence) or len(options) == 0:
        raise ValueError(f"options must be a non-empty list of strings, got {options!r}")
    if any(not isinstance(o, str) or o == "" for o in options):
        raise ValueError(f"options must be non-empty strings, got {options!r}")
    head = encode(prompt)
    tails = [encode(o) for o in options]
    width = len(head) + max(map(len, tails))
    if width > model.config.block_size:
        raise ValueError(f"prompt + longest option is {width} tokens, more than the model's {model.config.block_size}")
    rows = [head + t + [EOT_TOKEN_ID] * (width - len(head) - len(t)) for t in tails]
    device = next(model.parameters()).device
    logp = torch.log_softmax(model(torch.tensor(rows, device=device)).double(), dim=-1)  # (N, T, V)
    scores = []
    for i, tail in enumerate(tails):
        where = torch.arange(len(head) - 1, len(head) - 1 + len(tail), device=device)  # positions predicting them
        scores.append(logp[i, where, torch.tensor(tail, device=device)].sum())
    return torch.stack(scores).cpu()


# ---- regular expressions → a finite-state machine over characters ----

_SPECIAL = set("\\[]()|?*+.^${}")


@dataclass(frozen=True)
class DFA:
    """A deterministic finite automaton over characters.

    ``transitions[s]`` maps each character to the next state; a character missing from it leads to the
    dead state (no match is possible any more). ``start`` is 0; ``accepting`` are the states where the
    text read so far is a full match; ``live`` are the states from which an accepting state can be reached.

    >>> dfa = compile_regex("ab?")
    >>> dfa.walk("a") in dfa.accepting, dfa.walk("ab") in dfa.accepting, dfa.walk("abb")
    (True, True, None)
    """

    pattern: str
    transitions: tuple[dict[str, int], ...]
    accepting: frozenset[int]
    start: int = 0

    @functools.cached_property
    def live(self) -> frozenset[int]:
        """States from which some accepting state is reachable (a backward search from the accepting ones)."""
        live, changed = set(self.accepting), True
        while changed:
            changed = False
            for s, moves in enumerate(self.transitions):
                if s not in live and any(t in live for t in moves.values()):
                    live.add(s)
                    changed = True
        return frozenset(live)

    def walk(self, text: str, state: int | None = None) -> int | None:
        """The state after reading ``text`` from ``state`` (default: the start), or None if the machine died.

        >>> compile_regex("[0-9]+").walk("12"), compile_regex("[0-9]+").walk("1x")
        (1, None)
        """
        state = self.start if state is None else state
        for ch in text:
            state = self.transitions[state].get(ch)
            if state is None or state not in self.live:
                return None
        return state

    def matches(self, text: str) -> bool:
        """Does the whole of ``text`` match the pattern (``re.fullmatch``)?

        >>> compile_regex("(yes|no)").matches("no"), compile_regex("(yes|no)").matches("nope")
        (True, False)
        """
        return self.walk(text) in self.accepting


def compile_regex(pattern: str) -> DFA:
    r"""Compile a small regular expression into a ``DFA`` (through a Thompson NFA and the subset construction).

    Supported: literal characters; ``\`` before a special character for the character itself (``\.``,
    ``\{``, ``\\``), ``\d`` for a digit and ``\n`` for a newline; character classes of characters and ranges (``[0-9]``,
    ``[A-Za-z ,]``; ``\`` escapes ``]``, ``-``, ``\`` inside); ``?``, ``*``, ``+`` after an item;
    alternatives ``|``; groups ``( )``. The machine matches whole strings (``re.fullmatch``). Anything else
    (``.``, ``^``, ``$``, ``{m,n}``, ``[^...]``, ``(?...)``, ``\w`` and other escapes, lazy or doubled
    quantifiers) raises a ValueError naming it: each would make the compiler longer and the chapter no
    clearer.

    >>> dfa = compile_regex(r"[0-9][0-9]?/[0-9][0-9]?")
    >>> dfa.matches("3/11"), dfa.matches("311")
    (True, False)
    >>> compile_regex("a{2}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: pattern must use only the supported syntax ... '{' at position 1 is not supported (repetition counts)...
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string, got {pattern!r}")
    nfa = _NFA()
    start, end = _Parser(pattern, nfa).parse()
    return _subset_construction(pattern, nfa, start, end)


class _NFA:
    """Thompson's construction: states with character moves and ε-moves (``None``)."""

    def __init__(self) -> None:
        self.moves: list[list[tuple[frozenset[str] | None, int]]] = []

    def state(self) -> int:
        self.moves.append([])
        return len(self.moves) - 1

    def add(self, a: int, chars: frozenset[str] | None, b: int) -> None:
        self.moves[a].append((chars, b))


class _Parser:
    """Recursive descent: alternation := sequence ('|' sequence)*; sequence := (item quantifier?)*.

    Each method returns the (start, end) states of the NFA fragment it built.
    """

    def __init__(self, pattern: str, nfa: _NFA):
        self.p, self.i, self.nfa = pattern, 0, nfa

    def fail(self, what: str) -> ValueError:
        return ValueError(f"pattern must use only the supported syntax (see compile_regex), got {self.p!r}: {what}")

    def parse(self) -> tuple[int, int]:
        frag = self.alternation()
        if self.i < len(self.p):  # only a stray ')' stops alternation early
            raise self.fail(f"unbalanced ')' at position {self.i}")
        return frag

    def alternation(self) -> tuple[int, int]:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence())
        if len(branches) == 1:
            return branches[0]
        s, e = self.nfa.state(), self.nfa.state()
        for bs, be in branches:
            self.nfa.add(s, None, bs)
            self.nfa.add(be, None, e)
        return s, e

    def sequence(self) -> tuple[int, int]:
        s = e = self.nfa.state()
        while self.peek() not in (None, "|", ")"):
            fs, fe = self.quantified()
            self.nfa.add(e, None, fs)
            e = fe
        return s, e

    def quantified(self) -> tuple[int, int]:
        fs, fe = self.item()
        q = self.peek()
        if q not in ("?", "*", "+"):
            return fs, fe
        self.i += 1
        if self.peek() in ("?", "*", "+"):
            raise self.fail(f"{self.p[self.i]!r} at position {self.i} follows another quantifier (not supported)")
        s, e = self.nfa.state(), self.nfa.state()
        self.nfa.add(s, None, fs)
        self.nfa.add(fe, None, e)
        if q in ("?", "*"):
            self.nfa.add(s, None, e)  # zero times
        if q in ("*", "+"):
            self.nfa.add(fe, None, fs)  # once more
        return s, e

    def item(self) -> tuple[int, int]:
        ch, at = self.p[self.i], self.i
        self.i += 1
        if ch == "(":
            if self.peek() == "?":
                raise self.fail(f"'(?' at position {at} is not supported (only plain groups)")
            frag = self.alternation()
            if self.peek() != ")":
                raise self.fail(f"the group opened at position {at} is not closed")
            self.i += 1
            return frag
        if ch == "[":
            chars = self.char_class(at)
        elif ch == "\\":
            chars = self.escape(in_class=False)
        elif ch in "?*+":
            raise self.fail(f"{ch!r} at position {at} has nothing to repeat")
        elif ch in "{}":
            raise self.fail(
                f"{ch!r} at position {at} is not supported (repetition counts); write \\{ch} for a literal brace"
            )
        elif ch in _SPECIAL:
            raise self.fail(f"{ch!r} at position {at} is not supported")
        else:
            chars = frozenset(ch)
        s, e = self.nfa.state(), self.nfa.state()
        self.nfa.add(s, chars, e)
        return s, e

    def escape(self, *, in_class: bool) -> frozenset[str]:
        if self.i >= len(self.p):
            raise self.fail("the pattern ends with a lone '\\'")
        ch = self.p[self.i]
        self.i += 1
        if ch == "d":
            return frozenset("0123456789")
        if ch == "n":
            return frozenset("\n")
        if ch in _SPECIAL or (in_class and ch == "-"):
            return frozenset(ch)
        raise self.fail(
            f"the escape \\{ch} at position {self.i - 2} is not supported (only \\d, \\n and escaped specials)"
        )

    def char_class(self, at: int) -> frozenset[str]:
        if self.peek() == "^":
            raise self.fail(f"negated classes '[^' at position {at} are not supported")
        chars: set[str] = set()
        while self.peek() != "]":
            if self.peek() is None:
                raise self.fail(f"the class opened at position {at} is not closed")
            lo = self.class_char()
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                hi = self.class_char()
                if len(lo) != 1 or len(hi) != 1 or min(lo) > min(hi):
                    raise self.fail(f"the range in the class at position {at} is not two characters in order")
                chars |= {chr(c) for c in range(ord(min(lo)), ord(min(hi)) + 1)}
            else:
                chars |= lo
        self.i += 1
        if not chars:
            raise self.fail(f"the class at position {at} is empty")
        return frozenset(chars)

    def class_char(self) -> frozenset[str]:
        ch = self.p[self.i]
        self.i += 1
        return self.escape(in_class=True) if ch == "\\" else frozenset(ch)

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None


def _subset_construction(pattern: str, nfa: _NFA, start: int, end: int) -> DFA:
    """Each DFA state is the set of NFA states the machine could be in; built breadth-first from the start."""

    def closure(states: set[int]) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            for chars, b in nfa.moves[stack.pop()]:
                if chars is None and b not in seen:
                    seen.add(b)
                    stack.append(b)
        return frozenset(seen)

    first = closure({start})
    number = {first: 0}
    order, transitions = [first], []
    for current in order:  # `order` grows while we walk it
        targets: dict[str, set[int]] = {}
        for a in current:
            for chars, b in nfa.moves[a]:
                for ch in chars or ():
                    targets.setdefault(ch, set()).add(b)
        moves = {}
        for ch, bs in sorted(targets.items()):
            nxt = closure(bs)
            if nxt not in number:
                number[nxt] = len(order)
                order.append(nxt)
            moves[ch] = number[nxt]
        transitions.append(moves)
    accepting = frozenset(number[s] for s in order if end in s)
    return DFA(pattern, tuple(transitions), accepting)


# ---- from characters to GPT-2 tokens ----


@functools.cache
def token_strings() -> tuple[str | None, ...]:
    """The text of each of GPT-2's 50,257 tokens; None where it is not text on its own.

    None for ``<|endoftext|>`` (it ends the text, it is not in it) and for the tokens that hold only part
    of a UTF-8 character (a character machine cannot read them one at a time).

    >>> strings = token_strings()
    >>> len(strings), strings[6109], strings[50256]
    (50257, 'Every', None)
    """
    encoding = gpt2_encoding()
    out: list[str | None] = []
    for i in range(VOCAB_SIZE - 1):
        try:
            out.append(encoding.decode_single_token_bytes(i).decode("utf-8"))
        except UnicodeDecodeError:
            out.append(None)
    return tuple(out) + (None,)


def allowed_tokens(dfa: DFA, state: int, strings: Sequence[str | None]) -> list[int]:
    """The ids whose string, read from ``state``, keeps ``dfa`` in a live state: the naive mask, one step.

    Walks every string character by character (50,257 of them for GPT-2: tens of milliseconds per step;
    ``TokenIndex`` precomputes this for every state). None strings are never allowed.

    >>> allowed_tokens(compile_regex("[0-9]+"), 0, ["1", "12", "a", "1a", None])
    [0, 1]
    """
    _check_state(dfa, state)
    return [i for i, s in enumerate(strings) if s and dfa.walk(s, state) is not None]


def _check_state(dfa: DFA, state: object) -> None:
    if not isinstance(state, int) or isinstance(state, bool) or not 0 <= state < len(dfa.transitions):
        raise ValueError(f"state must be a state of the DFA, an integer in [0, {len(dfa.transitions)}), got {state!r}")


class TokenIndex:
    """``allowed_tokens`` precomputed for every live state of ``dfa``, so a decoding step is a lookup.

    Built once by walking a trie of the token strings from each live state, and leaving a branch as soon
    as the machine dies: tokens that share a first character that is not allowed are all skipped at once.
    ``allowed(s)`` is a sorted id tensor; ``next_state[s][token]`` is the state after the token.

    >>> index = TokenIndex(compile_regex("[0-9]+"), ["1", "12", "a", "1a", None])
    >>> index.allowed(0).tolist(), index.next_state[0][1]
    ([0, 1], 1)
    """

    def __init__(self, dfa: DFA, strings: Sequence[str | None] | None = None):
        strings = token_strings() if strings is None else tuple(strings)
        self.dfa, self.vocab_size = dfa, len(strings)
        trie = _trie(strings)
        self.next_state: dict[int, dict[int, int]] = {}
        self._allowed: dict[int, torch.Tensor] = {}
        for state in sorted(dfa.live):
            nexts: dict[int, int] = {}
            stack = [(trie, state)]
            while stack:
                children, at = stack.pop()
                for ch, (grand, ids) in children.items():
                    to = dfa.transitions[at].get(ch)
                    if to is None or to not in dfa.live:
                        continue  # every token starting with this prefix dies here
                    for i in ids:
                        nexts[i] = to
                    stack.append((grand, to))
            self.next_state[state] = nexts
            self._allowed[state] = torch.tensor(sorted(nexts), dtype=torch.long)

    def allowed(self, state: int) -> torch.Tensor:
        """The sorted ids allowed from ``state`` (empty when no token keeps the machine alive)."""
        _check_state(self.dfa, state)
        if state not in self._allowed:
            raise ValueError(f"state must be a live state of the DFA, one of {sorted(self.dfa.live)}, got {state}")
        return self._allowed[state]

    def state_after(self, tokens: Sequence[int]) -> int:
        """The state after reading ``tokens`` from the start, one lookup per token.

        >>> TokenIndex(compile_regex("[0-9]+"), ["1", "12", "a"]).state_after([1, 0])
        1
        """
        state = self.dfa.start
        for t in tokens:
            t = int(t)
            if t not in self.next_state.get(state, {}):
                raise ValueError(f"tokens must keep the machine alive, but token {t} is not allowed in state {state}")
            state = self.next_state[state][t]
        return state


@functools.lru_cache(maxsize=4)
def _trie(strings: tuple[str | None, ...]) -> dict:
    """The token strings as a character trie: char -> (children, ids of the tokens that end here). Built once."""
    trie: dict = {}
    for i, s in enumerate(strings):
        if s:
            node = None
            for ch in s:
                node = (trie if node is None else node[0]).setdefault(ch, ({}, []))
            node[1].append(i)
    return trie


def regex_allowed_tokens_fn(
    index: TokenIndex, prompt_len: int, *, end_token_ids: Sequence[int] = (EOT_TOKEN_ID,)
) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """A ``prefix_allowed_tokens_fn`` for ``minigpt.generate`` that keeps the continuation inside ``index``'s regex.

    The function reads the row's tokens after the first ``prompt_len`` columns (the prompt's width,
    left padding included when prompts are batched), finds the machine's state with one lookup per token,
    and allows the tokens that keep it alive; in an accepting state the ``end_token_ids`` are allowed too
    (they must be tokens the pattern cannot contain: ``<|endoftext|>``, or ``"\\n"`` for a one-line pattern).

    How generation ends: pass the same ids as ``eos_token_id`` to ``generate``. A row stops when it picks
    an end token, which happens only in an accepting state, so its text (without the end token) matches.
    Where nothing can follow (a finished date), an end token is the only choice, so the row must stop.
    A row that reaches ``max_new_tokens`` first is only a prefix of a match: give enough tokens, or check
    ``stopped_by == "eos"``.

    >>> from minigpt.model import GPT, GPTConfig
    >>> from minigpt.generate import generate
    >>> from minigpt.tokenizer import decode
    >>> index = TokenIndex(compile_regex("(yes|no)"))
    >>> out = generate(GPT(GPTConfig.from_preset("tiny")), "Answer:", max_new_tokens=5, eos_token_id=50256,
    ...                prefix_allowed_tokens_fn=regex_allowed_tokens_fn(index, len(encode("Answer:"))))
    >>> decode(out.new_tokens[0][:-1]) in ("yes", "no"), out.stopped_by
    (True, ['eos'])
    """
    if not isinstance(index, TokenIndex):
        raise TypeError(f"index must be a TokenIndex, got {type(index).__name__}")
    if not isinstance(prompt_len, int) or isinstance(prompt_len, bool) or prompt_len < 0:
        raise ValueError(f"prompt_len must be an integer >= 0 (the prompt's width in tokens), got {prompt_len!r}")
    ends = tuple(end_token_ids)
    if not ends or any(not isinstance(t, int) or not 0 <= t < index.vocab_size for t in ends):
        raise ValueError(
            f"end_token_ids must be one or more token ids in [0, {index.vocab_size}), got {end_token_ids!r}"
        )
    inside = [t for t in ends if any(t in moves for moves in index.next_state.values())]
    if inside:  # the row would stop there, in the middle of a match
        raise ValueError(
            f"end_token_ids must not be tokens the pattern can contain, got {inside} in {index.dfa.pattern!r}"
        )
    end_tensor = torch.tensor(ends, dtype=torch.long)

    def allowed(batch_row: int, ids: torch.Tensor) -> torch.Tensor:
        state = index.state_after(ids[prompt_len:].tolist())
        options = index.allowed(state)
        return torch.cat([options, end_tensor]) if state in index.dfa.accepting else options

    return allowed
