"""Token healing: continue a prompt that ends where the corpus rarely puts a token boundary.

GPT-2's tokenizer first cuts text into pieces with a regular expression, then merges bytes inside each
piece. The expression gives a run of whitespace's last character to the *next* piece, so the same
characters become different tokens depending on what follows them: ``"Capulet.\\n\\nRomeo."`` is
``…, 13, 198, 198, 49, …`` (``"."``, ``"\\n"``, ``"\\n"``, ``"R"``), while ``"Capulet.\\n\\n"`` on its own
ends in the single token ``"\\n\\n"`` (628). A model trained on the first kind of text has rarely seen a
boundary like the second, and a prompt that ends there asks it to continue from a place it does not know.

Token healing (Lundberg, 2023, in the ``guidance`` library) backs up: it removes the prompt's last
token(s) and constrains the first generated tokens to write the removed text again, in whatever tokens the
model prefers, and then to go on freely. A token is allowed while it is *consistent* with the text still
to re-write: it starts with that text (and may go beyond it), or it is a non-empty prefix of it (the rest
comes in the next tokens). ``generate(..., token_healing=True)`` does this; :func:`boundary_warning` says
when a prompt needs it, from how the training split writes the prompt's last characters.

>>> from minigpt.tokenizer import encode
>>> kept, removed = back_up(encode("Capulet.\\n\\n"))
>>> kept, removed
([15610, 25132, 13], b'\\n\\n')
>>> [t for t in (198, 628, 13) if t in set(consistent_tokens(removed).tolist())]  # "\\n", "\\n\\n", "."
[198, 628]
"""

from __future__ import annotations

import functools
import numbers
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minigpt.checks import check_int, check_real
from minigpt.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, decode_bytes, encode, gpt2_encoding

SHARE_THRESHOLD = 0.1  # warn when the training split writes the last token's characters as that token < 10% of the time


def healing_tokens(token_healing: object) -> int:
    """How many prompt tokens ``token_healing`` backs up: False → 0 (off), True → 1, an integer n >= 1 → n.

    >>> healing_tokens(False), healing_tokens(True), healing_tokens(2)
    (0, 1, 2)
    >>> healing_tokens(0)
    Traceback (most recent call last):
        ...
    ValueError: token_healing must be True, False or a number of tokens >= 1, got 0
    """
    allowed = "True, False or a number of tokens >= 1"
    if isinstance(token_healing, bool):
        return int(token_healing)
    if not isinstance(token_healing, numbers.Integral):
        raise TypeError(f"token_healing must be {allowed}, got {token_healing!r}")
    if token_healing < 1:
        raise ValueError(f"token_healing must be {allowed}, got {token_healing!r}")
    return int(token_healing)


def back_up(ids: Sequence[int], n: int = 1) -> tuple[list[int], bytes]:
    """The prompt ``ids`` without its last ``n`` tokens, and the bytes those tokens held.

    At least one token must stay: the model needs something to continue from.

    >>> back_up([15610, 25132, 13, 628])
    ([15610, 25132, 13], b'\\n\\n')
    >>> back_up([628])
    Traceback (most recent call last):
        ...
    ValueError: token_healing must be fewer than the prompt's 1 token(s) (at least one must stay), got 1
    """
    check_int("token_healing", n, 1)
    ids = [int(i) for i in ids]
    if len(ids) <= n:
        raise ValueError(f"token_healing must be fewer than the prompt's {len(ids)} token(s) (at least one must "
                         f"stay), got {n}")
    if EOT_TOKEN_ID in ids[-n:]:
        raise ValueError(f"token_healing must back up text tokens, got <|endoftext|> (id {EOT_TOKEN_ID}) among the "
                         f"last {n} prompt token(s)")
    return ids[:-n], decode_bytes(ids[-n:])


def back_up_rows(ids: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, list[bytes]]:
    """:func:`back_up` for every row of left-padded (B, T) ids: the shorter rows, left-padded again.

    Returns the new ids (B, T') and mask, T' <= T - n, and the bytes each row gave up. Padding is
    ``<|endoftext|>`` with mask 0, as ``generate`` pads.

    >>> ids, mask, removed = back_up_rows(torch.tensor([[50256, 13, 628], [25132, 13, 198]]),
    ...                                   torch.tensor([[0, 1, 1], [1, 1, 1]]), 1)
    >>> ids.tolist(), mask.tolist(), removed
    ([[50256, 13], [25132, 13]], [[0, 1], [1, 1]], [b'\\n\\n', b'\\n'])
    """
    rows, removed = [], []
    for row, keep in zip(ids.tolist(), mask.tolist()):
        kept, gone = back_up([t for t, m in zip(row, keep) if m], n)
        rows.append(kept)
        removed.append(gone)
    width = max(map(len, rows))
    new_ids = torch.tensor([[EOT_TOKEN_ID] * (width - len(r)) + r for r in rows], device=ids.device)
    new_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=mask.device)
    return new_ids, new_mask.to(mask.dtype), removed


@functools.cache
def token_bytes() -> tuple[bytes, ...]:
    """The bytes of each of GPT-2's 50,256 text tokens (``<|endoftext|>`` is not text: it is left out).

    >>> len(token_bytes()), token_bytes()[628]
    (50256, b'\\n\\n')
    """
    encoding = gpt2_encoding()
    return tuple(encoding.decode_single_token_bytes(i) for i in range(VOCAB_SIZE - 1))


@functools.lru_cache(maxsize=256)
def consistent_tokens(rest: bytes) -> torch.Tensor:
    """The sorted ids of the tokens consistent with ``rest``, the text still to re-write.

    A token is consistent when its bytes start with ``rest`` (it writes all of it, and maybe more) or are
    a non-empty prefix of ``rest`` (the next tokens write the remainder). ``<|endoftext|>`` never is.

    >>> [t for t in consistent_tokens(b"\\n\\n").tolist() if t < 1000]  # "\\n" and "\\n\\n"
    [198, 628]
    """
    if not isinstance(rest, bytes) or not rest:
        raise ValueError(f"rest must be non-empty bytes, got {rest!r}")
    pieces = _ids_by_bytes()
    prefixes = [pieces[rest[:cut]] for cut in range(1, len(rest)) if rest[:cut] in pieces]
    return torch.cat([covering_tokens(rest), torch.tensor(prefixes, dtype=torch.long)]).sort().values


def still_to_write(removed: bytes, new_tokens: Sequence[int]) -> bytes:
    """What of ``removed`` the tokens generated so far have not written yet (b"" once they cover it).

    >>> still_to_write(b"\\n\\n", []), still_to_write(b"\\n\\n", [198]), still_to_write(b"\\n\\n", [198, 198])
    (b'\\n\\n', b'\\n', b'')
    """
    return removed[len(decode_bytes(new_tokens)):]


def healing_allowed_tokens_fn(removed: Sequence[bytes], prompt_len: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """A ``prefix_allowed_tokens_fn`` that makes row ``r`` write ``removed[r]`` again before anything else.

    The function reads the row's tokens after the first ``prompt_len`` columns (the backed-up prompt's
    width), finds what of ``removed[r]`` is still to write, and allows the consistent tokens; once the
    row has written it all (or had nothing removed), every token. This is what ``generate`` uses for
    ``token_healing``; passing it yourself, with the backed-up prompt as ids, gives the same tokens.

    >>> fn = healing_allowed_tokens_fn([b"\\n\\n"], prompt_len=3)
    >>> 628 in fn(0, torch.tensor([15610, 25132, 13])).tolist(), len(fn(0, torch.tensor([15610, 25132, 13, 628])))
    (True, 50257)
    """
    removed = list(removed)
    check_int("prompt_len", prompt_len, 0)
    every = torch.arange(VOCAB_SIZE)

    def allowed(batch_row: int, ids: torch.Tensor) -> torch.Tensor:
        rest = still_to_write(removed[batch_row], ids[prompt_len:].tolist())
        return consistent_tokens(rest) if rest else every

    return allowed


def continuation_bytes(removed: bytes, new_tokens: Sequence[int]) -> bytes:
    """The bytes the new tokens add after the whole prompt (its removed text re-written, then the rest).

    >>> continuation_bytes(b"\\n\\n", [198, 198, 49]), continuation_bytes(b"\\n\\n", [198])
    (b'R', b'')
    """
    return decode_bytes(new_tokens)[len(removed):]


# ---- the warning: is the prompt's last token a boundary the training split rarely has? ----


@functools.cache
def training_tokens() -> torch.Tensor:
    """The shipped training split as one 1-D tensor of token ids (``minigpt.data.load_splits()[0]``).

    Loaded once per process; ``load_splits`` keeps the encoded corpus in a cache
    (``minigpt.data.default_cache_dir``), so only the first call after a change to the corpus encodes it
    (about a second).

    >>> training_tokens().ndim
    1
    """
    from minigpt.data import load_splits  # read on first use only: healing's other functions need no corpus

    return load_splits()[0]


@dataclass(frozen=True)
class Boundary:
    """How the training split writes the characters of a prompt's last token, starting at a token boundary.

    ``as_token`` counts the places where it has the token itself, ``at_boundary`` every place where a
    token boundary is followed by the same characters (in any tokens: the token itself, a longer token
    that starts with them, or several tokens that spell them). ``usual`` is the most frequent way of
    writing them (token ids; the last one may go beyond the characters) and ``usual_count`` its count.
    """

    token: int
    text: bytes
    as_token: int
    at_boundary: int
    usual: tuple[int, ...]
    usual_count: int
    longer: int  # places where one longer token starts with the characters

    @property
    def share(self) -> float:
        """The fraction of ``at_boundary`` where the training split has this very token."""
        return self.as_token / self.at_boundary if self.at_boundary else 0.0


def last_token_boundary(prompt: str | Sequence[int], tokens: torch.Tensor | None = None) -> Boundary | None:
    """Count how ``tokens`` (default: the shipped training split) writes ``prompt``'s last token's characters.

    ``prompt`` is a text or its token ids. None when its last token is ``<|endoftext|>`` (not text).

    >>> b = last_token_boundary("Capulet.\\n\\n", torch.tensor([13, 198, 198, 49, 13, 628, 198, 13, 198, 198]))
    >>> b.token, b.as_token, b.at_boundary, b.usual, b.usual_count
    (628, 1, 3, (198, 198), 2)
    """
    ids = encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
    if not ids:
        raise ValueError(f"prompt must hold at least one token, got {prompt!r}")
    if ids[-1] == EOT_TOKEN_ID:
        return None
    tokens = training_tokens() if tokens is None else tokens
    return _boundary(ids[-1], tokens)


def _boundary(token: int, tokens: torch.Tensor) -> Boundary:
    text = token_bytes()[token]
    ways = _ways_to_write(text, tokens)
    longer = sum(n for path, n in ways.items() if len(path) == 1 and path[0] != token)
    split = {path: n for path, n in ways.items() if len(path) > 1 or path[0] != token}
    usual, usual_count = max(split.items(), key=lambda kv: kv[1], default=((token,), 0))
    return Boundary(token, text, ways.get((token,), 0), sum(ways.values()), usual, usual_count, longer)


def _ways_to_write(text: bytes, tokens: torch.Tensor) -> Counter[tuple[int, ...]]:
    """Each way ``tokens`` writes ``text`` from a token boundary (a path of token ids), with its count.

    A path is some tokens that are pieces of ``text`` and then one that covers the rest (and maybe more).
    Every place in the stream is one path, so the counts add up to the places where ``text`` begins at a
    boundary. The search follows only paths that occur, so it stays small.
    """
    ways: Counter[tuple[int, ...]] = Counter()
    pieces = _ids_by_bytes()
    stack = [(None, text, ())]  # (positions of the next token, None for all; text still to write; path so far)
    while stack:
        positions, rest, path = stack.pop()
        nxt = tokens if positions is None else tokens[positions]  # the token at each of those positions
        covers = covering_tokens(rest)  # tokens that write all of `rest` (and maybe more)
        counts = torch.bincount(nxt, minlength=VOCAB_SIZE)[covers]
        for t, n in zip(covers[counts > 0].tolist(), counts[counts > 0].tolist()):
            ways[path + (t,)] += n
        for cut in range(1, len(rest)):  # tokens that are a proper prefix of `rest`: the rest comes next
            piece = pieces.get(rest[:cut])
            if piece is None:
                continue
            found = (nxt == piece).nonzero().squeeze(1)
            after = (found if positions is None else positions[found]) + 1
            after = after[after < len(tokens)]
            if len(after):
                stack.append((after, rest[cut:], path + (piece,)))
    return ways


@functools.cache
def _ids_by_bytes() -> dict[bytes, int]:
    """Token bytes -> id, to find the tokens that are a prefix of some text."""
    return {b: i for i, b in enumerate(token_bytes())}


@functools.lru_cache(maxsize=256)
def covering_tokens(rest: bytes) -> torch.Tensor:
    """The ids whose bytes start with ``rest``: tokens that write all of it in one go.

    >>> [t for t in covering_tokens(b"\\n\\n").tolist() if t < 1000]
    [628]
    """
    return torch.tensor([i for i, b in enumerate(token_bytes()) if b.startswith(rest)], dtype=torch.long)


def boundary_warning(prompt: str | Sequence[int], tokens: torch.Tensor | None = None, *,
                     threshold: float = SHARE_THRESHOLD, fix: str = "token_healing=True") -> str | None:
    """One line of warning when ``prompt`` ends in a token the training split rarely ends on; else None.

    It fires when, of the places where the training split (or ``tokens``) has the last token's characters
    after a token boundary, fewer than ``threshold`` hold that very token: the model has rarely continued
    from there. The line says how the split usually writes those characters, and what to do (``fix``
    names the switch that heals it where the line is shown).

    >>> split = torch.tensor([13, 198, 198, 49, 13, 198, 198, 49, 13, 628, 198, 13])
    >>> print(boundary_warning("Capulet.\\n\\n", split, threshold=0.5))  # doctest: +ELLIPSIS
    the prompt ends in token 628 '\\n\\n': of the 3 places ... 1 (33.3%) are this token; most often ... 198, 198 ...
    >>> boundary_warning("Capulet.", split) is None
    True
    """
    check_real("threshold", threshold, "a number in (0, 1]", lambda v: 0 < v <= 1)
    b = last_token_boundary(prompt, tokens)
    if b is None or b.at_boundary == 0 or b.share >= threshold:
        return None
    if b.usual_count >= b.longer:
        usual = f"{', '.join(map(str, b.usual))} ({' '.join(_show(t) for t in b.usual)}, {b.usual_count:,} times)"
    else:
        usual = f"the start of a longer token ({b.longer:,} times)"
    return (f"the prompt ends in token {b.token} {_show(b.token)}: of the {b.at_boundary:,} places where the training "
            f"split has these characters after a token boundary, {b.as_token:,} ({b.share:.1%}) are this token; most "
            f"often they are {usual}. The model has rarely continued from here: try {fix}, or end the prompt "
            "before these characters")


def _show(token: int) -> str:
    """A token's text, quoted, with its whitespace escaped: ``'\\n\\n'``."""
    return repr(token_bytes()[token].decode("utf-8", errors="replace"))
