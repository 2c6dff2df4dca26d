"""Checkers for chapter 10, constrained decoding (``notebooks/exercises/10_constrained_decoding_exercises.ipynb``).

Three exercises: walking a regular expression's machine over a text, the regex mask (which tokens keep the
machine alive from a state), and the whole constrained loop: mask, pick, advance the machine, stop.

>>> from minigpt.constrained import allowed_tokens
>>> result = check_walk(lambda dfa, text, state: dfa.walk(text, state))
✓ walk: all 5 hidden cases pass
>>> result = check_allowed_tokens(allowed_tokens)
✓ allowed_tokens: all 5 hidden cases pass
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minigpt.constrained import DFA, TokenIndex, allowed_tokens, compile_regex, regex_allowed_tokens_fn
from minigpt.exercises.checking import Case, CheckResult, cases_for, check
from minigpt.exercises.models import TOY_CONFIG, TOY_MODEL, toy_model
from minigpt.generate import generate
from minigpt.model import GPT

NUMBER = r" [0-9]+(\.[0-9]+)?"
DATE = r"[0-3]?[0-9]/[01]?[0-9]"
ANSWER = r"(yes|no)!?"
TOKENS = [" 1", " 12", " x", "12", ".", ".5", "5", " ", "yes", "y", "no!", "nope", "/", "3/", "1/1", None, "x", "1a"]

# The text of each of the toy model's 64 tokens (models.toy_model), for the constrained loop: the pieces of
# dates and of play lines, several characters long as GPT-2's are, and every single character the patterns
# below need, so that no live state of theirs is left without an allowed token. Token 63, with no text of its
# own, is the end of the text (GPT-2's <|endoftext|>); token 62 is a newline, which ends a play line.
TOY_STRINGS = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",  # 0-9
    " ", " 1", " 2", " 3", " 0", " 12", " 31", " 7",  # 10-17
    "/", "/1", "/0", "12", "31", "15", "16", "1/", "0/", "3/",  # 18-27
    ".", ". ", ",", ";", "'", "!",  # 28-33
    "R", "J", "M", "O", "Ro", "Ju", "Ma",  # 34-40
    "a", "e", "i", "o", "u", "r", "n", "s", "t", "l", "y", "h",  # 41-52
    "meo", "liet", "rcus", "ing", "er", " the", " x", "x1",  # 53-60
    "?",  # 61: a character no pattern here contains
    "\n",  # 62
    None,  # 63
]
END_OF_TEXT, NEWLINE = 63, 62
DAY_MONTH = r" [0-3]?[0-9]/[01]?[0-9]"  # chapter 10's date without its year: at most 6 characters
FULL_DATE = r" [0-3]?[0-9]/[01]?[0-9]/1[56][0-9][0-9]"  # chapter 10's date
PLAY_LINE = r"[A-Z][a-z]+\. [A-Z][a-z ,;']+"  # chapter 10's line, `Name. Text`, without capitals inside the text
MARGIN = 1e-3  # a greedy step's top-2 logits, or a draw's logit, this far from a tie: the same on every machine


def check_walk(student: Callable[[DFA, str, int], int | None], *, seed: int | None = None) -> CheckResult:
    """Check ``walk(dfa, text, state)``: the state after reading ``text`` from ``state``, or None once it dies.

    ``dfa.transitions[s]`` maps a character to the next state; a missing character kills the machine (and
    a state not in ``dfa.live`` is as good as dead). A ``seed`` checks on cases drawn from it instead.

    >>> def only_first_char(dfa, text, state):
    ...     return dfa.transitions[state].get(text[0]) if text else state
    >>> result = check_walk(only_first_char)
    ✗ walk: hidden case 2 of 5 fails (' 12' from the start: every character counts, not just the first)
      dfa = compile_regex(' [0-9]+(\\\\.[0-9]+)?'), text = ' 12', state = 0
      wrong value
      expected: 2
      got:      1
    """
    return check("walk", student, _walk, cases_for(seed, _walk_cases, _drawn_walk_cases))


def check_allowed_tokens(
    student: Callable[[DFA, int, Sequence[str | None]], list[int]], *, seed: int | None = None
) -> CheckResult:
    """Check ``allowed_tokens(dfa, state, strings)``: the sorted ids whose whole string keeps ``dfa`` alive.

    A token is allowed when reading all its characters from ``state`` never kills the machine; ``None``
    strings (no text of their own) are never allowed. A ``seed`` checks on cases drawn from it instead.

    >>> def first_char_only(dfa, state, strings):
    ...     return [i for i, s in enumerate(strings) if s and s[0] in dfa.transitions[state]]
    >>> result = check_allowed_tokens(first_char_only)
    ✗ allowed_tokens: hidden case 1 of 5 fails (a number from the start: ' 1', ' 12' and ' ' only; ' x' dies at 'x')
      dfa = compile_regex(' [0-9]+(\\\\.[0-9]+)?'), state = 0, strings = 18 token strings
      expected 3 items, got 4
      expected: [0, 1, 7]
      got:      [0, 1, 2, 7]
    """
    return check("allowed_tokens", student, allowed_tokens, cases_for(seed, _mask_cases, _drawn_mask_cases))


def check_constrained_generate(student: Callable[..., list[int]], *, seed: int | None = None) -> CheckResult:
    """Check ``constrained_generate(model, prompt_ids, pattern, strings, end_token_id, max_new_tokens, generator)``.

    The loop of ``minigpt.generate(..., prefix_allowed_tokens_fn=regex_allowed_tokens_fn(...))``, written out:
    at each step the logits of the last position, every token outside the mask set to -inf (the tokens whose
    string keeps the machine of ``pattern`` alive, and ``end_token_id`` too in an accepting state), then the
    argmax when ``generator`` is None, else one ``torch.multinomial`` draw from the softmax with ``generator``;
    the machine reads the token's string; the loop stops after the end token or ``max_new_tokens`` tokens. The
    answer is the list of new token ids, the end token included. The hidden cases run on a small random GPT
    (``models.toy_model``) whose 64 tokens have the texts ``TOY_STRINGS``: the answer's text must fit the
    pattern, and its tokens must be the library's, one by one. A ``seed`` checks on cases drawn from it instead.

    >>> def library(model, prompt_ids, pattern, strings, end_token_id, max_new_tokens, generator=None):
    ...     args = (model, prompt_ids, pattern, strings, end_token_id, max_new_tokens, generator)
    ...     return _library_generate(*args).tokens
    >>> result = check_constrained_generate(library)
    ✓ constrained_generate: all 7 hidden cases pass
    """
    cases = cases_for(seed, _generate_cases, _drawn_generate_cases)
    return check("constrained_generate", student, _library_generate, cases, compare=_compare_generated)


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


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _pick(g: torch.Generator, options: Sequence) -> object:
    return options[_randint(g, 0, len(options) - 1)]


def _digits(g: torch.Generator, low: int, high: int) -> str:
    return "".join(str(_randint(g, 0, 9)) for _ in range(_randint(g, low, high)))


def _number(g: torch.Generator) -> str:
    """A number ` [0-9]+(\\.[0-9]+)?` matches: a space, 1 to 3 digits, maybe a point and 1 or 2 decimals."""
    return " " + _digits(g, 1, 3) + ("." + _digits(g, 1, 2) if _randint(g, 0, 1) else "")


def _date(g: torch.Generator) -> str:
    """A day and a month ``DATE`` matches, each of one or two digits: '7/1', '31/12', '09/3'."""
    day = _pick(g, ["", "0", "1", "2", "3"]) + str(_randint(g, 0, 9))
    return day + "/" + _pick(g, ["", "0", "1"]) + str(_randint(g, 0, 9))


def _drawn_walk_cases(g: torch.Generator) -> list[Case]:
    number, date, answer = compile_regex(NUMBER), compile_regex(DATE), compile_regex(ANSWER)
    state = _pick(g, sorted(number.live))
    text = _number(g)
    bare = _number(g).strip()
    a_date = _date(g)
    cut = _randint(g, 1, len(a_date) - 1)
    middle = date.walk(a_date[:cut])
    finished = _pick(g, ["yes", "no", "yes!", "no!"])
    dead = finished + _pick(g, ["x", "?", " ", "s"] + ["!"] * finished.endswith("!"))  # a second '!' dies too
    return [
        Case((number, "", state), "the empty text leaves the machine where it is",
             _shown(NUMBER, "text = ''", f"state = {state}")),
        Case((number, text, 0), f"{text!r} from the start: every character counts, not just the first",
             _shown(NUMBER, f"text = {text!r}", "state = 0")),
        Case((number, bare, 0), f"{bare!r} without its space dies at once: None",
             _shown(NUMBER, f"text = {bare!r}", "state = 0")),
        Case((date, a_date[cut:], middle), f"the rest of {a_date!r} from the middle: start where you are told",
             _shown(DATE, f"text = {a_date[cut:]!r}", f"state = dfa.walk({a_date[:cut]!r}) = {middle}")),
        Case((answer, dead, 0), "dies at the last character: None, not the state before",
             _shown(ANSWER, f"text = {dead!r}", "state = 0")),
    ]


def _drawn_mask_cases(g: torch.Generator) -> list[Case]:
    number, date, answer = compile_regex(NUMBER), compile_regex(DATE), compile_regex(ANSWER)
    extra = [" " + _digits(g, 1, 2), _digits(g, 1, 2) + "/", "." + _digits(g, 1, 1), _digits(g, 1, 1) + "x", "no"]
    strings = [(TOKENS + extra)[i] for i in torch.randperm(len(TOKENS + extra), generator=g).tolist()]  # shuffled
    shown = f"strings = {len(strings)} token strings"
    digits = " " + _digits(g, 1, 3)
    after_point = digits + "." + _digits(g, 0, 1)
    finished = _pick(g, ["yes!", "no!"])
    return [
        Case((number, 0, strings), "a number from the start: only tokens that start with a space and then digits "
             "(' ' itself too); ' x' dies at 'x'", _shown(NUMBER, "state = 0", shown)),
        Case((number, number.walk(digits), strings), f"after {digits!r}: digits, '.', '.5', but no space",
             _shown(NUMBER, f"state = dfa.walk({digits!r})", shown)),
        Case((number, number.walk(after_point), strings), f"after {after_point!r}: digits only, no second point",
             _shown(NUMBER, f"state = dfa.walk({after_point!r})", shown)),
        Case((date, 0, strings), "tokens that cross a '/' stay alive: '3/' and '1/1'",
             _shown(DATE, "state = 0", shown)),
        Case((answer, 0, strings), "'no!' reaches the end and is allowed; 'nope' dies; None is never allowed",
             _shown(ANSWER, "state = 0", shown)),
        Case((answer, answer.walk(finished), strings), "a finished answer: no token can follow, the list is empty",
             _shown(ANSWER, f"state = dfa.walk({finished!r})", shown)),
    ]


# ---- the constrained loop ----


@dataclass(frozen=True)
class _Generated:
    """The library's new tokens, with what the comparison needs to say whether the student's text fits the pattern."""

    tokens: list[int]
    pattern: str
    strings: tuple[str | None, ...]
    end_token_id: int
    max_new_tokens: int

    def __repr__(self) -> str:
        return f"{self.tokens} ({_describe(self.tokens, self.strings, self.end_token_id)})"


def _describe(tokens: Sequence[int], strings: Sequence[str | None], end: int) -> str:
    ended = bool(tokens) and tokens[-1] == end
    text = "".join(strings[t] or "" for t in (tokens[:-1] if ended else tokens))
    return f"{text!r}, then the end token" if ended else f"{text!r}, no end token"


def _library_generate(
    model: GPT, prompt_ids: list[int], pattern: str, strings: Sequence[str | None], end_token_id: int,
    max_new_tokens: int, generator: torch.Generator | None = None,
) -> _Generated:
    index = TokenIndex(compile_regex(pattern), strings)
    allowed = regex_allowed_tokens_fn(index, len(prompt_ids), end_token_ids=[end_token_id])
    # no cache, like the student's loop: both run the whole sequence through the model, so their logits agree
    out = generate(model, torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=generator is not None,
                   generator=generator, eos_token_id=end_token_id, prefix_allowed_tokens_fn=allowed, use_cache=False)
    return _Generated(out.new_tokens[0], pattern, tuple(strings), end_token_id, max_new_tokens)


def _compare_generated(expected: _Generated, got: object, atol: float) -> str | None:
    """First whether the student's text fits the pattern (the point of the exercise), then the tokens, one by one."""
    if isinstance(got, torch.Tensor) and got.dim() == 1 and not got.is_floating_point():
        got = got.tolist()
    if not isinstance(got, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in got):
        return f"expected a list of token ids (ints), got {got!r:.80}"
    strings, end, dfa = expected.strings, expected.end_token_id, compile_regex(expected.pattern)
    if any(not 0 <= t < len(strings) for t in got):
        return f"token ids must be in [0, {len(strings)}), got {got}"
    state = dfa.start
    for i, token in enumerate(got):
        if token == end:
            if state not in dfa.accepting:
                text = "".join(strings[t] or "" for t in got[:i])
                return f"token {i} is the end token, but {text!r} is not a whole match yet"
            if i < len(got) - 1:
                return f"token {i} is the end token: the loop must stop there, but it went on"
            break
        state = dfa.walk(strings[token] or "\0", state)  # a token without text is never allowed
        if state is None:
            text = "".join(strings[t] or "" for t in got[: i + 1])
            return f"the text leaves the pattern at token {i} ({strings[token]!r}): {text!r} can never match"
    if len(got) > expected.max_new_tokens:
        return f"{len(got)} new tokens, more than max_new_tokens = {expected.max_new_tokens}"
    for i, (want, have) in enumerate(zip(expected.tokens, got)):
        if want != have:
            return f"the text fits the pattern, but token {i} is not the library's: {have} instead of {want}"
    if len(got) != len(expected.tokens):
        return f"the text fits the pattern, but has {len(got)} tokens where the library's has {len(expected.tokens)}"
    return None


def _generate_case(model: GPT, why: str, prompt: list[int], pattern: str, end: int, max_new_tokens: int,
                   seed: int | None) -> Case:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    drawn = "None (greedy)" if seed is None else f"torch.Generator().manual_seed({seed})"
    shown = (f"model = {TOY_MODEL}, prompt_ids = {prompt}, pattern = {pattern!r}, strings = TOY_STRINGS "
             f"(64 token texts), end_token_id = {end} ({TOY_STRINGS[end]!r}), max_new_tokens = {max_new_tokens}, "
             f"generator = {drawn}")
    return Case((model, prompt, pattern, TOY_STRINGS, end, max_new_tokens, generator), why, shown)


def _generate_cases() -> list[Case]:
    model = toy_model(seed=4)
    return [
        _generate_case(model, "a day and a month, greedy: the date ends, then the end token is the only choice",
                       [34, 41, 46], DAY_MONTH, END_OF_TEXT, 8, None),
        _generate_case(model, "a day and a month, sampled: one multinomial draw per step, from the masked softmax",
                       [34, 41, 46], DAY_MONTH, END_OF_TEXT, 8, 1),
        _generate_case(model, "a full date, sampled: the machine reads every token's string, several characters each",
                       [37, 44, 30, 10], FULL_DATE, END_OF_TEXT, 14, 7),
        _generate_case(model, "a play line, greedy: a newline token (allowed only after a whole match) or "
                       "max_new_tokens ends it",
                       [35, 45, 62], PLAY_LINE, NEWLINE, 12, None),
        _generate_case(model, "a play line, sampled: max_new_tokens ends it before the model does",
                       [36, 41, 48, 62], PLAY_LINE, NEWLINE, 6, 3),
        _generate_case(model, "max_new_tokens = 2: a date cut short is still a start of a match",
                       [34, 41, 46], DAY_MONTH, END_OF_TEXT, 2, 5),
        _generate_case(model, "max_new_tokens = 0: no new tokens, an empty list", [34, 41, 46], DAY_MONTH,
                       END_OF_TEXT, 0, None),
    ]


def _steps(model: GPT, prompt: list[int], pattern: str, end: int, tokens: list[int]) -> list[tuple]:
    """Each step of a finished generation: (its logits (V,), the allowed ids, the token picked)."""
    dfa, steps, state = compile_regex(pattern), [], 0
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens]))[0].float()  # (T, V): one pass, causal, so each row is a step
    for i, token in enumerate(tokens):
        allowed = allowed_tokens(dfa, state, TOY_STRINGS) + ([end] if state in dfa.accepting else [])
        steps.append((logits[len(prompt) - 1 + i], allowed, token))
        if token != end:
            state = dfa.walk(TOY_STRINGS[token], state)
    return steps


def _masked(logits: torch.Tensor, allowed: list[int]) -> torch.Tensor:
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[allowed] = True
    return logits.masked_fill(~keep, float("-inf"))


def _draw(logits: torch.Tensor, state: torch.Tensor) -> int:
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=torch.Generator().set_state(state)))


def _robust(
    model: GPT, prompt: list[int], pattern: str, end: int, tokens: list[int], seed: int | None, *, catches: bool
) -> bool:
    """Whether every step is far from a tie (``MARGIN``), so that a loop written differently (batched, with a KV
    cache, the softmax in float64) picks the same tokens on every machine; a sampled case must also catch a loop
    that ignores the generator (its tokens differ from the greedy ones) or masks after drawing (at the first
    step where a draw from the whole softmax falls outside the mask, the masked draw is not the best allowed
    token)."""
    if seed is None:
        for logits, allowed, _ in _steps(model, prompt, pattern, end, tokens):
            top = logits[allowed].topk(min(2, len(allowed))).values
            if len(allowed) > 1 and top[0] - top[1] < MARGIN:
                return False
        return True
    rng, caught_late_mask = torch.Generator().manual_seed(seed), False
    for logits, allowed, token in _steps(model, prompt, pattern, end, tokens):
        state, masked = rng.get_state(), _masked(logits, allowed)
        nudged = masked.clone()
        nudged[token] -= MARGIN  # the draw must not change when the drawn token's logit moves by MARGIN
        if _draw(masked, state) != token or _draw(nudged, state) != token:
            return False
        unmasked = _draw(logits, state)
        if unmasked not in allowed and not caught_late_mask:
            if token == int(masked.argmax()):
                return False  # a loop that falls back to the best allowed token would agree here
            caught_late_mask = True
        torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=rng)  # the library's draw, to move on
    if not catches:
        return True
    greedy = _library_generate(model, prompt, pattern, TOY_STRINGS, end, len(tokens))
    return caught_late_mask and greedy.tokens != tokens


def _drawn_generate_case(g: torch.Generator, model: GPT, why: str, pattern: str, end: int, max_new_tokens: int,
                         sampled: bool, *, ends: bool = True, catches: bool = True) -> Case:
    """A case with a random prompt (and generator seed), redrawn from ``g`` until ``_robust`` holds (with
    ``catches``, for a sampled case); when ``ends``, also until the text ends with the end token within
    ``max_new_tokens``."""
    for _ in range(200):
        prompt = torch.randint(0, TOY_CONFIG.vocab_size - 2, (_randint(g, 2, 6),), generator=g).tolist()
        seed = _randint(g, 0, 10_000) if sampled else None
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        tokens = _library_generate(model, prompt, pattern, TOY_STRINGS, end, max_new_tokens, generator).tokens
        if (not ends or tokens[-1:] == [end]) and _robust(model, prompt, pattern, end, tokens, seed, catches=catches):
            return _generate_case(model, why, prompt, pattern, end, max_new_tokens, seed)
    raise RuntimeError(f"no robust case for {pattern!r} in 200 draws")  # never seen: a case is found in a few


def _drawn_generate_cases(g: torch.Generator) -> list[Case]:
    model = toy_model(seed=_randint(g, 0, 99))
    short = _randint(g, 1, 3)
    return [
        _drawn_generate_case(g, model, "a day and a month, greedy: the date ends, then the end token is the only "
                             "choice", DAY_MONTH, END_OF_TEXT, _randint(g, 7, 10), False),
        _drawn_generate_case(g, model, "a day and a month, sampled: one multinomial draw per step, from the masked "
                             "softmax", DAY_MONTH, END_OF_TEXT, _randint(g, 7, 10), True),
        _drawn_generate_case(g, model, "a full date, sampled: the machine reads every token's string",
                             FULL_DATE, END_OF_TEXT, 14, True),
        _drawn_generate_case(g, model, "a play line, greedy: a newline token (allowed only after a whole match) or "
                             "max_new_tokens ends it",
                             PLAY_LINE, NEWLINE, 12, False, ends=False),
        _drawn_generate_case(g, model, "a play line, sampled: it stops at the newline or at max_new_tokens",
                             PLAY_LINE, NEWLINE, 10, True, ends=False, catches=False),
        _drawn_generate_case(g, model, f"max_new_tokens = {short}: a date cut short is still a start of a match",
                             FULL_DATE, END_OF_TEXT, short, True, ends=False, catches=False),
    ]
