"""Speculative decoding: a cheap guesser drafts several tokens, the model checks them all in one pass.

At batch size 1 a forward pass is limited by reading the weights, not by arithmetic, so scoring five
positions costs about as much as scoring one. Speculative decoding uses that: something cheap proposes
``k`` tokens, the *target* model scores all of them in a single pass, and we keep the longest prefix the
target agrees with, plus one token of the target's own. Each target pass yields between 1 and k + 1
tokens, and the output is still the target's:

* greedy: a draft token is kept when it is the target's argmax, so the output is the target's greedy one;
* sampling: the modified rejection sampling of Leviathan et al. (2023) and Chen et al. (2023) keeps a draft
  token x with probability min(1, p(x) / q(x)) and otherwise draws from norm(max(0, p - q)), which makes
  each token distributed exactly as the target's p, whatever the draft's q.

The guesser is a small model with the same vocabulary (``speculative_generate``), or the text itself:
prompt lookup (Saxena, 2023) copies what followed the last time the final few tokens appeared
(``prompt_lookup_generate``), which pays off when the output repeats its input (summaries, code edits).

>>> from minigpt.generate import generate
>>> from minigpt.model import GPT, GPTConfig
>>> _ = torch.manual_seed(0)
>>> target, draft = GPT(GPTConfig.from_preset("tiny")), GPT(GPTConfig.from_preset("tiny", n_layer=1))
>>> out = speculative_generate(target, draft, "Hello", k=3, max_new_tokens=6)
>>> out.new_tokens == generate(target, "Hello", max_new_tokens=6).new_tokens
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from minigpt import logits as L
from minigpt.checks import check_int, check_model
from minigpt.generate import DecodingSettings, Generation, check_id_prompt, encode_prompt, eval_mode, make_generator
from minigpt.kv_cache import KVCache
from minigpt.model import GPT
from minigpt.tokenizer import decode

# A drafter sees the sequence so far (1, T) and proposes at most n next tokens, with the distributions it
# drew them from: q (m, V), row i conditioned on the sequence and proposals 0 … i-1
_Drafter = Callable[[torch.Tensor, int], tuple[list[int], torch.Tensor]]


@torch.inference_mode()
def speculative_generate(
    target: GPT,
    draft: GPT,
    prompt: str | torch.Tensor,
    *,
    k: int = 4,
    max_new_tokens: int,
    do_sample: bool = False,
    eos_token_id: int | Sequence[int] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    allow_special: bool = False,
    logits: L.LogitsSettings | None = None,
    **settings,
) -> Generation:
    """Continue ``prompt`` (a str or (1, T) ids) with ``target``, letting ``draft`` guess ``k`` tokens ahead.

    The result is the target's: its greedy continuation with ``do_sample=False``, a sample from its
    distribution (after the ``logits`` settings, a ``LogitsSettings`` or its fields as keywords, as in
    ``generate``; only those that read no context) otherwise. The draft
    changes only the speed, through ``acceptance_rate``. Both models keep a KV cache, cropped back past the
    rejected tokens. Greedy equality holds up to floating point: the target scores k + 1 positions at once,
    which can change a logit in its last bit, and so an argmax between two tied tokens. Models in train mode
    decode in eval mode (no dropout) and get their modes back; ``allow_special`` is as in ``generate``.

    The result is a one-row ``Generation`` whose ``num_proposed`` draft tokens were put to the target,
    ``num_accepted`` of them kept (``acceptance_rate``), in ``num_target_passes`` forward passes of the
    target (plain decoding needs one per new token).

    >>> from minigpt.model import GPT, GPTConfig
    >>> model = GPT(GPTConfig.from_preset("tiny"))
    >>> out = speculative_generate(model, model, "Hi", k=4, max_new_tokens=10)
    >>> out.acceptance_rate, out.num_target_passes  # a draft that is the target: 5 tokens per pass
    (1.0, 2)
    """
    check_model("target", target)
    check_model("draft", draft)
    check_int("k", k, 1)
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(
            f"draft and target must share a vocabulary, got vocab_size {draft.config.vocab_size} for the draft "
            f"and {target.config.vocab_size} for the target"
        )
    s = _settings(max_new_tokens, do_sample, eos_token_id, allow_special, logits, settings)
    ids, text = _prompt_ids(prompt, target, s.allow_special)
    _check_context(target, "target", ids.size(1), max_new_tokens)
    _check_context(draft, "draft", ids.size(1), max_new_tokens)
    rng = make_generator(seed, generator, ids.device)
    with eval_mode(target), eval_mode(draft):  # dropout off, as in every decoder; modes restored after
        drafter = _ModelDrafter(draft, s, rng, max_len=ids.size(1) + max_new_tokens)
        return _speculate(target, ids, text, drafter, k, s, rng)


@torch.inference_mode()
def prompt_lookup_generate(
    model: GPT,
    prompt: str | torch.Tensor,
    *,
    max_new_tokens: int,
    ngram_size: int = 3,
    num_pred_tokens: int = 10,
    do_sample: bool = False,
    eos_token_id: int | Sequence[int] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    allow_special: bool = False,
    logits: L.LogitsSettings | None = None,
    **settings,
) -> Generation:
    """Speculative decoding with no draft model: guesses are copied from earlier in the sequence.

    Each round looks up the last ``ngram_size`` tokens (or fewer, see ``lookup_draft``) earlier in the
    prompt and continuation, proposes up to ``num_pred_tokens`` tokens that followed them, and lets
    ``model`` verify them in one pass. A copied token is a certain guess, a q with all its mass on one
    token, so the same rejection sampling keeps the output exactly the model's, greedy or sampled. The
    result is ``speculative_generate``'s, with its counts.

    >>> from minigpt.generate import generate
    >>> from minigpt.model import GPT, GPTConfig
    >>> model = GPT(GPTConfig.from_preset("tiny"))
    >>> out = prompt_lookup_generate(model, "a b a b a b", max_new_tokens=8)
    >>> out.new_tokens == generate(model, "a b a b a b", max_new_tokens=8).new_tokens
    True
    """
    check_model("model", model)
    check_int("ngram_size", ngram_size, 1)
    check_int("num_pred_tokens", num_pred_tokens, 1)
    s = _settings(max_new_tokens, do_sample, eos_token_id, allow_special, logits, settings)
    ids, text = _prompt_ids(prompt, model, s.allow_special)
    _check_context(model, "model", ids.size(1), max_new_tokens)
    rng = make_generator(seed, generator, ids.device)

    def drafter(seq: torch.Tensor, n: int) -> tuple[list[int], torch.Tensor]:
        tokens = lookup_draft(seq[0].tolist(), ngram_size, n)
        q = F.one_hot(seq.new_tensor(tokens, dtype=torch.long), model.config.vocab_size).float()  # (m, V)
        return tokens, q

    with eval_mode(model):
        return _speculate(model, ids, text, drafter, num_pred_tokens, s, rng)


def lookup_draft(seq: list[int], ngram_size: int, num_pred_tokens: int) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the last ``ngram_size`` tokens of ``seq``.

    When the n-gram never occurred before, shorter ones are tried, down to a single token (as in Saxena's
    code and transformers' ``PromptLookupCandidateGenerator``, which take the earliest occurrence rather
    than the latest). At most ``num_pred_tokens`` are returned; none when nothing matches.

    >>> lookup_draft([5, 1, 2, 3, 9, 1, 2, 3], ngram_size=3, num_pred_tokens=2)
    [9, 1]
    >>> lookup_draft([7, 1, 2, 8, 2], ngram_size=3, num_pred_tokens=2)  # only the 1-gram [2] was seen
    [8, 2]
    """
    for n in range(min(ngram_size, len(seq) - 1), 0, -1):
        tail = seq[-n:]
        for start in range(len(seq) - n - 1, -1, -1):  # latest first; the tail itself is not "earlier"
            if seq[start : start + n] == tail:
                return seq[start + n : start + n + num_pred_tokens]
    return []


def _prompt_ids(prompt: str | torch.Tensor, model: GPT, allow_special: bool) -> tuple[torch.Tensor, str | None]:
    """A single prompt as (1, T) ids on the model's device, and its text (None for an id prompt)."""
    if isinstance(prompt, str):
        ids, text = torch.tensor([encode_prompt(prompt, allow_special=allow_special)]), prompt
    elif isinstance(prompt, torch.Tensor):
        ids, _ = check_id_prompt(prompt, None, model.config.vocab_size)
        text = None
        if ids.size(0) != 1:
            raise ValueError(f"prompt must be a single sequence, a str or (1, T) ids, got {ids.size(0)} rows")
    else:
        raise TypeError(f"prompt must be a str or a (1, T) id tensor, got {type(prompt).__name__}")
    return ids.to(model.transformer.wte.weight.device), text


def _check_context(model: GPT, role: str, prompt_len: int, max_new_tokens: int) -> None:
    # drafts never run past max_new_tokens (see _speculate), so this is all the room either model needs
    block_size = model.config.block_size
    if prompt_len + max_new_tokens > block_size:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) must fit the {role}'s context "
            f"of {block_size} tokens (block_size), got {prompt_len + max_new_tokens}"
        )


def _speculate(
    target: GPT, ids: torch.Tensor, text: str | None, drafter: _Drafter, max_drafts: int, s: DecodingSettings,
    rng: torch.Generator | None,
) -> Generation:
    """The draft-and-verify loop shared by both guessers: one target pass per round."""
    prompt_len = ids.size(1)
    cache = KVCache.for_model(target, batch_size=1, max_len=prompt_len + s.max_new_tokens)
    seq = ids  # (1, T): the prompt and every token kept so far
    proposed = accepted = passes = 0
    while not _finished(seq, prompt_len, s):
        room = s.max_new_tokens - (seq.size(1) - prompt_len)
        # a round yields at most one token more than it drafts, so drafting room - 1 never overshoots
        drafts, q = drafter(seq, min(max_drafts, room - 1))  # m tokens, q (m, V)
        scores = _target_scores(target, cache, seq, drafts, s)  # (m + 1, V)
        kept = _verify(drafts, q, scores, s, rng)  # the accepted drafts, then one token of the target's
        passes += 1
        proposed += len(drafts)
        accepted += len(kept) - 1
        seq = torch.cat([seq, seq.new_tensor([_until_eos(kept, s.eos_token_ids)])], dim=1)
        # the cache now holds every draft; keep only the kept ones (the last token is not fed yet)
        cache.crop(seq.size(1) - 1)
    new_tokens = seq[0, prompt_len:].tolist()
    texts = None if text is None else [text + decode(new_tokens)]
    stopped_by = ["eos" if new_tokens and new_tokens[-1] in s.eos_token_ids else None]
    return Generation(seq, torch.ones_like(seq), [new_tokens], texts, stopped_by, num_proposed=proposed,
                      num_accepted=accepted, num_target_passes=passes)


def _finished(seq: torch.Tensor, prompt_len: int, s: DecodingSettings) -> bool:
    new = seq.size(1) - prompt_len
    return new >= s.max_new_tokens or (new > 0 and seq[0, -1].item() in s.eos_token_ids)


def _until_eos(tokens: list[int], eos_token_ids: tuple[int, ...]) -> list[int]:
    """``tokens`` up to and including the first EOS: anything after it was never meant to be generated."""
    ends = [i for i, t in enumerate(tokens) if t in eos_token_ids]
    return tokens[: ends[0] + 1] if ends else tokens


def _extend(model: GPT, cache: KVCache, ids: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
    """Feed the tokens of ``ids`` (1, T) that ``cache`` has not seen; logits (1, T - cache.length, V)."""
    return model(ids[:, cache.length :], kv_cache=cache, last_only=last_only)


def _settings(
    max_new_tokens: int, do_sample: bool, eos_token_id: int | Sequence[int] | None, allow_special: bool,
    logits: L.LogitsSettings | None, settings: dict[str, object],
) -> DecodingSettings:
    """The decoding settings, refusing the transforms that read the context (penalties, bans, biases …).

    Verification scores k + 1 positions in one pass, each with one distribution per row: the transforms
    that only look at a row of logits (temperature and the sampling filters, ``suppress_tokens``) apply.
    """
    s = DecodingSettings.from_keywords(logits, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                       eos_token_id=eos_token_id, allow_special=allow_special, **settings)
    reading = [step.name for step in s.chain.steps if step.reads]  # the sampling filters read none
    if reading:
        raise ValueError(f"speculative decoding applies only the transforms that read no context (temperature, "
                         f"the sampling filters, suppress_tokens), got {', '.join(reading)}")
    return s


def _process(logits: torch.Tensor, s: DecodingSettings) -> torch.Tensor:
    """The settings' transforms on each row of (N, V) logits, exactly as ``generate`` applies them."""
    # no step of the chain reads the context (``_settings`` refuses those): an empty (N, 0) one will do
    no_context = torch.empty(logits.size(0), 0, dtype=torch.long, device=logits.device)
    return s.chain(logits.float(), no_context, new_tokens=0)


def _target_scores(
    target: GPT, cache: KVCache, seq: torch.Tensor, drafts: list[int], s: DecodingSettings
) -> torch.Tensor:
    """The target's processed scores after ``seq`` and after each draft token: (m + 1, V), in one pass."""
    candidate = torch.cat([seq, seq.new_tensor([drafts], dtype=torch.long)], dim=1)  # (1, T + m)
    logits = _extend(target, cache, candidate)[0, -(len(drafts) + 1) :]  # (m + 1, V)
    return _process(logits, s)


class _ModelDrafter:
    """Proposes tokens by running a small model autoregressively, with its own KV cache."""

    def __init__(self, model: GPT, s: DecodingSettings, rng: torch.Generator | None, max_len: int) -> None:
        self.model, self.s, self.rng = model, s, rng
        self.cache = KVCache.for_model(model, batch_size=1, max_len=max_len)

    def __call__(self, seq: torch.Tensor, n: int) -> tuple[list[int], torch.Tensor]:
        # all of seq but its last token is settled: the prompt and drafts the target accepted. The cache
        # may run further, over drafts that were rejected since: forget those
        self.cache.crop(min(self.cache.length, seq.size(1) - 1))
        tokens, rows = [], []
        for _ in range(n):
            scores = _process(_extend(self.model, self.cache, seq, last_only=True)[:, -1], self.s)  # (1, V)
            q = scores.softmax(dim=-1)
            token = _sample(q[0], self.rng) if self.s.do_sample else scores.argmax().item()
            tokens.append(token)
            rows.append(q)
            seq = torch.cat([seq, seq.new_tensor([[token]])], dim=1)
        q = torch.cat(rows) if rows else torch.empty(0, self.model.config.vocab_size, device=seq.device)
        return tokens, q  # q (m, V)


def _verify(
    drafts: list[int], q: torch.Tensor, scores: torch.Tensor, s: DecodingSettings, rng: torch.Generator | None
) -> list[int]:
    """The drafts the target keeps, then one token of its own: 1 to m + 1 tokens."""
    if s.do_sample:
        return _verify_sampled(drafts, q, scores.softmax(dim=-1), rng)
    return verify_greedy(drafts, scores)


def verify_greedy(drafts: list[int], target_logits: torch.Tensor) -> list[int]:
    """Keep drafts while each is the target's argmax; at the first miss (or the end) add the argmax.

    ``target_logits`` (m + 1, V) are the target's scores after the sequence and after each prefix of the
    m ``drafts``; the result is 1 to m + 1 tokens, the target's greedy continuation.

    >>> verify_greedy([3, 1], torch.tensor([[0.0, 0, 0, 9], [0, 0, 9, 0], [9, 0, 0, 0]]))  # 1 is a miss
    [3, 2]
    """
    best = target_logits.argmax(dim=-1).tolist()  # (m + 1,) the target's choice after each prefix of the drafts
    n = 0
    while n < len(drafts) and drafts[n] == best[n]:
        n += 1
    return drafts[:n] + [best[n]]


def _verify_sampled(
    drafts: list[int], q: torch.Tensor, p: torch.Tensor, rng: torch.Generator | None
) -> list[int]:
    """Modified rejection sampling over the target's p (m + 1, V) and the draft's q (m, V).

    Why each kept token follows p exactly: token x comes out either as an accepted draft, with probability
    q(x) · min(1, p(x)/q(x)) = min(p(x), q(x)), or from the residual after a rejection, with probability
    (1 - Σ min(p, q)) · max(0, p(x) - q(x)) / Σ max(0, p - q). The two sums are equal, so the second term is
    max(0, p(x) - q(x)), and min(p, q) + max(0, p - q) = p.
    """
    for i, x in enumerate(drafts):
        if not _accepts(p[i, x], q[i, x], rng):
            return drafts[:i] + [_sample(residual(p[i], q[i]), rng)]
    return drafts + [_sample(p[-1], rng)]  # all drafts kept: the target's last row gives a bonus token


def _accepts(p_x: torch.Tensor, q_x: torch.Tensor, rng: torch.Generator | None) -> bool:
    """Accept a draft token with probability min(1, p(x) / q(x)): always when the target likes it more."""
    u = torch.rand((), generator=rng, device=p_x.device)  # uniform in [0, 1); q_x > 0 as x was drawn from q
    return bool(u * q_x < p_x)


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """What to draw from after a rejection: max(0, p - q), the mass the target has and the draft lacks.

    ``p`` and ``q`` are (V,) probabilities, the target's and the draft's. The weights are not divided by
    their sum (``torch.multinomial`` does that); where nothing is left over, p is returned.

    >>> residual(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.3, 0.5, 0.2]))
    tensor([0.2000, 0.0000, 0.0000])
    """
    r = (p - q).clamp(min=0)  # (V,) unnormalised: multinomial normalises
    # p <= q everywhere means p == q up to rounding: then a rejection has probability ~0, and p is right
    return r if r.sum() > 0 else p


def _sample(probs: torch.Tensor, rng: torch.Generator | None) -> int:
    """One token drawn from (V,) weights."""
    return torch.multinomial(probs, 1, generator=rng).item()
