"""Logits transforms: the small functions that turn the model's next-token scores into what we sample from.

Each function takes ``logits`` of shape (B, V), one row of scores per sequence, and returns a new tensor of
the same shape; the input is never modified. A token is removed by setting its logit to ``-inf``, so softmax
gives it probability exactly 0. The semantics are those of Hugging Face transformers 4.55
(``generation/logits_process.py``), which the tests use as the reference.

``process_logits`` applies them in transformers' fixed order (``_get_logits_processor``):

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

Penalties, bans and biases come first because they describe the sequence, whatever the decoding; the
sampling filters come last, temperature before them, so that they see the probabilities that will really
be sampled.

>>> logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
>>> process_logits(logits, torch.tensor([[0]]), new_tokens=1, do_sample=True, repetition_penalty=2.0, top_k=2)
tensor([[1., 1., -inf, -inf]])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch

from minigpt.checks import check_int, check_real
from minigpt.tokenizer import VOCAB_SIZE

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


def check_logits_settings(
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    min_new_tokens: int = 0,
    typical_p: float | None = None,
    epsilon_cutoff: float | None = None,
    eta_cutoff: float | None = None,
    sequence_bias: SequenceBias | None = None,
    bad_words_ids: Sequence[Sequence[int]] | None = None,
    suppress_tokens: Sequence[int] | None = None,
    prefix_allowed_tokens_fn: AllowedTokensFn | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
) -> None:
    """Validate decoding settings up front, before any token is generated; None switches a setting off.

    Raises ValueError (or TypeError for a wrong type) naming the parameter, the value and what is allowed.
    Temperature 0 is allowed here: it means greedy decoding, which the generation loop handles. Token ids
    are checked against GPT-2's vocabulary; the transforms check them again against the logits they get.

    >>> check_logits_settings(temperature=0.7, top_k=50, top_p=0.9)
    >>> check_logits_settings(top_p=1.5)
    Traceback (most recent call last):
    ValueError: top_p must be in (0, 1], got 1.5
    """
    check_real("temperature", temperature, "a finite number >= 0", lambda v: 0 <= v < math.inf)
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if top_p is not None:
        _check_fraction("top_p", top_p)
    if min_p is not None:
        _check_fraction("min_p", min_p)
    if repetition_penalty is not None:
        _check_penalty(repetition_penalty)
    if no_repeat_ngram_size is not None:
        check_int("no_repeat_ngram_size", no_repeat_ngram_size, 1)
    check_int("min_new_tokens", min_new_tokens, 0)
    if typical_p is not None:
        _check_fraction("typical_p", typical_p)
    for name, cutoff in (("epsilon_cutoff", epsilon_cutoff), ("eta_cutoff", eta_cutoff)):
        if cutoff is not None:
            _check_cutoff(name, cutoff)
    if sequence_bias is not None:
        _as_sequence_bias(sequence_bias, VOCAB_SIZE)
    if bad_words_ids is not None:
        _as_bad_words(bad_words_ids, VOCAB_SIZE)
    if suppress_tokens is not None:
        _as_suppress_tokens(suppress_tokens, VOCAB_SIZE)
    if prefix_allowed_tokens_fn is not None and not callable(prefix_allowed_tokens_fn):
        raise TypeError(
            "prefix_allowed_tokens_fn must be a function of (batch row, ids so far) that returns the allowed "
            f"token ids, got {prefix_allowed_tokens_fn!r}"
        )
    for name, penalty in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty)):
        if penalty is not None:
            _check_openai_penalty(name, penalty)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the (B, V) logits by ``temperature`` > 0: below 1 sharpens the distribution, above 1 flattens it.

    >>> apply_temperature(torch.tensor([[1.0, -2.0]]), 0.5)
    tensor([[ 2., -4.]])
    """
    check_real("temperature", temperature, "a finite number > 0", lambda v: 0 < v < math.inf)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (at least ``min_tokens_to_keep``), set the rest to -inf.

    Ties with the k-th largest value are all kept, so a row can keep more than k tokens.

    >>> top_k_filter(torch.tensor([[3.0, 1.0, 2.0, 2.0]]), 2)
    tensor([[3., -inf, 2., 2.]])
    """
    check_int("top_k", k, 1)
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
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
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
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
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
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
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
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
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
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
    check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
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
    seen = logits.gather(1, input_ids)  # (B, T) current logit of each token in the context
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, input_ids, seen)  # a repeated id writes the same value, so it counts once


_repetition_penalty = repetition_penalty  # process_logits has a keyword of the same name, which shadows it


def no_repeat_ngram(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would complete an n-gram already present in the row's ``input_ids`` (B, T).

    The last n - 1 tokens are the prefix; any token that followed that prefix before gets -inf.

    >>> no_repeat_ngram(torch.zeros(1, 4), torch.tensor([[1, 2, 3, 1]]), 2)
    tensor([[0., 0., -inf, 0.]])
    """
    check_int("no_repeat_ngram_size", n, 1)
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


def apply_frequency_penalty(logits: torch.Tensor, generated_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """OpenAI's frequency penalty: lower each token's logit by ``penalty`` times the times it was generated.

    ``generated_ids`` (B, N) are the tokens generated so far, prompt excluded: OpenAI counts the sampled
    tokens. Unlike the repetition penalty, it grows with every repeat and subtracts, whatever the logit's
    sign. ``penalty`` is in [-2, 2], as in the OpenAI API; below 0 it rewards repeating.

    >>> apply_frequency_penalty(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[0, 1, 0]]), 0.5)
    tensor([[ 1.0000, -1.5000,  0.5000]])
    """
    _check_openai_penalty("frequency_penalty", penalty)
    return logits - penalty * _counts(logits, generated_ids)


def apply_presence_penalty(logits: torch.Tensor, generated_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """OpenAI's presence penalty: lower by ``penalty`` the logit of every token generated at least once.

    Once per distinct token, like the repetition penalty, but it subtracts and counts only the generated
    tokens ``generated_ids`` (B, N), not the prompt. ``penalty`` is in [-2, 2], as in the OpenAI API.

    >>> apply_presence_penalty(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[0, 1, 0]]), 0.5)
    tensor([[ 1.5000, -1.5000,  0.5000]])
    """
    _check_openai_penalty("presence_penalty", penalty)
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
    biases = _as_sequence_bias(sequence_bias, logits.size(-1))
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
    words = _as_bad_words(bad_words_ids, logits.size(-1))
    words = [w for w in words if not (len(w) == 1 and w[0] in eos_token_ids)]
    if not words:  # only EOS ids were given (transformers raises here); nothing to ban
        return logits.clone()
    return apply_sequence_bias(logits, input_ids, {w: float("-inf") for w in words})


def suppress_tokens(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Set the logits of ``token_ids`` to -inf at every step: tokens that must never be generated.

    >>> suppress_tokens(torch.zeros(1, 4), [1, 3])
    tensor([[0., -inf, 0., -inf]])
    """
    ids = _as_suppress_tokens(token_ids, logits.size(-1))
    vocabulary = torch.arange(logits.size(-1), device=logits.device)
    return logits.masked_fill(torch.isin(vocabulary, logits.new_tensor(ids, dtype=torch.long)), float("-inf"))


_suppress_tokens = suppress_tokens  # shadowed in process_logits by its keyword, as repetition_penalty is


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


def process_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    *,
    new_tokens: int,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    min_new_tokens: int = 0,
    eos_token_ids: Sequence[int] = (),
    typical_p: float | None = None,
    epsilon_cutoff: float | None = None,
    eta_cutoff: float | None = None,
    sequence_bias: SequenceBias | None = None,
    bad_words_ids: Sequence[Sequence[int]] | None = None,
    suppress_tokens: Sequence[int] | None = None,
    prefix_allowed_tokens_fn: AllowedTokensFn | None = None,
    batch_ids: Sequence[int] | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
) -> torch.Tensor:
    """Apply every enabled transform to the (B, V) ``logits``, in transformers' order.

    ``input_ids`` (B, T) is the whole context so far, prompt included; ``new_tokens`` is how many of those
    tokens were generated (the last ``new_tokens`` columns). The order is fixed:

    1. sequence bias, unless ``sequence_bias`` is None
    2. repetition penalty, unless ``repetition_penalty`` is None or 1.0
    3. frequency penalty, then presence penalty, unless None or 0 (generated tokens only, as OpenAI counts)
    4. no-repeat n-gram ban, unless ``no_repeat_ngram_size`` is None or 0
    5. bad words, unless ``bad_words_ids`` is None (an EOS id alone is not banned, as in transformers)
    6. EOS suppressed while ``new_tokens < min_new_tokens``
    7. only the tokens ``prefix_allowed_tokens_fn(batch_ids[row], input_ids[row])`` allows, unless None
    8. ``suppress_tokens`` removed, unless None
    9. temperature, unless 1.0 (only when ``do_sample``)
    10. top-k, unless ``top_k`` is None or 0 (only when ``do_sample``)
    11. top-p, unless ``top_p`` is None or 1.0 (only when ``do_sample``)
    12. min-p, unless ``min_p`` is None or 0 (only when ``do_sample``)
    13. typical, unless ``typical_p`` is None or 1.0 (only when ``do_sample``)
    14. epsilon, unless ``epsilon_cutoff`` is None or 0 (only when ``do_sample``)
    15. eta, unless ``eta_cutoff`` is None or 0 (only when ``do_sample``)

    Greedy decoding (``do_sample=False``) ignores 9-15: they cannot change the argmax. The input is never
    modified, but it is returned as is when every step is off.

    >>> logits = torch.tensor([[1.0, 3.0, 2.0]])
    >>> process_logits(logits, torch.tensor([[1]]), new_tokens=0, do_sample=False, repetition_penalty=3.0)
    tensor([[1., 1., 2.]])
    """
    if sequence_bias is not None:
        logits = apply_sequence_bias(logits, input_ids, sequence_bias)
    if repetition_penalty not in (None, 1.0):
        logits = _repetition_penalty(logits, input_ids, repetition_penalty)
    generated = input_ids[:, input_ids.size(1) - new_tokens :]  # (B, new_tokens)
    if frequency_penalty not in (None, 0):
        logits = apply_frequency_penalty(logits, generated, frequency_penalty)
    if presence_penalty not in (None, 0):
        logits = apply_presence_penalty(logits, generated, presence_penalty)
    if no_repeat_ngram_size not in (None, 0):
        logits = no_repeat_ngram(logits, input_ids, no_repeat_ngram_size)
    if bad_words_ids is not None:
        logits = ban_bad_words(logits, input_ids, bad_words_ids, eos_token_ids)
    if new_tokens < min_new_tokens:
        logits = suppress_eos(logits, eos_token_ids)
    if prefix_allowed_tokens_fn is not None:
        logits = allowed_tokens_filter(logits, input_ids, prefix_allowed_tokens_fn, batch_ids)
    if suppress_tokens is not None:
        logits = _suppress_tokens(logits, suppress_tokens)
    if not do_sample:
        return logits
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k not in (None, 0):
        logits = top_k_filter(logits, top_k)
    if top_p not in (None, 1.0):
        logits = top_p_filter(logits, top_p)
    if min_p not in (None, 0):
        logits = min_p_filter(logits, min_p)
    if typical_p not in (None, 1.0):
        logits = typical_filter(logits, typical_p)
    if epsilon_cutoff not in (None, 0):
        logits = epsilon_filter(logits, epsilon_cutoff)
    if eta_cutoff not in (None, 0):
        logits = eta_filter(logits, eta_cutoff)
    return logits
