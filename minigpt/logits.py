"""Logits transforms: the small functions that turn the model's next-token scores into what we sample from.

Each function takes ``logits`` of shape (B, V), one row of scores per sequence, and returns a new tensor of
the same shape; the input is never modified. A token is removed by setting its logit to ``-inf``, so softmax
gives it probability exactly 0. The semantics are those of Hugging Face transformers 4.55
(``generation/logits_process.py``), which the tests use as the reference.

``LogitsSettings`` holds every setting of the transforms, checked once when it is built. Its ``chain``
is the list of transforms those settings switch on, in an order that is data (``ORDERS``), built once per
generation and applied at every step; printing it shows each step's setting, function and argument.
transformers' order (``_get_logits_processor``) is the default:

1. sequence bias: added to a token, or to the last token of a sequence whose prefix just occurred
   (``apply_sequence_bias``)
2. repetition penalty (``repetition_penalty``)
3. frequency and presence penalties, OpenAI's (``apply_frequency_penalty``, ``apply_presence_penalty``);
   transformers has none: they sit where vLLM puts them, right after the repetition penalty
4. no-repeat n-gram ban (``no_repeat_ngram``)
5. bad words: banned tokens and token sequences (``ban_bad_words``)
6. min-new-tokens: EOS banned while fewer than ``min_new_tokens`` were generated (``suppress_eos``)
7. a function that names the allowed next tokens (``allowed_tokens_filter``)
8. tokens that are never allowed (``suppress_tokens``)
9. temperature (``apply_temperature``), only when sampling
10. top-k (``top_k_filter``), only when sampling
11. top-p (``top_p_filter``), only when sampling
12. min-p (``min_p_filter``), only when sampling
13. typical sampling (``typical_filter``), only when sampling
14. epsilon sampling (``epsilon_filter``), only when sampling
15. eta sampling (``eta_filter``), only when sampling
16. the watermark: δ added to a green list seeded by the context (``watermark_logits``), last, as in
    transformers, in greedy decoding too (in the llama.cpp order it comes just before temperature)

Penalties, bans and biases come first because they describe the sequence, whatever the decoding; the
sampling filters come last, temperature before them, so that they see the probabilities that will really
be sampled. llama.cpp's sampler chain (``order="llama.cpp"``) puts temperature last instead: its filters
cut the model's own distribution, and temperature only reshapes what survives.

The public transforms check their arguments, so each can be used on its own; the chain calls the same
code without the checks (``_top_k_filter`` is ``top_k_filter`` less its checks): the settings were checked
once, when ``LogitsSettings`` was built.

>>> logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
>>> process_logits(logits, torch.tensor([[0]]), new_tokens=1, do_sample=True, repetition_penalty=2.0, top_k=2)
tensor([[1., 1., -inf, -inf]])
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch

from minigpt.arguments import option
from minigpt.checks import check_choice, check_int, check_real
from minigpt.tokenizer import EOT_TOKEN, EOT_TOKEN_ID, VOCAB_SIZE, encode

# {(token ids…): bias} or [(token ids, bias), …]: a single id is biased at every step, a longer sequence's
# last id when the rest of it just occurred
SequenceBias = Mapping[Sequence[int], float] | Sequence[tuple[Sequence[int], float]]
# (batch row, that row's ids so far (T,)) -> the token ids allowed next
AllowedTokensFn = Callable[[int, torch.Tensor], Sequence[int] | torch.Tensor]


def _check_fraction(name: str, value: object) -> None:
    # top_p = 0 would reduce sampling to greedy and min_p = 0 filters nothing: None is how to switch either off
    check_real(name, value, "in (0, 1]", lambda v: 0 < v <= 1)


def _check_penalty(value: object) -> None:
    check_real("repetition_penalty", value, "> 0", lambda v: v > 0)


def _check_cutoff(name: str, value: object) -> None:
    # transformers' bounds: 0 filters nothing (None switches a cutoff off), and epsilon 1 would keep only the
    # most likely token, which is greedy decoding
    check_real(name, value, "in (0, 1)", lambda v: 0 < v < 1)


def _check_openai_penalty(name: str, value: object) -> None:
    # the range the OpenAI API accepts; negative values reward repeating
    check_real(name, value, "a number in [-2, 2]", lambda v: -2 <= v <= 2)


def _token_ids(name: str, ids: object, vocab_size: int, allowed: str, setting: object) -> tuple[int, ...]:
    """``ids`` as a tuple of token ids, or an error naming ``name``, what is ``allowed`` and the whole ``setting``."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or any(
        isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in ids
    ):
        raise TypeError(f"{name} must be {allowed}, got {setting!r}")
    if len(ids) == 0 or any(not 0 <= i < vocab_size for i in ids):
        raise ValueError(f"{name} must be {allowed}, got {setting!r}")
    return tuple(int(i) for i in ids)


def _as_suppress_tokens(value: object, vocab_size: int) -> tuple[int, ...]:
    allowed = f"a non-empty list of token ids in [0, {vocab_size})"
    return _token_ids("suppress_tokens", value, vocab_size, allowed, value)


def _as_bad_words(value: object, vocab_size: int) -> list[tuple[int, ...]]:
    allowed = f"a non-empty list of non-empty token-id lists, ids in [0, {vocab_size})"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"bad_words_ids must be {allowed}, got {value!r}")
    if len(value) == 0:
        raise ValueError(f"bad_words_ids must be {allowed}, got {value!r}")
    return [_token_ids("bad_words_ids", word, vocab_size, allowed, value) for word in value]


def _as_sequence_bias(value: object, vocab_size: int) -> dict[tuple[int, ...], float]:
    allowed = (
        f"a non-empty dict {{(token ids, …): bias}} or list of (token ids, bias) pairs, ids in [0, {vocab_size}), "
        "each bias a number below +inf (-inf bans)"
    )
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif not isinstance(value, (str, bytes)) and isinstance(value, Sequence) and all(
        isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2 for pair in value
    ):
        pairs = [tuple(pair) for pair in value]
    else:
        raise TypeError(f"sequence_bias must be {allowed}, got {value!r}")
    if not pairs:
        raise ValueError(f"sequence_bias must be {allowed}, got {value!r}")
    biases = {}
    for ids, bias in pairs:
        ids = _token_ids("sequence_bias", ids, vocab_size, allowed, value)
        if isinstance(bias, bool) or not isinstance(bias, numbers.Real):
            raise TypeError(f"sequence_bias must be {allowed}, got {value!r}")
        if not bias < math.inf:  # +inf would make softmax NaN; NaN fails every comparison
            raise ValueError(f"sequence_bias must be {allowed}, got {value!r}")
        biases[ids] = float(bias)  # a sequence given twice: the last bias wins, as in transformers
    return biases



def _ban_flag(value: str) -> list[int]:
    """``--ban TEXT``: TEXT's token ids, a sequence generation must never produce."""
    if not value:
        raise argparse.ArgumentTypeError("must be a non-empty text, got ''")
    return _flag_text_ids(value, value)


def _flag_text_ids(text: str, value: str) -> list[int]:
    """The ids of a flag's TEXT, refused with the reason (for argparse to print) where it holds ``<|endoftext|>``.

    A ValueError from a ``type=`` function would print as "invalid _ban_flag value", without the reason.

    >>> _flag_text_ids("Hi<|endoftext|>", "Hi<|endoftext|>")
    Traceback (most recent call last):
        ...
    argparse.ArgumentTypeError: TEXT must be plain text without the special token '<|endoftext|>' (it is the ...
    """
    if EOT_TOKEN in text:
        raise argparse.ArgumentTypeError(
            f"TEXT must be plain text without the special token {EOT_TOKEN!r} (it is the end-of-text token "
            f"{EOT_TOKEN_ID}, not text: to keep it from being generated, use --suppress-tokens {EOT_TOKEN_ID}), "
            f"got {value!r}"
        )
    return encode(text)


def _bias_flag(value: str) -> tuple[tuple[int, ...], float]:
    """``--bias TEXT=VALUE``: TEXT's token ids and the bias (the last ``=`` splits, so TEXT may contain one)."""
    text, sep, number = value.rpartition("=")
    try:
        bias = float(number)
    except ValueError:
        bias = None
    if not sep or not text or bias is None:
        raise argparse.ArgumentTypeError(f"must be TEXT=VALUE with VALUE a number, e.g. ' love=2', got {value!r}")
    return tuple(_flag_text_ids(text, value)), bias


SEEDING_SCHEMES = ("lefthash", "selfhash")
# transformers' fixed table for selfhash: a permutation of 0 … 1,000,002 (a prime) seeded with the hashing key
TABLE_SIZE = 1_000_003
SELFHASH_CANDIDATES = 40  # selfhash looks for green tokens among this many most likely ones (transformers' choice)


@dataclasses.dataclass(frozen=True)
class WatermarkSettings:
    """The watermark of Kirchenbauer et al. (2023), with the settings and defaults of transformers 4.55.

    At every step a seeded permutation of the vocabulary chooses a "green list", its first
    ``int(V * greenlist_ratio)`` ids, and ``bias`` is added to their logits, so that watermarked text holds
    more green tokens than the fraction ``greenlist_ratio`` that chance gives (``minigpt.watermark.detect``).
    The seed comes from the context and ``hashing_key``: "lefthash" hashes the previous token (only the
    last one, whatever ``context_width``, as in transformers: a wider context only leaves the first
    ``context_width`` tokens of a text unscored by the detector), "selfhash" the last ``context_width``
    tokens counting the candidate token itself, which must then be green in its own list. Checked when
    built: ValueError or TypeError naming the setting.

    >>> WatermarkSettings(bias=1.0)
    WatermarkSettings(greenlist_ratio=0.25, bias=1.0, hashing_key=15485863, seeding_scheme='lefthash', context_width=1)
    >>> WatermarkSettings(greenlist_ratio=1.0)
    Traceback (most recent call last):
    ValueError: greenlist_ratio must be in (0, 1), got 1.0
    """

    greenlist_ratio: float = option(0.25, "γ: the fraction of the vocabulary that is green at each step")
    bias: float = option(2.0, "δ: added to the green tokens' logits", name="--watermark-bias")
    hashing_key: int = option(15485863, "the key that seeds the green lists (keep your own secret)")
    seeding_scheme: str = option("lefthash", "lefthash (the previous token seeds the green list) or selfhash "
                                 "(the candidate token too)", choices=SEEDING_SCHEMES)
    context_width: int = option(1, "the seed's window of tokens (lefthash hashes only the last, as transformers)")

    def __post_init__(self) -> None:
        check_real("greenlist_ratio", self.greenlist_ratio, "in (0, 1)", lambda v: 0 < v < 1)
        check_real("bias", self.bias, "a finite number", math.isfinite)
        # selfhash multiplies the key in int64 tensors, and torch seeds take at most 64 bits
        check_int("hashing_key", self.hashing_key, 0, high=2**63 - 1)
        check_choice("seeding_scheme", self.seeding_scheme, SEEDING_SCHEMES)
        check_int("context_width", self.context_width, 1)


DEFAULT_WATERMARK = WatermarkSettings()  # transformers' WatermarkingConfig() (a frozen, shareable default)


# The chain's orders. The settings that describe the sequence come first in both; they differ in where
# temperature goes: before the sampling filters (transformers), or after them (llama.cpp's default chain,
# top-k, typical, top-p, min-p, then temperature; epsilon and eta, which llama.cpp lacks, join the filters).
# The watermark comes after every other transform in transformers (its #34630): δ is added to the logits that
# are sampled, after temperature. llama.cpp has none; its order keeps temperature last, so the watermark biases
# what the filters kept and temperature then scales it with the rest: δ counts as δ / temperature there
_SEQUENCE = ("sequence_bias", "repetition_penalty", "frequency_penalty", "presence_penalty", "no_repeat_ngram_size",
             "bad_words_ids", "min_new_tokens", "prefix_allowed_tokens_fn", "suppress_tokens")
ORDERS = {
    "transformers": (*_SEQUENCE, "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                     "watermark"),
    "llama.cpp": (*_SEQUENCE, "top_k", "typical_p", "top_p", "min_p", "epsilon_cutoff", "eta_cutoff", "watermark",
                  "temperature"),
}
SAMPLING = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")  # only when sampling
# the value that switches a setting off, besides None (a temperature of 1 changes nothing, nor does a penalty of 0)
# the smallest temperature above 0: below it a draw is greedy decoding in all but exact ties (two logits 0.01
# apart differ by a factor e^100 in probability, past what float32 holds), and logits / temperature overflows
# float32 (1e-45 turns every logit into ±inf, and the softmax into NaN); temperature=0 is greedy decoding itself
MIN_TEMPERATURE = 1e-4
OFF = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0,
       "eta_cutoff": 0.0, "repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0,
       "no_repeat_ngram_size": 0, "min_new_tokens": 0}


@dataclasses.dataclass(frozen=True, repr=False)
class LogitsSettings:
    """Every setting of the logits transforms, checked once when built; None switches a setting off.

    Raises ValueError (or TypeError for a wrong type) naming the setting, the value and what is allowed.
    Temperature 0 is allowed: it means greedy decoding, which the loops handle. A temperature above 0 must
    be at least ``MIN_TEMPERATURE`` (1e-4): a floor, rather than a division done some exact way, since below
    it logits / temperature can overflow float32 (``--temperature 1e-45`` made every logit infinite and the
    softmax NaN) and the draw is greedy decoding anyway in all but exact ties. Token ids are checked
    against GPT-2's vocabulary. ``chain`` turns the settings into the transforms to run at every step.

    >>> LogitsSettings(temperature=0.7, top_k=50)
    LogitsSettings(temperature=0.7, top_k=50)
    >>> LogitsSettings(top_p=1.5)
    Traceback (most recent call last):
    ValueError: top_p must be in (0, 1], got 1.5
    """

    temperature: float = option(1.0, "divide the logits by this: < 1 sharpens, > 1 flattens; 0 = greedy")
    top_k: int | None = option(None, "sample only among the k most likely tokens")
    top_p: float | None = option(None, "nucleus: sample from the smallest set of tokens with probability >= p")
    min_p: float | None = option(None, "drop tokens less likely than min_p × the most likely one")
    typical_p: float | None = option(None, "typical sampling: keep the tokens whose surprise is nearest the entropy")
    epsilon_cutoff: float | None = option(None, "drop tokens less likely than this probability")
    eta_cutoff: float | None = option(None, "drop tokens below an entropy-dependent floor, at most this")
    repetition_penalty: float | None = option(None, "> 1 makes every token already in the text less likely")
    frequency_penalty: float | None = option(
        None, "in [-2, 2]: subtract this × how often a token was generated (OpenAI's)")
    presence_penalty: float | None = option(
        None, "in [-2, 2]: subtract this once from every token generated so far (OpenAI's)")
    no_repeat_ngram_size: int | None = option(None, "never repeat an n-gram of this size")
    min_new_tokens: int = option(0, "ban the end-of-sequence tokens until this many tokens were generated")
    sequence_bias: SequenceBias | None = option(
        None, "add VALUE to TEXT's last token's logit after its others, e.g. ' love=2' (repeatable)",
        name="--bias", metavar="TEXT=VALUE", action="append", type=_bias_flag)
    bad_words_ids: Sequence[Sequence[int]] | None = option(
        None, "never generate TEXT's tokens in a row, e.g. --ban ' thou' (repeatable)",
        name="--ban", metavar="TEXT", action="append", type=_ban_flag)
    suppress_tokens: Sequence[int] | None = option(
        None, "token ids never to generate", metavar="ID", nargs="+", type=int)
    prefix_allowed_tokens_fn: AllowedTokensFn | None = option(
        None, "(batch row, ids so far) -> the token ids allowed next", name=None)
    watermark: WatermarkSettings | None = option(
        None, "add δ to a green list of tokens seeded by the context (True: the default WatermarkSettings)", name=None)
    order: str = option("transformers", "the chain's order: transformers (temperature before the filters) or "
                        "llama.cpp (temperature last)", choices=tuple(ORDERS))

    def __post_init__(self) -> None:
        check_real("temperature", self.temperature, "a finite number >= 0", lambda v: 0 <= v < math.inf)
        _check_temperature_floor(self.temperature)
        if self.top_k is not None:
            check_int("top_k", self.top_k, 1)
        for name in ("top_p", "min_p", "typical_p"):
            if getattr(self, name) is not None:
                _check_fraction(name, getattr(self, name))
        if self.repetition_penalty is not None:
            _check_penalty(self.repetition_penalty)
        if self.no_repeat_ngram_size is not None:
            check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, 1)
        check_int("min_new_tokens", self.min_new_tokens, 0)
        for name in ("epsilon_cutoff", "eta_cutoff"):
            if getattr(self, name) is not None:
                _check_cutoff(name, getattr(self, name))
        if self.sequence_bias is not None:
            _as_sequence_bias(self.sequence_bias, VOCAB_SIZE)
        if self.bad_words_ids is not None:
            _as_bad_words(self.bad_words_ids, VOCAB_SIZE)
        if self.suppress_tokens is not None:
            _as_suppress_tokens(self.suppress_tokens, VOCAB_SIZE)
        if self.prefix_allowed_tokens_fn is not None and not callable(self.prefix_allowed_tokens_fn):
            raise TypeError(
                "prefix_allowed_tokens_fn must be a function of (batch row, ids so far) that returns the allowed "
                f"token ids, got {self.prefix_allowed_tokens_fn!r}"
            )
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) is not None:
                _check_openai_penalty(name, getattr(self, name))
        check_choice("order", self.order, ORDERS)
        if isinstance(self.watermark, bool):  # True: the defaults; False: none (frozen, hence object.__setattr__)
            object.__setattr__(self, "watermark", WatermarkSettings() if self.watermark else None)
        if self.watermark is not None and not isinstance(self.watermark, WatermarkSettings):
            raise TypeError(f"watermark must be a minigpt.logits.WatermarkSettings, True, False or None, "
                            f"got {self.watermark!r}")

    def __repr__(self) -> str:  # only what differs from the defaults: the settings that do something
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) is not f.default and getattr(self, f.name) != f.default]
        return f"LogitsSettings({', '.join(changed)})"

    @classmethod
    def with_off_values(cls, **values: object) -> LogitsSettings:
        """Settings from ``values``, where a setting's off value (``OFF``: top_k 0, top_p 1, …) means None.

        >>> LogitsSettings.with_off_values(top_k=0, top_p=0.9, repetition_penalty=1.0)
        LogitsSettings(top_p=0.9)
        """
        return cls(**{name: _DEFAULTS.get(name) if _is_off(name, value) else value for name, value in values.items()})

    def chain(self, *, sample: bool, eos_token_ids: Sequence[int] = (), min_tokens_to_keep: int = 1) -> Chain:
        """The transforms these settings switch on, in their order: build it once, apply it at every step.

        ``sample=False`` (greedy decoding, beam search) leaves out ``SAMPLING``: they cannot change the
        argmax. ``eos_token_ids`` are what ``min_new_tokens`` bans (and what ``bad_words_ids`` may not ban
        alone, as in transformers); beam search keeps ``min_tokens_to_keep`` tokens in every filter.

        >>> LogitsSettings(temperature=0.7, top_k=50, repetition_penalty=1.3).chain(sample=True)
        Chain, transformers order:
          1. repetition_penalty    _repetition_penalty(logits, input_ids, 1.3)
          2. temperature           _apply_temperature(logits, 0.7)
          3. top_k                 _top_k_filter(logits, 50, min_tokens_to_keep=1)
        """
        if sample:  # a draw needs a distribution: temperature 0 is greedy decoding, which has none
            check_real("temperature", self.temperature, "a finite number > 0", lambda v: 0 < v < math.inf)
        eos = tuple(eos_token_ids)
        steps = []
        for name in ORDERS[self.order]:
            value = getattr(self, name)
            if _is_off(name, value) or (name in SAMPLING and not sample):
                continue
            argument = _ARGUMENTS[name](value, eos) if name in _ARGUMENTS else value
            if argument is None:  # nothing to do after all, e.g. min_new_tokens with no EOS to ban
                continue
            function, reads = _TRANSFORMS[name]
            keep = min_tokens_to_keep if name in SAMPLING and name != "temperature" else None
            steps.append(Step(name, function, argument, reads, keep))
        return Chain(tuple(steps), self.order)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LogitsSettings)}


def _is_off(name: str, value: object) -> bool:
    return value is None or (name in OFF and not isinstance(value, bool) and value == OFF[name])


class Step(NamedTuple):
    """One transform of a chain: the setting that switched it on, the function it runs, and its argument.

    The function is called as ``function(logits, *reads, argument)``, where ``reads`` name what it needs
    from the step besides the logits (``input_ids``, ``generated``, ``new_tokens``, ``batch_ids``), with
    ``min_tokens_to_keep=keep`` for the sampling filters.
    """

    name: str
    function: Callable[..., torch.Tensor]
    argument: object
    reads: tuple[str, ...] = ()
    keep: int | None = None

    def __str__(self) -> str:
        keep = "" if self.keep is None else f", min_tokens_to_keep={self.keep}"
        inputs = ", ".join(["logits", *self.reads])
        return f"{self.name:<21} {self.function.__name__}({inputs}, {self.argument!r}{keep})"


@dataclasses.dataclass(frozen=True, repr=False)
class Chain:
    """Transforms to apply in turn to the (B, V) logits of every step; printing it lists them.

    >>> chain = LogitsSettings(top_k=1, repetition_penalty=2.0).chain(sample=True)
    >>> chain(torch.tensor([[4.0, 3.5]]), torch.tensor([[0]]), new_tokens=0)
    tensor([[  -inf, 3.5000]])
    """

    steps: tuple[Step, ...]
    order: str

    def __call__(
        self, logits: torch.Tensor, input_ids: torch.Tensor, *, new_tokens: int, batch_ids: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Apply the steps to ``logits`` (B, V) after the context ``input_ids`` (B, T), whose last
        ``new_tokens`` columns were generated; ``batch_ids`` are what ``prefix_allowed_tokens_fn`` is told
        each row is (the row numbers when None). The input is never modified (it is returned as is by a
        chain with no step)."""
        if not self.steps:
            return logits
        inputs = {"input_ids": input_ids, "new_tokens": new_tokens, "batch_ids": batch_ids}
        if any("generated" in step.reads for step in self.steps):  # the last new_tokens columns
            inputs["generated"] = input_ids[:, input_ids.size(1) - new_tokens :]
        for step in self.steps:
            keep = () if step.keep is None else (step.keep,)
            logits = step.function(logits, *(inputs[name] for name in step.reads), step.argument, *keep)
        return logits

    def __repr__(self) -> str:
        rows = [f"{i:>3}. {step}" for i, step in enumerate(self.steps, 1)] or ["  (no step: the logits pass unchanged)"]
        return "\n".join([f"Chain, {self.order} order:", *rows])


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the (B, V) logits by ``temperature`` > 0: below 1 sharpens the distribution, above 1 flattens it.

    >>> apply_temperature(torch.tensor([[1.0, -2.0]]), 0.5)
    tensor([[ 2., -4.]])
    """
    check_real("temperature", temperature, "a finite number > 0", lambda v: 0 < v < math.inf)
    _check_temperature_floor(temperature)
    return _apply_temperature(logits, temperature)


def _check_temperature_floor(temperature: float) -> None:
    """Refuse a temperature in (0, ``MIN_TEMPERATURE``), after the checks for its type, sign and finiteness.

    >>> _check_temperature_floor(1e-45)
    Traceback (most recent call last):
        ...
    ValueError: temperature must be 0 (greedy decoding) or at least 0.0001 (below it, logits / temperature can ...
    """
    check_real("temperature", temperature, f"0 (greedy decoding) or at least {MIN_TEMPERATURE} (below it, logits / "
               "temperature can overflow float32, and sampling is greedy decoding anyway)",
               lambda v: v == 0 or v >= MIN_TEMPERATURE)


def _apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def _check_keep(min_tokens_to_keep: object) -> None:
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)


def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (at least ``min_tokens_to_keep``), set the rest to -inf.

    Ties with the k-th largest value are all kept, so a row can keep more than k tokens.

    >>> top_k_filter(torch.tensor([[3.0, 1.0, 2.0, 2.0]]), 2)
    tensor([[3., -inf, 2., 2.]])
    """
    check_int("top_k", k, 1)
    _check_keep(min_tokens_to_keep)
    return _top_k_filter(logits, k, min_tokens_to_keep)


def _top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    k = min(max(k, min_tokens_to_keep), logits.size(-1))  # k > V would make topk fail
    kth_largest = torch.topk(logits, k).values[..., -1, None]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering: keep the most likely tokens whose probabilities add up to at least ``p``.

    The token that crosses ``p`` is kept, so a single token more likely than ``p`` survives alone.

    >>> top_p_filter(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 0.7)
    tensor([[2., 1., -inf, -inf]])
    """
    _check_fraction("top_p", p)
    _check_keep(min_tokens_to_keep)
    return _top_p_filter(logits, p, min_tokens_to_keep)


def _top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    # Ascending sort: the tokens to drop are a prefix, those whose running mass stays within 1 - p
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)  # (B, V) each
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= 1 - p
    drop[..., -min_tokens_to_keep:] = False  # the most likely tokens sit at the end
    drop = drop.scatter(1, sorted_idx, drop)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Drop tokens less likely than ``min_p`` times the most likely token of their row.

    The cut-off scales with the model's confidence: strict when one token dominates, loose when it is unsure.

    >>> min_p_filter(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 0.3)
    tensor([[2., 1., -inf, -inf]])
    """
    _check_fraction("min_p", min_p)
    _check_keep(min_tokens_to_keep)
    return _min_p_filter(logits, min_p, min_tokens_to_keep)


def _min_p_filter(logits: torch.Tensor, min_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    probs = logits.softmax(dim=-1)  # (B, V)
    drop = probs < min_p * probs.max(dim=-1, keepdim=True).values
    # min_tokens_to_keep counts in descending-logit order, ties broken as argsort breaks them
    sorted_idx = torch.argsort(logits, descending=True, dim=-1)
    sorted_drop = drop.gather(-1, sorted_idx)
    sorted_drop[..., :min_tokens_to_keep] = False
    return logits.masked_fill(sorted_drop.scatter(1, sorted_idx, sorted_drop), float("-inf"))


def _drop_keeping_top(logits: torch.Tensor, drop: torch.Tensor, min_tokens_to_keep: int) -> torch.Tensor:
    """Set the ``drop`` positions to -inf, except the ``min_tokens_to_keep`` largest logits of a row (ties too)."""
    k = min(min_tokens_to_keep, logits.size(-1))
    kth_largest = torch.topk(logits, k).values[..., -1, None]  # (B, 1)
    return logits.masked_fill(drop & (logits < kth_largest), float("-inf"))


def typical_filter(logits: torch.Tensor, mass: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Locally typical sampling (Meister et al.): keep the tokens whose surprise is closest to the average.

    A token's surprise is -log p; the row's average surprise is its entropy H. Tokens are ranked by
    |-log p - H| and kept in that order until their probabilities add up to ``mass`` (the token that
    crosses it is kept, with every token tied with it). Unlike top-p, the most likely token can go: when it
    is far less surprising than the rest, it is not what a typical continuation looks like.

    >>> typical_filter(torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0]]), 0.5)  # p = 0.41, 0.15 × 4; entropy 1.50 nats
    tensor([[-inf, 1., 1., 1., 1.]])
    """
    _check_fraction("typical_p", mass)
    _check_keep(min_tokens_to_keep)
    return _typical_filter(logits, mass, min_tokens_to_keep)


def _typical_filter(logits: torch.Tensor, mass: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    log_probs = logits.log_softmax(dim=-1)  # (B, V)
    entropy = -(log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)  # a removed token: -inf * 0 = nan, skipped
    atypical = (-log_probs - entropy).abs()  # (B, V) how far each token's surprise is from the average
    sorted_atypical, order = torch.sort(atypical)  # most typical first
    cumulative = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=logits.size(-1) - 1)  # the one crossing mass
    drop = sorted_atypical > sorted_atypical.gather(-1, last)
    drop[..., :min_tokens_to_keep] = False
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def epsilon_filter(logits: torch.Tensor, epsilon: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Epsilon sampling (Hewitt et al.): drop every token less likely than ``epsilon``, a fixed probability.

    When that would leave fewer than ``min_tokens_to_keep`` tokens, the most likely ones stay (ties too).

    >>> epsilon_filter(torch.tensor([[1.0, 0.0, 0.0, 0.0, -1.0]]), 0.2)  # p = 0.45, 0.16 × 3, 0.06
    tensor([[1., -inf, -inf, -inf, -inf]])
    """
    _check_cutoff("epsilon_cutoff", epsilon)
    _check_keep(min_tokens_to_keep)
    return _epsilon_filter(logits, epsilon, min_tokens_to_keep)


def _epsilon_filter(logits: torch.Tensor, epsilon: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    return _drop_keeping_top(logits, logits.softmax(dim=-1) < epsilon, min_tokens_to_keep)


def eta_filter(logits: torch.Tensor, epsilon: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Eta sampling (Hewitt et al.): epsilon sampling whose cut-off falls as the row's entropy H rises.

    A token is dropped when its probability is below eta = min(epsilon, sqrt(epsilon) * exp(-H)): an unsure
    model (high H) keeps more of its long tail. At least ``min_tokens_to_keep`` tokens stay; a row with
    nothing left (all -inf) is returned as it is (transformers raises there).

    >>> eta_filter(torch.tensor([[1.0, 0.0, 0.0, 0.0, -1.0]]), 0.2)  # H = 1.42 nats: eta = 0.108, not 0.2
    tensor([[1., 0., 0., 0., -inf]])
    """
    _check_cutoff("eta_cutoff", epsilon)
    _check_keep(min_tokens_to_keep)
    return _eta_filter(logits, epsilon, min_tokens_to_keep)


def _eta_filter(logits: torch.Tensor, epsilon: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    # the entropy as torch.distributions.Categorical computes it, which transformers uses: same bits, same cut
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)  # (B, V)
    plogp = log_probs.clamp(min=torch.finfo(logits.dtype).min) * log_probs.softmax(dim=-1)  # -inf * 0 would be nan
    entropy = -plogp.sum(dim=-1, keepdim=True)  # (B, 1)
    eps = logits.new_tensor(epsilon)
    eta = torch.minimum(eps, eps.sqrt() * torch.exp(-entropy))
    return _drop_keeping_top(logits, logits.softmax(dim=-1) < eta, min_tokens_to_keep)


def repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make every token already in ``input_ids`` (B, T) less likely, once per distinct token (CTRL-style).

    A positive logit is divided by ``penalty`` and a negative one multiplied, so penalty > 1 always lowers
    it; the prompt counts as seen too.

    >>> repetition_penalty(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[0, 1, 0]]), 2.0)
    tensor([[ 1.0000, -2.0000,  0.5000]])
    """
    _check_penalty(penalty)
    return _repetition_penalty(logits, input_ids, penalty)


def _repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    seen = logits.gather(1, input_ids)  # (B, T) current logit of each token in the context
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, input_ids, seen)  # a repeated id writes the same value, so it counts once


def no_repeat_ngram(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would complete an n-gram already present in the row's ``input_ids`` (B, T).

    The last n - 1 tokens are the prefix; any token that followed that prefix before gets -inf.

    >>> no_repeat_ngram(torch.zeros(1, 4), torch.tensor([[1, 2, 3, 1]]), 2)
    tensor([[0., 0., -inf, 0.]])
    """
    check_int("no_repeat_ngram_size", n, 1)
    return _no_repeat_ngram(logits, input_ids, n)


def _no_repeat_ngram(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    out = logits.clone()
    for row, ids in enumerate(input_ids.tolist()):
        prefix = ids[len(ids) - n + 1 :]  # [] when n == 1: every token seen so far is banned
        banned = [ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == prefix]
        out[row, banned] = float("-inf")
    return out


def suppress_eos(logits: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """Set the end-of-sequence ids to -inf, so a sequence cannot stop yet (min_new_tokens).

    >>> suppress_eos(torch.zeros(1, 3), [2])
    tensor([[0., 0., -inf]])
    """
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=logits.device)
    is_eos = torch.isin(torch.arange(logits.size(-1), device=logits.device), eos)  # (V,)
    return logits.masked_fill(is_eos, float("-inf"))


def _suppress_eos_before(
    logits: torch.Tensor, new_tokens: int, min_new_tokens_and_eos: tuple[int, tuple[int, ...]]
) -> torch.Tensor:
    """``suppress_eos`` while fewer than ``min_new_tokens`` tokens were generated: the chain's min-new-tokens step."""
    min_new_tokens, eos_token_ids = min_new_tokens_and_eos
    return suppress_eos(logits, eos_token_ids) if new_tokens < min_new_tokens else logits


def apply_frequency_penalty(logits: torch.Tensor, generated_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """OpenAI's frequency penalty: lower each token's logit by ``penalty`` times the times it was generated.

    ``generated_ids`` (B, N) are the tokens generated so far, prompt excluded: OpenAI counts the sampled
    tokens. Unlike the repetition penalty, it grows with every repeat and subtracts, whatever the logit's
    sign. ``penalty`` is in [-2, 2], as in the OpenAI API; below 0 it rewards repeating.

    >>> apply_frequency_penalty(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[0, 1, 0]]), 0.5)
    tensor([[ 1.0000, -1.5000,  0.5000]])
    """
    _check_openai_penalty("frequency_penalty", penalty)
    return _apply_frequency_penalty(logits, generated_ids, penalty)


def _apply_frequency_penalty(logits: torch.Tensor, generated_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    return logits - penalty * _counts(logits, generated_ids)


def apply_presence_penalty(logits: torch.Tensor, generated_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """OpenAI's presence penalty: lower by ``penalty`` the logit of every token generated at least once.

    Once per distinct token, like the repetition penalty, but it subtracts and counts only the generated
    tokens ``generated_ids`` (B, N), not the prompt. ``penalty`` is in [-2, 2], as in the OpenAI API.

    >>> apply_presence_penalty(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[0, 1, 0]]), 0.5)
    tensor([[ 1.5000, -1.5000,  0.5000]])
    """
    _check_openai_penalty("presence_penalty", penalty)
    return _apply_presence_penalty(logits, generated_ids, penalty)


def _apply_presence_penalty(logits: torch.Tensor, generated_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    return logits - penalty * (_counts(logits, generated_ids) > 0).to(logits.dtype)


def _counts(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """How many times each token of the vocabulary occurs in each row of ``ids`` (B, N): (B, V), as floats."""
    return torch.zeros_like(logits).scatter_add_(1, ids, torch.ones_like(ids, dtype=logits.dtype))


def apply_sequence_bias(logits: torch.Tensor, input_ids: torch.Tensor, sequence_bias: SequenceBias) -> torch.Tensor:
    """Add a bias to chosen tokens, or to the token that would complete a chosen sequence.

    ``sequence_bias`` maps token-id tuples to biases: ``{(5,): -2.0, (7, 8, 9): 3.0}``, or the same as a
    list of pairs. A single token gets its bias at every step; a longer sequence biases its last token only
    when the row's ``input_ids`` (B, T) end with the rest of it. As in transformers, a sequence is only
    looked for once T is at least its whole length, so one that would start with the first token of the
    context is not found. A bias of -inf bans.

    >>> apply_sequence_bias(torch.zeros(2, 4), torch.tensor([[1, 2], [2, 1]]), {(3,): -1.0, (1, 2): 5.0})
    tensor([[ 0.,  0.,  0., -1.],
            [ 0.,  0.,  5., -1.]])
    """
    return _apply_sequence_bias(logits, input_ids, _as_sequence_bias(sequence_bias, logits.size(-1)))


def _apply_sequence_bias(
    logits: torch.Tensor, input_ids: torch.Tensor, biases: dict[tuple[int, ...], float]
) -> torch.Tensor:
    bias = torch.zeros_like(logits)
    # single tokens first, then the sequences in the order given: the order transformers adds them in
    singles = {ids[0]: b for ids, b in biases.items() if len(ids) == 1}
    if singles:
        bias[:, list(singles)] += logits.new_tensor(list(singles.values()))
    T = input_ids.size(1)
    for ids, b in biases.items():
        if len(ids) == 1 or len(ids) > T:
            continue
        prefix = input_ids.new_tensor(ids[:-1])
        follows = (input_ids[:, T - len(prefix) :] == prefix).all(dim=1)  # (B,) rows that end with the prefix
        bias[follows, ids[-1]] += logits.new_tensor(b)
    return logits + bias


def ban_bad_words(
    logits: torch.Tensor, input_ids: torch.Tensor, bad_words_ids: Sequence[Sequence[int]],
    eos_token_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Ban tokens, and the last token of token sequences, so that no ``bad_words_ids`` entry is generated.

    A sequence of several tokens is banned the way ``apply_sequence_bias`` biases one (a bias of -inf):
    its last token, when the row's ``input_ids`` (B, T) end with the rest. As in transformers, an
    end-of-sequence id banned on its own is ignored: ``min_new_tokens`` is the way to delay the end.

    >>> ban_bad_words(torch.zeros(1, 4), torch.tensor([[1, 2]]), [[0], [2, 3]])
    tensor([[-inf, 0., 0., -inf]])
    """
    bans = _bans(_as_bad_words(bad_words_ids, logits.size(-1)), tuple(eos_token_ids))
    if bans is None:  # only EOS ids were given (transformers raises here); nothing to ban
        return logits.clone()
    return _apply_sequence_bias(logits, input_ids, bans)


def _bans(words: list[tuple[int, ...]], eos_token_ids: tuple[int, ...]) -> dict[tuple[int, ...], float] | None:
    """Bad words as a sequence bias of -inf, less the EOS ids given alone; None when nothing is left."""
    bans = {w: float("-inf") for w in words if not (len(w) == 1 and w[0] in eos_token_ids)}
    return bans or None


def suppress_tokens(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Set the logits of ``token_ids`` to -inf at every step: tokens that must never be generated.

    >>> suppress_tokens(torch.zeros(1, 4), [1, 3])
    tensor([[0., -inf, 0., -inf]])
    """
    return _suppress_tokens(logits, _as_suppress_tokens(token_ids, logits.size(-1)))


def _suppress_tokens(logits: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    vocabulary = torch.arange(logits.size(-1), device=logits.device)
    return logits.masked_fill(torch.isin(vocabulary, logits.new_tensor(ids, dtype=torch.long)), float("-inf"))


def allowed_tokens_filter(
    logits: torch.Tensor, input_ids: torch.Tensor, allowed_tokens_fn: AllowedTokensFn,
    batch_ids: Sequence[int] | None = None,
) -> torch.Tensor:
    """Keep only the tokens ``allowed_tokens_fn(batch_id, ids)`` names for each row: constrained decoding.

    The function gets the row's batch id (``batch_ids[row]``, or the row number) and its ids so far (T,),
    prompt and left padding included, and returns the allowed next token ids; everything else gets -inf.
    This is transformers' ``prefix_allowed_tokens_fn``: the way to force a choice, a number, a format.

    >>> allowed_tokens_filter(torch.ones(2, 4), torch.tensor([[1], [2]]), lambda b, ids: [b, ids[-1].item()])
    tensor([[1., 1., -inf, -inf],
            [-inf, 1., 1., -inf]])
    """
    return _allowed_tokens_filter(logits, input_ids, batch_ids, allowed_tokens_fn)


def _allowed_tokens_filter(
    logits: torch.Tensor, input_ids: torch.Tensor, batch_ids: Sequence[int] | None, allowed_tokens_fn: AllowedTokensFn
) -> torch.Tensor:
    V = logits.size(-1)
    rows = range(logits.size(0)) if batch_ids is None else [int(b) for b in batch_ids]
    mask = torch.full_like(logits, float("-inf"))  # (B, V)
    for row, (batch_id, ids) in enumerate(zip(rows, input_ids)):
        given = allowed_tokens_fn(batch_id, ids)
        allowed = torch.as_tensor(given, device=logits.device)
        if (allowed.dim() != 1 or allowed.numel() == 0 or allowed.is_floating_point() or allowed.dtype == torch.bool
                or allowed.min() < 0 or allowed.max() >= V):
            raise ValueError(
                f"prefix_allowed_tokens_fn must return a non-empty list of token ids in [0, {V}), got {given!r} "
                f"for batch row {batch_id}"
            )
        mask[row, allowed] = 0.0
    return logits + mask


def greenlist(
    ids: Sequence[int] | torch.Tensor, settings: WatermarkSettings = DEFAULT_WATERMARK, vocab_size: int = VOCAB_SIZE
) -> torch.Tensor:
    """The green token ids that the context ``ids`` (a list or a 1-D tensor) seeds: transformers' green list.

    The first ``int(vocab_size * greenlist_ratio)`` ids of a permutation of the vocabulary drawn by a
    generator seeded from the last ``context_width`` ids (``watermark_seed``), in the permutation's order
    (int64). With "selfhash" the last id is the candidate token itself: it is green when it is in this list.

    >>> greenlist([3], WatermarkSettings(greenlist_ratio=0.5), vocab_size=8)
    tensor([2, 3, 1, 5])
    """
    if not isinstance(settings, WatermarkSettings):
        raise TypeError(f"settings must be a minigpt.logits.WatermarkSettings, got {settings!r}")
    check_int("vocab_size", vocab_size, 1)
    window = _context_ids(ids, settings.context_width)
    if not bool(((window >= 0) & (window < vocab_size)).all()):
        raise ValueError(f"ids must be token ids in [0, {vocab_size}), got {ids!r}")
    return _greenlist(window, settings, vocab_size)


def _context_ids(ids: object, context_width: int) -> torch.Tensor:
    """``ids`` as a 1-D int64 CPU tensor of at least ``context_width`` ids, or an error naming ``ids``."""
    allowed = f"a list or 1-D tensor of at least context_width={context_width} token ids"
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(f"ids must be {allowed}, got a tensor of shape {tuple(ids.shape)} and dtype {ids.dtype}")
        tensor = ids.detach().to("cpu", torch.long)
    else:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or any(
                isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in ids):
            raise TypeError(f"ids must be {allowed}, got {ids!r}")
        tensor = torch.tensor([int(i) for i in ids], dtype=torch.long)
    if len(tensor) < context_width:
        raise ValueError(f"ids must be {allowed}, got {len(tensor)} ids")
    return tensor


def watermark_seed(ids: torch.Tensor, settings: WatermarkSettings) -> int:
    """The seed of the green list after the 1-D int64 ``ids``: transformers' ``set_seed``, bit for bit.

    lefthash: ``hashing_key * last id``. selfhash: the smallest ``hashing_key * a * b`` over the last
    ``context_width`` ids, where a is each id's entry in a fixed seeded table (plus one) and b the last id's;
    the products wrap around in int64, as transformers' tensors do. Either is taken modulo 2**64 - 1.

    >>> watermark_seed(torch.tensor([5, 464]), WatermarkSettings())
    7185440432
    """
    window = ids[-settings.context_width :]
    if settings.seeding_scheme == "selfhash":
        table = _fixed_table(settings.hashing_key)
        a = table[window % TABLE_SIZE] + 1  # (context_width,)
        b = table[window[-1] % TABLE_SIZE] + 1
        seed = int((settings.hashing_key * a * b).min())
    else:
        seed = settings.hashing_key * int(window[-1])
    return seed % (2**64 - 1)


@functools.lru_cache(maxsize=4)
def _fixed_table(hashing_key: int) -> torch.Tensor:
    """selfhash's table: a permutation of ``TABLE_SIZE`` ids drawn once per key (1M draws: built once, kept)."""
    generator = torch.Generator().manual_seed(hashing_key)
    return torch.randperm(TABLE_SIZE, generator=generator)


def _greenlist(window: torch.Tensor, settings: WatermarkSettings, vocab_size: int) -> torch.Tensor:
    # drawn on the CPU, whatever the model's device: the same text gets the same green lists everywhere
    generator = torch.Generator().manual_seed(watermark_seed(window, settings))
    return torch.randperm(vocab_size, generator=generator)[: int(vocab_size * settings.greenlist_ratio)]


def watermark_logits(logits: torch.Tensor, input_ids: torch.Tensor, settings: WatermarkSettings) -> torch.Tensor:
    """Add ``settings.bias`` (δ) to the logits (B, V) of each row's green tokens after its ``input_ids`` (B, T).

    transformers' ``WatermarkLogitsProcessor``: lefthash biases the green list seeded by the row's last
    token. selfhash tries the row's 40 most likely tokens in turn, each with the green list it seeds
    itself, and biases those that are green in their own list (none may be: transformers then fails, this
    leaves the row as it is). While T < ``context_width`` the logits pass unchanged, as in transformers.
    The green lists are drawn on the CPU, so a text watermarked on a GPU is detected on a laptop
    (transformers draws them on the model's device, which differs from the CPU on CUDA).

    >>> settings = WatermarkSettings(greenlist_ratio=0.5)
    >>> watermark_logits(torch.zeros(1, 4), torch.tensor([[0, 3]]), settings)
    tensor([[0., 0., 2., 2.]])
    >>> greenlist([0, 3], settings, vocab_size=4)
    tensor([2, 3])
    """
    if not isinstance(settings, WatermarkSettings):
        raise TypeError(f"settings must be a minigpt.logits.WatermarkSettings, got {settings!r}")
    if logits.dim() != 2 or input_ids.dim() != 2 or logits.size(0) != input_ids.size(0):
        raise ValueError(f"logits must be (B, V) and input_ids (B, T) with the same B, got shapes "
                         f"{tuple(logits.shape)} and {tuple(input_ids.shape)}")
    return _watermark_logits(logits, input_ids, settings)


def _watermark_logits(logits: torch.Tensor, input_ids: torch.Tensor, settings: WatermarkSettings) -> torch.Tensor:
    if input_ids.size(1) < settings.context_width:  # too short to seed: transformers skips the step too
        return logits
    V = logits.size(-1)
    out = logits.clone()
    for row, ids in enumerate(input_ids.cpu()):
        if settings.seeding_scheme == "selfhash":
            green = _selfhash_green(ids, logits[row], settings)
        else:
            green = _greenlist(ids, settings, V)
        green = green.to(logits.device)
        out[row, green] = out[row, green] + settings.bias
    return out


def _selfhash_green(ids: torch.Tensor, scores: torch.Tensor, settings: WatermarkSettings) -> torch.Tensor:
    """The most likely candidates that are green in the list they seed themselves: transformers' rejection loop."""
    _, candidates = scores.sort(dim=-1, descending=True)  # the same sort as transformers', ties and all
    green = []
    for token in candidates[:SELFHASH_CANDIDATES].tolist():
        window = torch.cat([ids, ids.new_tensor([token])])
        if token in _greenlist(window, settings, scores.size(-1)):
            green.append(token)
    return torch.tensor(green, dtype=torch.long)


# setting -> (the transform it switches on, what that reads from the step besides the logits, in order)
_TRANSFORMS: dict[str, tuple[Callable[..., torch.Tensor], tuple[str, ...]]] = {
    "sequence_bias": (_apply_sequence_bias, ("input_ids",)),
    "repetition_penalty": (_repetition_penalty, ("input_ids",)),
    "frequency_penalty": (_apply_frequency_penalty, ("generated",)),
    "presence_penalty": (_apply_presence_penalty, ("generated",)),
    "no_repeat_ngram_size": (_no_repeat_ngram, ("input_ids",)),
    "bad_words_ids": (_apply_sequence_bias, ("input_ids",)),
    "min_new_tokens": (_suppress_eos_before, ("new_tokens",)),
    "prefix_allowed_tokens_fn": (_allowed_tokens_filter, ("input_ids", "batch_ids")),
    "suppress_tokens": (_suppress_tokens, ()),
    "temperature": (_apply_temperature, ()),
    "top_k": (_top_k_filter, ()),
    "top_p": (_top_p_filter, ()),
    "min_p": (_min_p_filter, ()),
    "typical_p": (_typical_filter, ()),
    "epsilon_cutoff": (_epsilon_filter, ()),
    "eta_cutoff": (_eta_filter, ()),
    "watermark": (_watermark_logits, ("input_ids",)),
}
# setting -> its value as its transform takes it (None: nothing to do), given the EOS ids; the rest as they are
_ARGUMENTS: dict[str, Callable[[object, tuple[int, ...]], object]] = {
    "sequence_bias": lambda value, eos: _as_sequence_bias(value, VOCAB_SIZE),
    "bad_words_ids": lambda value, eos: _bans(_as_bad_words(value, VOCAB_SIZE), eos),
    "min_new_tokens": lambda value, eos: (value, eos) if eos else None,
    "suppress_tokens": lambda value, eos: _as_suppress_tokens(value, VOCAB_SIZE),
}


def process_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    *,
    new_tokens: int,
    do_sample: bool,
    eos_token_ids: Sequence[int] = (),
    batch_ids: Sequence[int] | None = None,
    **settings: object,
) -> torch.Tensor:
    """Apply every transform the ``settings`` switch on to the (B, V) ``logits``, in their order, once.

    ``settings`` are ``LogitsSettings`` fields; a setting's off value (``OFF``: top_k 0, top_p 1.0, …) is
    as good as None. ``input_ids`` (B, T) is the whole context so far, prompt included; ``new_tokens`` is
    how many of those tokens were generated (the last ``new_tokens`` columns). Greedy decoding
    (``do_sample=False``) leaves out the sampling filters (``SAMPLING``): they cannot change the argmax. The
    input is never modified, but it is returned as is when every step is off.

    This checks the settings and builds their chain at every call: a loop builds the chain once
    (``LogitsSettings(...).chain(...)``) and applies it at every step, as ``generate`` does.

    >>> logits = torch.tensor([[1.0, 3.0, 2.0]])
    >>> process_logits(logits, torch.tensor([[1]]), new_tokens=0, do_sample=False, repetition_penalty=3.0)
    tensor([[1., 1., 2.]])
    """
    chain = LogitsSettings.with_off_values(**settings).chain(sample=do_sample, eos_token_ids=eos_token_ids)
    return chain(logits, input_ids, new_tokens=new_tokens, batch_ids=batch_ids)


def split_settings(
    keywords: Mapping[str, object], logits: LogitsSettings | None = None
) -> tuple[LogitsSettings, dict[str, object]]:
    """``LogitsSettings`` from the ``keywords`` that name its fields (or ``logits``), and the other keywords.

    The keyword arguments of ``generate`` and the searches go through here: the list of logits settings
    is written once, as ``LogitsSettings``' fields.

    >>> split_settings({"top_k": 50, "max_new_tokens": 10})
    (LogitsSettings(top_k=50), {'max_new_tokens': 10})
    """
    names = {f.name for f in dataclasses.fields(LogitsSettings)}
    given = {name: value for name, value in keywords.items() if name in names}
    rest = {name: value for name, value in keywords.items() if name not in names}
    if logits is None:
        return LogitsSettings(**given), rest
    if given:
        raise TypeError(f"pass the logits settings as logits=LogitsSettings(...) or as keywords, not both; got "
                        f"logits={logits!r} and {', '.join(sorted(given))}")
    if not isinstance(logits, LogitsSettings):
        raise TypeError(f"logits must be a minigpt.logits.LogitsSettings, got {logits!r}")
    return logits, rest
