"""The decoding loop: turn a prompt into a continuation, one token at a time.

Each step runs the model, reshapes the last position's logits with the transforms of ``logits.py`` (in
transformers' order), picks a token (argmax, or a draw from the softmax) and appends it. Around that
core: batches of prompts of different lengths (left padding + attention mask), per-row end of sequence,
stop strings, several samples per prompt (the prompt's pass runs once, its cache rows copied), the KV
cache, and a streaming form.

>>> from minigpt.model import GPT, GPTConfig
>>> model = GPT(GPTConfig.from_preset("tiny"))
>>> len(generate(model, "Hello", max_new_tokens=3).new_tokens[0])
3
"""

from __future__ import annotations

import codecs
import contextlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch

from minigpt import logits as L
from minigpt.checks import check_int, check_keywords, check_model, check_type
from minigpt.healing import (
    back_up_rows,
    consistent_tokens,
    continuation_bytes,
    healing_allowed_tokens_fn,
    healing_tokens,
    still_to_write,
)
from minigpt.kv_cache import KVCache, check_memory_fits
from minigpt.model import GPT, position_ids_from_mask
from minigpt.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, decode, decode_bytes, encode

PAD_TOKEN_ID = EOT_TOKEN_ID  # GPT-2 has no padding token; <|endoftext|> fills the gaps (masked out)
PROMPT_KINDS = "a str, a list of str, or a (B, T) tensor of token ids"  # what generate and the searches take
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 64 bits; a larger seed would overflow inside torch


@dataclass
class DecodingSettings:
    """Every knob of the loop, checked once before any work starts; ``logits`` holds the transforms' settings.

    ``from_keywords`` builds it from keyword arguments, those that name a ``LogitsSettings`` field going to
    ``logits``. ``chain`` is the transforms to apply at every step, built once here.

    >>> DecodingSettings.from_keywords(max_new_tokens=5, temperature=0.7, do_sample=True).logits
    LogitsSettings(temperature=0.7)
    """

    max_new_tokens: int = 50
    do_sample: bool = False
    eos_token_id: int | Sequence[int] | None = None
    stop: str | Sequence[str] | None = None
    num_return_sequences: int = 1
    use_cache: bool = True
    allow_special: bool = False  # True: "<|endoftext|>" in a text prompt is the end-of-text token, not an error
    logits: L.LogitsSettings = field(default_factory=L.LogitsSettings)

    def __post_init__(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, 0)
        check_int("num_return_sequences", self.num_return_sequences, 1)
        for name in ("do_sample", "use_cache", "allow_special"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.logits, L.LogitsSettings):
            raise TypeError(f"logits must be a minigpt.logits.LogitsSettings, got {self.logits!r}")
        if self.logits.min_new_tokens > self.max_new_tokens:  # EOS could never be allowed: a contradiction
            raise ValueError(
                f"min_new_tokens must be <= max_new_tokens={self.max_new_tokens}, got {self.logits.min_new_tokens}"
            )
        if self.logits.temperature == 0:  # temperature 0 is the limit of sharpening: the argmax, i.e. greedy
            self.do_sample = False
        if not self.do_sample and self.num_return_sequences > 1:
            raise ValueError(
                f"num_return_sequences must be 1 with greedy decoding (all copies would be identical), "
                f"got {self.num_return_sequences}; pass do_sample=True to draw several samples"
            )
        self.eos_token_ids = as_eos_ids(self.eos_token_id)
        self.stops = _as_stops(self.stop)
        self.chain = self.logits.chain(sample=self.do_sample, eos_token_ids=self.eos_token_ids)

    @classmethod
    def from_keywords(cls, logits: L.LogitsSettings | None = None, **keywords: object) -> DecodingSettings:
        """The settings from keywords: ``LogitsSettings`` fields (or ``logits`` itself) and this class's own."""
        logits, rest = L.split_settings(keywords, logits)
        check_keywords(cls, rest, also=" and LogitsSettings' fields")
        return cls(**rest, logits=logits)


def as_eos_ids(eos: int | Sequence[int] | None) -> tuple[int, ...]:
    """The end-of-sequence setting as a tuple of token ids, checked: None, one id, or several.

    >>> as_eos_ids(50256), as_eos_ids([13, 50256]), as_eos_ids(None)
    ((50256,), (13, 50256), ())
    """
    ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < VOCAB_SIZE:
            raise ValueError(f"eos_token_id must be token ids in [0, {VOCAB_SIZE}), got {eos!r}")
    return ids


def _as_stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    stops = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    if any(not isinstance(s, str) or s == "" for s in stops):
        raise ValueError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    return stops


@dataclass
class Generation:
    """What every decoder returns: ``generate``, the searches, speculative decoding, ``FastDecoder.generate``.

    Row i of every field belongs to the same sequence. ``ids`` is (N, T) with left padding before each
    prompt and ``PAD_TOKEN_ID`` after rows that ended early; ``attention_mask`` marks the real tokens.
    ``new_tokens`` are the ids each row produced (the EOS token included when one ended the row). ``texts``
    are prompt + continuation, cut before a stop string (the ids still hold the token that completed it);
    they are None when the prompt was ids. Several rows per prompt (``num_return_sequences``, beams)
    sit together: prompt i's are rows i*n … i*n + n-1.

    The other fields are filled by the decoders that have them, None elsewhere: ``token_logprobs`` and
    ``distributions`` when ``generate`` is asked for them; ``scores``, one per row, from the searches that
    rank their rows (best first within each prompt); the three counts from speculative decoding.

    >>> out = Generation(torch.tensor([[15496, 11]]), torch.tensor([[1, 1]]), [[11]], ["Hello,"])
    >>> out.text, out.stopped_by
    ('Hello,', [None])
    """

    ids: torch.Tensor
    attention_mask: torch.Tensor
    new_tokens: list[list[int]]
    texts: list[str] | None = None
    stopped_by: list[str | None] = field(default_factory=list)  # "eos", "stop", or None (length)
    token_logprobs: list[list[float]] | None = None  # log-prob of each chosen token (processed dist.)
    distributions: list[torch.Tensor] | None = None  # per step (N, V) probabilities, if asked for
    scores: torch.Tensor | None = None  # (N,) ranked searches: beam score, or sample-and-rank's mean log-prob
    num_proposed: int | None = None  # speculative decoding: draft tokens put to the target,
    num_accepted: int | None = None  # how many of them it kept,
    num_target_passes: int | None = None  # and its forward passes (plain decoding: one per new token)

    def __post_init__(self) -> None:
        if not self.stopped_by:
            self.stopped_by = [None] * len(self.new_tokens)

    @property
    def text(self) -> str:
        """The single text of a one-row result."""
        if self.texts is None or len(self.texts) != 1:
            raise ValueError("text needs a text prompt and exactly one row; use .texts for several")
        return self.texts[0]

    @property
    def acceptance_rate(self) -> float:
        """Share of the proposed draft tokens that the target kept (speculative decoding); 0.0 if none were."""
        if self.num_proposed is None:
            raise ValueError("acceptance_rate needs a speculative decoder's result (num_proposed is None)")
        return self.num_accepted / self.num_proposed if self.num_proposed else 0.0


@torch.inference_mode()
def generate(
    model: GPT,
    prompt: str | Sequence[str] | torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    return_scores: bool = False,
    return_distributions: bool = False,
    token_healing: bool | int = False,
    logits: L.LogitsSettings | None = None,
    **settings,
) -> Generation:
    """Continue ``prompt`` (a string, a list of strings, or a (B, T) id tensor) with ``model``.

    ``logits`` (a ``minigpt.logits.LogitsSettings``) holds the transforms' settings: temperature (0 means
    greedy), the sampling filters, penalties, bans and biases, ``min_new_tokens``, and
    ``prefix_allowed_tokens_fn(batch_row, ids)``, which names the tokens allowed next; or pass its fields
    as keywords. The other ``settings`` are ``DecodingSettings``' own: ``max_new_tokens``, ``do_sample``,
    ``eos_token_id``, ``stop``, ``num_return_sequences``, ``use_cache``, ``allow_special``. (``batch_row``
    is the row of ``Generation``: with ``num_return_sequences=n``, prompt i's samples are rows i*n to
    i*n + n - 1). Sampling draws from ``generator``, or from one seeded with ``seed``, or else from torch's
    global generator (``torch.manual_seed``).

    ``token_healing=True`` (or a number n of tokens, True being 1) removes each prompt's last n tokens
    and makes the first new tokens write their text again, in whatever tokens the model prefers: a
    token is allowed while it starts with the text still to write or is a prefix of it
    (``minigpt.healing``). A prompt that ends inside a word, or in whitespace the corpus gives to the
    next word (``"\\n\\n"``, token 628, where the corpus has ``"\\n"``, ``"\\n"``), then continues as the
    corpus would. The mask is applied where ``prefix_allowed_tokens_fn`` would be (which it therefore
    excludes), so the sampling filters choose among the allowed tokens. ``new_tokens`` and ``ids`` start
    from the shortened prompt, so the first new tokens are the re-written ones, and the n tokens backed
    up are given back to ``max_new_tokens`` and ``min_new_tokens`` (the loop may run n steps more).
    ``texts`` are the prompt as given plus what comes after the re-written text (if the budget runs out
    inside it, the text ends there); stop strings apply only after it, and an ``eos_token_id`` that
    could re-write it is refused. It works with batches, ``num_return_sequences``, sampling and greedy
    decoding, and in ``stream``. With greedy decoding, a prompt that already ends on a clean boundary
    (where the model, given the shortened prompt, picks the removed token again) gets exactly the ids
    and text it gets without healing; a sampled run draws once more, for the re-written token, so its
    later draws differ. Unlike transformers' ``heal_tokens``, it does not strip the prompt's whitespace
    first (the whitespace is what gets healed), needs no tokenizer object, backs up as many tokens as
    asked, allows a token that is a prefix of the removed text (so ``"\\n\\n"`` can come back as two
    ``"\\n"``), and masks rather than biases (transformers adds 10 to the logits of the tokens that
    extend the last one, and regenerates that one token in a separate greedy call).

    A model in train mode is switched to eval mode for the call and back afterwards (``eval_mode``):
    dropout would otherwise make even greedy decoding random. A KV cache too big for the device's
    memory is refused before anything is allocated.

    >>> from minigpt.model import GPT, GPTConfig
    >>> out = generate(GPT(GPTConfig.from_preset("tiny")), ["Hi", "Good day"], max_new_tokens=2)
    >>> out.ids.shape
    torch.Size([2, 4])
    >>> out = generate(GPT(GPTConfig.from_preset("tiny")), "Hi\\n\\n", max_new_tokens=2, token_healing=True)
    >>> out.ids[0, 0].item(), decode(out.new_tokens[0]).startswith("\\n\\n"), out.text.startswith("Hi\\n\\n")
    (17250, True, True)
    """
    check_model("model", model)
    s = DecodingSettings.from_keywords(logits, **settings)
    n = check_token_healing(token_healing, s)
    ids, mask, texts = prepare_prompt(model, prompt, attention_mask, s)
    ids, mask, removed = heal_prompt(ids, mask, s, n)
    rng = make_generator(seed, generator, ids.device)
    state = LoopState(ids, mask, s.max_new_tokens, return_scores, return_distributions)
    state.removed = removed
    with eval_mode(model):
        for _ in _decode_steps(model, state, s, rng):
            pass
    return state.result(texts, s.stops)


def stream(
    model: GPT,
    prompt: str,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    token_healing: bool | int = False,
    logits: L.LogitsSettings | None = None,
    **settings,
) -> Iterator[tuple[int, str]]:
    """Yield ``(token_id, text_piece)`` as each token is made; the pieces join into the continuation.

    A piece never splits a UTF-8 character (a token can hold half of one: the rest waits for the next
    token), and text that might be the start of a stop string is held back until it is not. With
    ``token_healing`` (see ``generate``), the re-written end of the prompt is not yielded again: the pieces
    are what comes after the prompt as given. Settings and
    prompt are checked when ``stream`` is called, not at the first token. Like ``generate``, it decodes
    in eval mode; the model returns to train mode (if it was in it) when the stream ends or is closed.

    >>> from minigpt.model import GPT, GPTConfig
    >>> pieces = list(stream(GPT(GPTConfig.from_preset("tiny")), "Hi", max_new_tokens=4))
    >>> len(pieces)
    4
    """
    check_model("model", model)
    check_type("prompt", prompt, str, "a str when streaming")
    s = DecodingSettings.from_keywords(logits, **settings)
    if s.num_return_sequences != 1:
        raise ValueError(f"num_return_sequences must be 1 when streaming, got {s.num_return_sequences}")
    n = check_token_healing(token_healing, s)
    ids, mask, _ = prepare_prompt(model, prompt, None, s)
    ids, mask, removed = heal_prompt(ids, mask, s, n)
    rng = make_generator(seed, generator, ids.device)
    state = LoopState(ids, mask, s.max_new_tokens, False, False)
    state.removed = removed
    return _stream(model, state, s, rng)


def _stream(
    model: GPT, state: LoopState, s: DecodingSettings, rng: torch.Generator | None
) -> Iterator[tuple[int, str]]:
    """``stream``'s generator: it runs only once the caller asks for the first piece."""
    with eval_mode(model):
        tokens = (state.new_tokens[0][-1] for _ in _decode_steps(model, state, s, rng))
        # token healing re-writes the prompt's last bytes: the caller has them, so they are skipped
        yield from text_pieces(tokens, s, skip=len(state.removed[0]))


def text_pieces(tokens: Iterable[int], s: DecodingSettings, skip: int = 0) -> Iterator[tuple[int, str]]:
    """``(token, piece)`` for each new token of one row, as ``stream`` yields them, from any source of tokens.

    A piece never splits a UTF-8 character, text that may start a stop string waits until it cannot, and
    the pieces end at an EOS (not printed), at a stop string (cut before it) or after ``s.max_new_tokens``
    tokens: no token is asked of ``tokens`` after that. The first ``skip`` bytes of the text are left out.
    ``minigpt generate`` streams the fast path's tokens through it.

    >>> from minigpt.tokenizer import encode
    >>> list(text_pieces(encode("Fair is foul."), DecodingSettings(max_new_tokens=9, stop=" foul")))
    [(30099, 'Fair'), (318, ' is'), (15626, '')]
    """
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text, sent = "", 0  # the continuation decoded so far, and how much of it was already yielded
    for n, token in enumerate(tokens, 1):
        last = n == s.max_new_tokens or token in s.eos_token_ids
        if token not in s.eos_token_ids:
            piece = decode_bytes([token])
            cut, skip = min(skip, len(piece)), skip - min(skip, len(piece))
            text += utf8.decode(piece[cut:], final=last)
        end = _stop_cut(text, s.stops)
        safe = end if end is not None else len(text) if last else len(text) - _held_back(text, s.stops)
        yield token, text[sent:safe]
        sent = safe
        if last or end is not None:
            return


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run the block with ``model`` in eval mode, then give every submodule back the mode it had.

    Every decoder switches rather than refuses: in train mode dropout zeroes random activations, so even
    greedy decoding would turn random, and the natural place to look at samples is in the middle of
    training (or of a notebook that just trained).

    >>> from minigpt.model import GPT, GPTConfig
    >>> model = GPT(GPTConfig.from_preset("tiny", dropout=0.1)).train()
    >>> with eval_mode(model):
    ...     model.training
    False
    >>> model.training
    True
    """
    modes = [(m, m.training) for m in model.modules()]  # per module: a model can be partly in eval mode
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _stop_cut(text: str, stops: Sequence[str]) -> int | None:
    """Index where the first stop string begins in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string."""
    return max((n for s in stops for n in range(len(s) - 1, 0, -1) if text.endswith(s[:n])), default=0)


def make_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device
) -> torch.Generator | None:
    """The random generator a decoder draws from: ``generator``, a fresh one seeded with ``seed``, or None.

    None means torch's global generator (``torch.manual_seed``). The same seed gives the same draws.

    >>> a, b = make_generator(7, None, torch.device("cpu")), make_generator(7, None, torch.device("cpu"))
    >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    True
    """
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is None:
        return generator  # None: draw from torch's global generator
    check_int("seed", seed, 0, high=SEED_MAX)
    return torch.Generator(device=device).manual_seed(seed)


def prepare_prompt(
    model: GPT, prompt: str | Sequence[str] | torch.Tensor, attention_mask: torch.Tensor | None,
    s: DecodingSettings,
) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """Prompt → left-padded ids (B, T), their mask, and the prompt texts (None for id input).

    A string, a list of strings (left-padded to the longest), or (B, T) ids with an optional mask; each
    is checked, and cropped to fit the model's context with room for ``s.max_new_tokens``. A run whose peak
    memory (KV cache, logits and activations for every row: ``minigpt.kv_cache.peak_bytes``) would not fit
    is refused here, before the rows are repeated for ``s.num_return_sequences``.

    >>> from minigpt.model import GPT, GPTConfig
    >>> ids, mask, texts = prepare_prompt(GPT(GPTConfig.from_preset("tiny")), ["Hi", "Good day"], None,
    ...                                   DecodingSettings(max_new_tokens=2))
    >>> mask.tolist(), texts
    ([[0, 1], [1, 1]], ['Hi', 'Good day'])
    """
    check_prompt(prompt)
    texts = None
    if isinstance(prompt, torch.Tensor):
        ids, mask = check_id_prompt(prompt, attention_mask, model.config.vocab_size)
    else:
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        if attention_mask is not None:
            raise ValueError("attention_mask is only for id prompts; text prompts are padded for you")
        ids, mask = _pad_left([encode_prompt(t, allow_special=s.allow_special) for t in texts])
    ids, mask = _fit_context(ids, mask, model.config.block_size, s.max_new_tokens)
    device = model.transformer.wte.weight.device
    # several samples per prompt: repeat each row (row i becomes rows i*n … i*n + n-1)
    n = s.num_return_sequences
    B, P = ids.shape  # before the rows are repeated: a huge n would fail there already
    what = (f"batch size {B}" if n == 1 else f"num_return_sequences={n} × batch size {B}") + f" = {B * n} rows"
    check_memory_fits(model, B * n, P + s.max_new_tokens, what, prompt_rows=B, prompt_len=P, use_cache=s.use_cache)
    ids, mask = ids.repeat_interleave(n, 0).to(device), mask.repeat_interleave(n, 0).to(device)
    return ids, mask, None if texts is None else [t for t in texts for _ in range(n)]


def check_token_healing(token_healing: object, s: DecodingSettings) -> int:
    """How many tokens ``token_healing`` backs up (0: off), checked with the settings it must work with.

    >>> check_token_healing(True, DecodingSettings())
    1
    >>> check_token_healing(True, DecodingSettings.from_keywords(prefix_allowed_tokens_fn=lambda row, ids: [13]))
    Traceback (most recent call last):
        ...
    ValueError: prefix_allowed_tokens_fn must be None with token_healing=True (both constrain the first tokens...
    """
    n = healing_tokens(token_healing)
    if n and s.logits.prefix_allowed_tokens_fn is not None:
        raise ValueError(
            f"prefix_allowed_tokens_fn must be None with token_healing={token_healing!r} (both constrain the first "
            "tokens, and the function would see the backed-up prompt; back the prompt up yourself with "
            f"minigpt.healing.back_up and pass its ids), got {s.logits.prefix_allowed_tokens_fn!r}"
        )
    return n


def heal_prompt(
    ids: torch.Tensor, mask: torch.Tensor, s: DecodingSettings, n: int
) -> tuple[torch.Tensor, torch.Tensor, list[bytes]]:
    """With token healing (``n`` >= 1), back up each row's last ``n`` tokens (``minigpt.healing.back_up_rows``).

    Returns the ids and mask to decode from, and the bytes each row must write again (b"" without healing).
    The tokens backed up are given back to the budget: ``s.max_new_tokens`` and ``s.logits.min_new_tokens`` grow
    by their number. An end-of-sequence token that could be one of the re-written tokens is refused: it
    would end the row inside its prompt.

    >>> ids = torch.tensor([encode("Capulet.\\n\\n")])
    >>> ids, mask, removed = heal_prompt(ids, torch.ones_like(ids), DecodingSettings(), 1)
    >>> ids.tolist(), removed
    ([[15610, 25132, 13]], [b'\\n\\n'])
    """
    if not n:
        return ids, mask, [b""] * ids.size(0)
    ids, mask, removed = back_up_rows(ids, mask, n)
    for rest in set(removed):
        clash = set(s.eos_token_ids) & set(consistent_tokens(rest).tolist())
        if clash:
            raise ValueError(
                f"eos_token_id must not hold a token that token_healing may use to write the prompt's last "
                f"{rest.decode('utf-8', errors='replace')!r} again (the row would end inside its prompt), got "
                f"{sorted(clash)} in {s.eos_token_id!r}"
            )
    s.max_new_tokens += n
    s.logits = replace(s.logits, min_new_tokens=s.logits.min_new_tokens + n)
    s.chain = s.logits.chain(sample=s.do_sample, eos_token_ids=s.eos_token_ids)
    return ids, mask, removed


def check_prompt(prompt: object) -> None:
    """Raise a ``TypeError`` unless ``prompt`` is one of ``PROMPT_KINDS``, naming the first wrong item of a list.

    >>> check_prompt(b"Hi")
    Traceback (most recent call last):
        ...
    TypeError: prompt must be a str, a list of str, or a (B, T) tensor of token ids, got b'Hi' (bytes)
    >>> check_prompt(["Hi", 42])
    Traceback (most recent call last):
        ...
    TypeError: prompt[1] must be a str (prompt is a list of str), got 42 (int)
    """
    check_type("prompt", prompt, (str, list, tuple, torch.Tensor), PROMPT_KINDS)
    if isinstance(prompt, (list, tuple)):
        for i, text in enumerate(prompt):
            check_type(f"prompt[{i}]", text, str, "a str (prompt is a list of str)")


def encode_prompt(text: object, *, allow_special: bool = False) -> list[int]:
    """The ids of one text prompt; anything but a non-empty str is refused with a clear error.

    ``<|endoftext|>`` in the text is refused unless ``allow_special=True`` (then it is token 50256).

    >>> encode_prompt("Every effort moves you")
    [6109, 3626, 6100, 345]
    """
    check_type("prompt", text, str, PROMPT_KINDS)
    ids = encode(text, allow_special=allow_special)
    if not ids:
        raise ValueError("prompt must contain at least one token, got an empty string")
    return ids


def check_id_prompt(
    ids: torch.Tensor, mask: torch.Tensor | None, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a (B, T) id prompt and its left-padded 0/1 mask (all ones when None); return both as int64.

    >>> check_id_prompt(torch.tensor([[5, 6]]), None, vocab_size=10)
    (tensor([[5, 6]]), tensor([[1, 1]]))
    """
    check_type("prompt ids", ids, torch.Tensor, "a (B, T) tensor of token ids")
    if ids.dim() != 2 or ids.size(0) == 0 or ids.size(1) == 0 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"prompt ids must be a non-empty (B, T) integer tensor, got {ids.dtype} {tuple(ids.shape)}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        bad = ids[(ids < 0) | (ids >= vocab_size)][0].item()
        raise ValueError(f"prompt ids must be in [0, {vocab_size}), got {bad}")
    if mask is None:
        return ids.long(), torch.ones_like(ids, dtype=torch.long)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask must have the prompt's shape {tuple(ids.shape)}, got {tuple(mask.shape)}")
    if not ((mask == 0) | (mask == 1)).all() or (mask[:, -1] == 0).any() or (mask[:, 1:] < mask[:, :-1]).any():
        raise ValueError(
            "attention_mask must hold only 0 and 1 and be left-padded: in each row, zeros (padding) "
            "come only before the first 1, and the last column is 1"
        )
    return ids.long(), mask.long()


def _pad_left(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding lines up every prompt's last token at the same column, where generation goes on."""
    if not rows:
        raise ValueError("prompt must not be an empty list")
    width = max(len(r) for r in rows)
    ids = torch.tensor([[PAD_TOKEN_ID] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _fit_context(
    ids: torch.Tensor, mask: torch.Tensor, block_size: int, max_new_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy for long prompts: keep the last tokens so prompt + new tokens fit the context."""
    if max_new_tokens >= block_size:
        raise ValueError(
            f"max_new_tokens must be < the model's context of {block_size} tokens, got {max_new_tokens}"
        )
    room = block_size - max_new_tokens
    if ids.size(1) > room:
        warnings.warn(
            f"prompt of {ids.size(1)} tokens + {max_new_tokens} new tokens exceeds the context of "
            f"{block_size}; keeping the last {room} prompt tokens",
            stacklevel=4,
        )
        ids, mask = ids[:, -room:], mask[:, -room:]
    return ids, mask


class LoopState:
    """The growing sequences and the bookkeeping of which rows are still running.

    ``ids`` and ``mask`` (B, T + max_new) are allocated once; ``length`` columns are filled, ``active``
    holds the rows still decoding, ``new_tokens`` each row's continuation. ``generate`` and
    ``contrastive_search`` share it; ``result`` turns it into a ``Generation``.
    """

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, max_new: int, scores: bool, dists: bool):
        B, T = ids.shape
        self.prompt_len = T
        # room for every new token up front: rows that end early keep PAD_TOKEN_ID with mask 0
        self.ids = torch.cat([ids, ids.new_full((B, max_new), PAD_TOKEN_ID)], 1)
        self.mask = torch.cat([mask, mask.new_zeros((B, max_new))], 1)
        self.length = T  # columns filled so far
        self.active = torch.arange(B, device=ids.device)  # rows still generating
        self.new_tokens: list[list[int]] = [[] for _ in range(B)]
        self.stopped_by: list[str | None] = [None] * B
        self.logprobs = [[] for _ in range(B)] if scores else None
        self.distributions: list[torch.Tensor] | None = [] if dists else None
        self.removed: list[bytes] = [b""] * B  # token healing: the prompt text each row writes again first

    def append(self, tokens: torch.Tensor, probs: torch.Tensor, logprobs: torch.Tensor) -> None:
        """Write this step's token (len(active),) for each running row."""
        self.ids[self.active, self.length] = tokens
        self.mask[self.active, self.length] = 1
        self.length += 1
        for row, tok, lp in zip(self.active.tolist(), tokens.tolist(), logprobs.tolist()):
            self.new_tokens[row].append(tok)
            if self.logprobs is not None:
                self.logprobs[row].append(lp)
        if self.distributions is not None:
            full = probs.new_zeros((self.ids.size(0), probs.size(1)))
            full[self.active] = probs
            self.distributions.append(full)

    def continuation(self, row: int) -> str:
        """The text ``row`` added after its prompt as given (after the re-written text, with token healing)."""
        if not self.removed[row]:
            return decode(self.new_tokens[row])
        return continuation_bytes(self.removed[row], self.new_tokens[row]).decode("utf-8", errors="replace")

    def result(self, texts: list[str] | None, stops: tuple[str, ...]) -> Generation:
        ids, mask = self.ids[:, : self.length], self.mask[:, : self.length]
        if texts is not None:
            texts = [self._text(row, t, stops) for row, t in enumerate(texts)]
        return Generation(ids, mask, self.new_tokens, texts, self.stopped_by, self.logprobs, self.distributions)

    def _text(self, row: int, prompt: str, stops: tuple[str, ...]) -> str:
        missing = still_to_write(self.removed[row], self.new_tokens[row]) if self.removed[row] else b""
        if missing:  # max_new_tokens ran out before the removed text was written again: the text ends inside it
            whole = prompt.encode()
            return whole[: len(whole) - len(missing)].decode("utf-8", errors="replace")
        return prompt + cut_at_stop(self.continuation(row), stops)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to where the first of ``stop_strings`` begins (all of it when none occurs).

    The earliest in the text wins, whatever the order of ``stop_strings``.

    >>> cut_at_stop("Fair is foul. And foul is fair\\n", ["\\n", "."])
    'Fair is foul'
    """
    end = _stop_cut(text, stop_strings)
    return text if end is None else text[:end]


def _decode_steps(
    model: GPT, state: LoopState, s: DecodingSettings, rng: torch.Generator | None
) -> Iterator[None]:
    """The loop itself; yields after each step so ``stream`` can report the new token."""
    n = s.num_return_sequences  # rows come in runs of n copies of one prompt
    cache = KVCache.for_model(model, state.ids.size(0) // n, state.ids.size(1)) if s.use_cache else None
    heal = healing_allowed_tokens_fn(state.removed, state.prompt_len) if any(state.removed) else None
    for step in range(s.max_new_tokens):
        if len(state.active) == 0:
            return
        context, mask = state.ids[state.active, : state.length], state.mask[state.active, : state.length]
        # the prompt's pass runs once per prompt; its cache rows are then copied to the n samples
        logits = prefill(model, context, mask, cache, n) if step == 0 else next_logits(model, context, mask, cache)
        healing = heal is not None and any(still_to_write(state.removed[row], state.new_tokens[row])
                                           for row in state.active.tolist())
        tokens, probs, logprobs = _pick(logits, context, state.active, step, s, rng,
                                        allowed_fn=heal if healing else None)
        state.append(tokens, probs, logprobs)
        yield
        finished = [row_finished(state, row, s) for row in state.active.tolist()]
        if any(finished):
            keep = torch.tensor([not f for f in finished], device=state.active.device)
            state.active = state.active[keep]
            if cache is not None:  # drop finished rows from the cache: they stop costing work
                cache.reorder(keep.nonzero().squeeze(1))


@torch.inference_mode()
def next_logits(model: GPT, ids: torch.Tensor, mask: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """Next-token logits (R, V) of each left-padded (R, T) row of ``ids``, ``mask`` marking its real tokens.

    With a ``cache`` only the columns it has not seen yet are fed (all of them at the first call, then one
    per step); without one the whole rows are run again.

    >>> from minigpt.model import GPT, GPTConfig
    >>> model, ids = GPT(GPTConfig.from_preset("tiny")), torch.tensor([[50256, 15496], [6109, 3626]])
    >>> next_logits(model, ids, torch.tensor([[0, 1], [1, 1]]), None).shape
    torch.Size([2, 50257])
    """
    start = cache.length if cache is not None else 0
    positions = position_ids_from_mask(mask)[:, start:]  # a left-padded prompt starts at 0 like any other
    return model(ids[:, start:], attention_mask=mask, position_ids=positions, kv_cache=cache, last_only=True)[:, -1]


def prefill(model: GPT, ids: torch.Tensor, mask: torch.Tensor, cache: KVCache | None, copies: int) -> torch.Tensor:
    """``next_logits`` for rows that come in runs of ``copies`` equal prompts, paying for one row of each run.

    Several samples or beams of a prompt share its prefix: the prompt's pass runs once per prompt, then
    its logits and cache rows are copied (``cache`` holds R / copies rows before, R after).

    >>> from minigpt.model import GPT, GPTConfig
    >>> model, ids = GPT(GPTConfig.from_preset("tiny")), torch.tensor([[6109, 3626]] * 3)
    >>> cache = KVCache.for_model(model, batch_size=1, max_len=4)
    >>> logits = prefill(model, ids, torch.ones_like(ids), cache, copies=3)
    >>> logits.shape, cache.keys[0].shape[0], torch.equal(logits[0], logits[2])
    (torch.Size([3, 50257]), 3, True)
    """
    if copies == 1:  # nothing to share (and no cache to copy)
        return next_logits(model, ids, mask, cache)
    first = torch.arange(0, ids.size(0), copies, device=ids.device)  # one row of each run
    logits = next_logits(model, ids[first], mask[first], cache)  # (R / copies, V)
    if cache is not None:
        cache.reorder(torch.arange(len(first), device=ids.device).repeat_interleave(copies))
    return logits.repeat_interleave(copies, 0)


def _pick(
    logits: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, step: int, s: DecodingSettings,
    rng: torch.Generator | None, allowed_fn: L.AllowedTokensFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transform the logits, choose one token per row; also return the distribution and log-probs.

    ``rows`` are the batch rows the logits belong to (finished rows have left): what
    ``prefix_allowed_tokens_fn`` is told. ``allowed_fn`` takes its place while token healing re-writes
    the prompt's end (the two never come together: ``check_token_healing`` refuses it).
    """
    chain = s.chain
    if allowed_fn is not None:  # a few steps only: the settings are checked again for them
        chain = replace(s.logits, prefix_allowed_tokens_fn=allowed_fn).chain(
            sample=s.do_sample, eos_token_ids=s.eos_token_ids)
    # transforms and softmax in fp32, whatever the model's dtype
    scores = chain(logits.float(), ids, new_tokens=step, batch_ids=rows.tolist())
    nothing_left = torch.isneginf(scores).all(dim=-1)  # (B,): constraints that together forbid every token
    if nothing_left.any():
        row = int(rows[int(nothing_left.nonzero()[0])])
        raise ValueError(
            f"the settings forbid every token at new token {step + 1} of row {row}: the allowed tokens "
            "(prefix_allowed_tokens_fn or token_healing) are all removed by bad_words_ids, suppress_tokens or "
            "the other filters; loosen one of them")
    probs = torch.softmax(scores, dim=-1)  # (B, V)
    if s.do_sample:
        tokens = torch.multinomial(probs, 1, generator=rng).squeeze(1)
    else:
        tokens = scores.argmax(dim=-1)
    logprobs = torch.log_softmax(scores, dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)
    return tokens, probs, logprobs


def row_finished(state: LoopState, row: int, s: DecodingSettings) -> bool:
    """Has ``row`` just emitted an EOS or completed a stop string? Records why."""
    new = state.new_tokens[row]
    if new[-1] in s.eos_token_ids:
        state.stopped_by[row] = "eos"
    elif s.stops and _stop_cut(_recent_text(state, row, s.stops), s.stops) is not None:
        state.stopped_by[row] = "stop"
    return state.stopped_by[row] is not None


def _recent_text(state: LoopState, row: int, stops: tuple[str, ...]) -> str:
    """The end of ``row``'s continuation, long enough to hold any stop string (all of it, with token healing)."""
    if state.removed[row]:  # only text after the re-written prompt can stop the row
        return state.continuation(row)
    return decode(state.new_tokens[row][-_stop_window(stops) :])


def _stop_window(stops: tuple[str, ...]) -> int:
    """Tokens to decode when looking for a stop string: each token holds at least one byte."""
    return max(len(x.encode()) for x in stops) + 1


