"""Search: decoding that looks at several continuations before committing to one.

Greedy decoding takes the single most likely token at every step and can walk past a better sentence
whose first word was only second best. The methods here keep more than one option open:

- ``beam_search``: keep the ``num_beams`` most likely partial sequences (beams) and extend them all;
  with ``num_beam_groups`` the beams split into groups that are pushed apart (diverse beam search,
  Vijayakumar et al. 2016), with ``do_sample=True`` the next beams are drawn instead of taken (beam sample).
- ``sample_and_rank``: draw N samples and keep the one the model finds most likely per token (Meena,
  Adiwardana et al. 2020).
- ``contrastive_search``: pick among the k most likely tokens the one whose hidden state is least like
  anything said before, trading likelihood against repetition (Su et al. 2022).

Beams live in the batch dimension: B prompts with ``num_beams`` beams each are B * num_beams rows of one
model call, and after each step the KV cache is reordered so that every row holds its parent beam's past.
The results are those of Hugging Face transformers 4.55 ``generate`` token for token (the tests check it).

>>> from minigpt.model import GPT, GPTConfig
>>> out = beam_search(GPT(GPTConfig.from_preset("tiny")), "Hello", num_beams=3, max_new_tokens=4)
>>> out.ids.shape, out.scores.shape
(torch.Size([1, 5]), torch.Size([1]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from minigpt import logits as L
from minigpt.checks import check_int, check_keywords, check_model, check_real
from minigpt.generate import (
    PAD_TOKEN_ID,
    DecodingSettings,
    Generation,
    LoopState,
    eval_mode,
    generate,
    make_generator,
    next_logits,
    prefill,
    prepare_prompt,
    row_finished,
)
from minigpt.kv_cache import KVCache, check_memory_fits
from minigpt.model import GPT, position_ids_from_mask
from minigpt.tokenizer import decode

INACTIVE_SCORE = -1e9  # running score of a beam not yet in play; finite, so sums and softmax stay well defined

Hypothesis = tuple[float, list[int]]  # (score, new tokens with the EOS that ended them)


@dataclass
class BeamSettings:
    """Every knob of beam search, checked once before any work starts."""

    num_beams: int
    max_new_tokens: int
    length_penalty: float = 1.0  # > 0 favours long hypotheses, < 0 short ones
    early_stopping: bool | str = False  # True, False (a heuristic) or "never" (canonical beam search)
    num_return_sequences: int = 1
    num_beam_groups: int = 1  # > 1: diverse beam search
    diversity_penalty: float = 0.0  # subtracted per earlier-group beam that chose the same token this step
    do_sample: bool = False  # True: beam sample
    eos_token_id: int | Sequence[int] | None = None
    use_cache: bool = True
    allow_special: bool = False  # True: "<|endoftext|>" in a text prompt is the end-of-text token
    logits: L.LogitsSettings = field(default_factory=L.LogitsSettings)  # the sampling filters only when sampling

    def __post_init__(self) -> None:
        check_int("num_beams", self.num_beams, 1)
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_int("num_return_sequences", self.num_return_sequences, 1)
        if self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences must be <= num_beams={self.num_beams} (only num_beams hypotheses are "
                f"kept), got {self.num_return_sequences}"
            )
        check_real("length_penalty", self.length_penalty, "a finite number", math.isfinite)
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        self._check_groups()
        # the token-level settings are generate's: same checks, same messages
        self.decoding = DecodingSettings(
            max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, eos_token_id=self.eos_token_id,
            use_cache=self.use_cache, allow_special=self.allow_special, logits=self.logits,
        )
        self.eos_token_ids = self.decoding.eos_token_ids
        self.do_sample = self.decoding.do_sample  # temperature 0 means no sampling, as in generate
        # candidates kept per step: enough that num_beams go on even if every beam's best tokens are EOS
        self.candidates_per_beam = max(2, 1 + len(self.eos_token_ids))
        # penalties, then (beam sample) the filters, each keeping enough tokens to fill the candidates
        self.chain = self.logits.chain(
            sample=self.do_sample, eos_token_ids=self.eos_token_ids, min_tokens_to_keep=self.candidates_per_beam)

    @classmethod
    def from_keywords(cls, logits: L.LogitsSettings | None = None, **keywords: object) -> BeamSettings:
        """The settings from keywords: ``LogitsSettings`` fields (or ``logits`` itself) and this class's own."""
        logits, rest = L.split_settings(keywords, logits)
        check_keywords(cls, rest, also=" and LogitsSettings' fields")
        return cls(**rest, logits=logits)

    def _check_groups(self) -> None:
        check_int("num_beam_groups", self.num_beam_groups, 1)
        if self.num_beams % self.num_beam_groups != 0:
            raise ValueError(
                f"num_beam_groups must divide num_beams={self.num_beams} evenly, got {self.num_beam_groups}"
            )
        check_real("diversity_penalty", self.diversity_penalty, "a finite number >= 0", lambda v: 0 <= v < math.inf)
        # groups and the penalty come together: without groups there is nothing to push apart, and
        # without the penalty every group would find the same beams
        if (self.diversity_penalty > 0) != (self.num_beam_groups > 1):
            raise ValueError(
                f"diversity_penalty must be > 0 exactly when num_beam_groups > 1 (the penalty pushes groups "
                f"apart), got diversity_penalty={self.diversity_penalty!r} with num_beam_groups={self.num_beam_groups}"
            )
        if self.num_beam_groups > 1 and self.do_sample:
            raise ValueError(
                f"num_beam_groups must be 1 with do_sample=True (diverse beam search does not sample), "
                f"got {self.num_beam_groups}"
            )


@torch.inference_mode()
def beam_search(
    model: GPT,
    prompt: str | Sequence[str] | torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    logits: L.LogitsSettings | None = None,
    **settings,
) -> Generation:
    """Beam search from ``prompt`` (a string, a list of strings, or (B, T) ids with ``attention_mask``).

    ``settings`` are the fields of ``BeamSettings``: ``num_beams`` and ``max_new_tokens`` (required),
    ``length_penalty``, ``early_stopping``, ``num_return_sequences``, ``num_beam_groups`` and
    ``diversity_penalty`` (diverse beam search), ``do_sample`` (beam sample, drawing from ``generator``,
    one seeded with ``seed``, or torch's global generator), ``eos_token_id``, ``use_cache``,
    ``allow_special``; ``logits`` (a ``minigpt.logits.LogitsSettings``, or its fields as keywords) are the
    transforms, applied to the log-probabilities as transformers applies them: the penalties always, the
    sampling filters (temperature, top-k, top-p …) only in beam sample, each keeping 1 + (number of EOS
    ids) tokens, at least 2, per beam.

    The result is a ``Generation`` of ranked candidates, ``n = num_return_sequences`` per prompt: rows
    i*n … i*n + n-1 are prompt i's, best first. ``ids`` holds the left-padded prompt, the continuation
    and ``PAD_TOKEN_ID`` after shorter ones; ``scores`` (B*n,) is Σ log p / (new tokens, EOS included)
    ** length_penalty. The prompt's pass runs once per prompt, its cache rows then copied to every beam.

    As in ``generate``, a model in train mode decodes in eval mode and gets its mode back afterwards, and
    a run whose peak memory (KV cache, logits and activations of B * num_beams rows) is more than the
    device's is refused before any work.

    >>> from minigpt.model import GPT, GPTConfig
    >>> out = beam_search(GPT(GPTConfig.from_preset("tiny")), ["Hi", "Good day"], num_beams=4,
    ...                   max_new_tokens=3, num_return_sequences=2)
    >>> out.ids.shape, len(out.texts)
    (torch.Size([4, 5]), 4)
    """
    check_model("model", model)
    s = BeamSettings.from_keywords(logits, **settings)
    ids, mask, texts = prepare_prompt(model, prompt, attention_mask, s.decoding)
    (B, P), nb = ids.shape, s.num_beams
    check_memory_fits(model, B * nb, P + s.max_new_tokens, f"num_beams={nb} × batch size {B} = {B * nb} rows",
                      prompt_rows=B, prompt_len=P, use_cache=s.use_cache)
    rng = make_generator(seed, generator, ids.device)
    with eval_mode(model):
        if s.num_beam_groups > 1:
            hypotheses = _group_beam_search(model, ids, mask, s)
        else:
            hypotheses = _beam_search(model, ids, mask, s, rng)
    return _ranked_output(ids, mask, texts, hypotheses, s.eos_token_ids)


# ---- beam search and beam sample: all beams of a prompt compete for the next num_beams places ----


class _FinishedPool:
    """The ``num_beams`` best finished hypotheses of each prompt, best first (transformers' ``sequences``)."""

    def __init__(self, B: int, num_beams: int, width: int, device: torch.device) -> None:
        self.sequences = torch.full((B, num_beams, width), PAD_TOKEN_ID, device=device)
        self.scores = torch.full((B, num_beams), -math.inf, device=device)  # length-penalised
        self.lengths = torch.zeros((B, num_beams), dtype=torch.long, device=device)  # new tokens, EOS included
        self.filled = torch.zeros((B, num_beams), dtype=torch.bool, device=device)

    def add(self, sequences: torch.Tensor, scores: torch.Tensor, admit: torch.Tensor, length: int) -> None:
        """Merge the admitted candidates, (B, K, width) with (B, K) scores, and keep the best num_beams."""
        scores = scores.masked_fill(~admit, -math.inf)
        merged = torch.cat([self.scores, scores], 1)  # (B, num_beams + K)
        best = merged.topk(self.scores.size(1)).indices  # sorted: slot 0 holds the best
        self.scores = merged.gather(1, best)
        self.sequences = _gather_beams(torch.cat([self.sequences, sequences], 1), best)
        self.lengths = torch.cat([self.lengths, torch.full_like(scores, length, dtype=torch.long)], 1).gather(1, best)
        self.filled = torch.cat([self.filled, admit], 1).gather(1, best)

    def top(self, n: int, prompt_len: int) -> list[list[Hypothesis]]:
        """The ``n`` best hypotheses of each prompt as (score, new tokens)."""
        return [
            [(score, self.sequences[b, j, prompt_len : prompt_len + length].tolist())
             for j, (score, length) in enumerate(zip(self.scores[b, :n].tolist(), self.lengths[b, :n].tolist()))]
            for b in range(self.scores.size(0))
        ]


def _beam_search(
    model: GPT, ids: torch.Tensor, mask: torch.Tensor, s: BeamSettings, rng: torch.Generator | None
) -> list[list[Hypothesis]]:
    """The beam search loop of transformers' ``_beam_search`` (plain and sampling): hypotheses per prompt."""
    B, P = ids.shape
    nb, V, K = s.num_beams, model.config.vocab_size, s.candidates_per_beam * s.num_beams
    width = P + s.max_new_tokens
    running = torch.full((B, nb, width), PAD_TOKEN_ID, device=ids.device)  # room for every new token
    running[:, :, :P] = ids.unsqueeze(1)
    running_scores = torch.zeros((B, nb), device=ids.device)  # Σ log p of each running beam
    running_scores[:, 1:] = INACTIVE_SCORE  # the beams start identical: only beam 0 may propose tokens at first
    finished = _FinishedPool(B, nb, width, ids.device)
    improvable = torch.ones(B, dtype=torch.bool, device=ids.device)  # can a running beam still beat the pool?
    eos = torch.tensor(s.eos_token_ids, dtype=torch.long, device=ids.device)
    cache = KVCache.for_model(model, B, width) if s.use_cache else None  # B * nb rows after the prompt's pass
    for step in range(s.max_new_tokens):
        rows = running[:, :, : P + step].reshape(B * nb, P + step)
        log_probs = _beam_log_probs(model, rows, _grown_mask(mask, nb, step), cache, step, s)  # (B*nb, V)
        totals = (log_probs.view(B, nb, V) + running_scores.unsqueeze(-1)).view(B, nb * V)
        cand_scores, cand = _pick_candidates(totals, K, s.do_sample, rng)  # (B, K) each
        parents, tokens = cand // V, cand % V  # which beam each candidate extends, with which token
        candidates = _gather_beams(running, parents)  # (B, K, width)
        candidates[:, :, P + step] = tokens
        ends = torch.isin(tokens, eos) | (step == s.max_new_tokens - 1)  # (B, K)
        # 1. the num_beams best candidates that did not end are the next running beams
        going_on = cand_scores.masked_fill(ends, -math.inf).topk(nb).indices  # (B, nb)
        running, running_scores = _gather_beams(candidates, going_on), cand_scores.gather(1, going_on)
        # 2. those that ended join the pool, if they ranked among the first num_beams (the rest are spares)
        admit = ends & improvable.unsqueeze(1)
        admit[:, nb:] = False
        if s.early_stopping is True:
            admit &= ~finished.filled.all(1, keepdim=True)
        finished.add(candidates, cand_scores / (step + 1) ** s.length_penalty, admit, step + 1)
        # 3. every row of the cache now continues its parent beam's past
        if cache is not None:
            offsets = torch.arange(B, device=ids.device).unsqueeze(1) * nb  # prompt b's beams are rows b*nb …
            cache.reorder((parents.gather(1, going_on) + offsets).flatten())
        improvable &= _can_improve(running_scores, finished, step, s)
        if not improvable.any() or (s.early_stopping is True and finished.filled.all()):
            break
    return finished.top(s.num_return_sequences, P)


def _beam_log_probs(
    model: GPT, rows: torch.Tensor, mask: torch.Tensor, cache: KVCache | None, step: int, s: BeamSettings
) -> torch.Tensor:
    """Log-probs of the next token for each (B*nb, T) row, penalties applied (and the filters when sampling)."""
    logits = prefill(model, rows, mask, cache, s.num_beams) if step == 0 else next_logits(model, rows, mask, cache)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return s.chain(log_probs, rows, new_tokens=step)


def _pick_candidates(
    totals: torch.Tensor, k: int, do_sample: bool, rng: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` (beam, token) candidates from the flattened (B, nb*V) running totals: the best, or drawn."""
    if not do_sample:
        return totals.topk(k)
    # beam sample: k draws without replacement, weighted by the softmax of the running totals
    picked = torch.multinomial(torch.softmax(totals, dim=-1), k, generator=rng)  # (B, k), in draw order
    return totals.gather(1, picked), picked


def _can_improve(running_scores: torch.Tensor, finished: _FinishedPool, step: int, s: BeamSettings) -> torch.Tensor:
    """(B,) Could the best running beam still beat the worst of a full pool? transformers' stopping heuristic."""
    # with length_penalty > 0 longer is better: "never" assumes the best beam grows to max_new_tokens;
    # otherwise the estimate uses today's length (not exact when length_penalty > 0, as in transformers)
    longest = s.early_stopping == "never" and s.length_penalty > 0
    length = s.max_new_tokens if longest else step + 1
    best_possible = running_scores[:, 0] / length**s.length_penalty
    return ~finished.filled.all(1) | (best_possible > finished.scores.min(1).values)


def _gather_beams(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, n) of each prompt's beams in ``t`` (B, nb, …) → (B, n, …)."""
    return torch.take_along_dim(t, index.view(*index.shape, *[1] * (t.dim() - 2)), dim=1)


# ---- diverse beam search: groups take turns, each penalised for the tokens earlier groups just chose ----


class _Hypotheses:
    """The ``size`` best finished hypotheses of one prompt's beam group (transformers' ``BeamHypotheses``)."""

    def __init__(self, size: int, s: BeamSettings) -> None:
        self.size, self.s = size, s
        self.items: list[Hypothesis] = []
        self.worst = 1e9  # score a newcomer must beat once the list is full
        self.done = False  # set once no running beam of the group can make the list better

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        score = sum_logprobs / len(tokens) ** self.s.length_penalty
        if len(self.items) < self.size or score > self.worst:
            self.items.append((score, tokens))
            if len(self.items) > self.size:
                ranked = sorted((sc, i) for i, (sc, _) in enumerate(self.items))
                del self.items[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprobs: float, length: int) -> bool:
        """Full, and (unless early_stopping is True) no running beam of this length can beat the worst."""
        if len(self.items) < self.size:
            return False
        if self.s.early_stopping is True:
            return True
        if self.s.early_stopping == "never" and self.s.length_penalty > 0:
            length = self.s.max_new_tokens
        return self.worst >= best_sum_logprobs / length**self.s.length_penalty


def _group_beam_search(model: GPT, ids: torch.Tensor, mask: torch.Tensor, s: BeamSettings) -> list[list[Hypothesis]]:
    """transformers' ``_group_beam_search`` (with its ``BeamSearchScorer``): hypotheses per prompt.

    The bookkeeping is transformers' older one, which differs from ``_beam_search`` in corner cases (which
    candidates may finish at the last step, the stopping test), so it is followed separately.
    """
    B, P = ids.shape
    nb, G = s.num_beams, s.num_beam_groups
    rows = ids.repeat_interleave(nb, 0)  # (B*nb, P): row b*nb + j is beam j of prompt b
    scores = torch.full((B, nb), INACTIVE_SCORE, device=ids.device)  # Σ log p of each running beam
    scores[:, :: nb // G] = 0.0  # one live beam per group at first
    finished = [[_Hypotheses(nb // G, s) for _ in range(G)] for _ in range(B)]
    cache = KVCache.for_model(model, B, P + s.max_new_tokens) if s.use_cache else None  # B * nb after the prompt
    for step in range(s.max_new_tokens):
        grown = _grown_mask(mask, nb, step)
        logits = prefill(model, rows, grown, cache, nb) if step == 0 else next_logits(model, rows, grown, cache)
        log_probs = torch.log_softmax(logits.float(), dim=-1).view(B, nb, -1)
        chosen, parents = _group_step(log_probs, rows, scores, finished, step, s)
        rows = torch.cat([rows[parents], chosen.view(-1, 1)], 1)
        if cache is not None:
            cache.reorder(parents)
        if all(hyps.done for groups in finished for hyps in groups):
            break
    for b, g in ((b, g) for b in range(B) for g in range(G) if not finished[b][g].done):
        for j in range(g * nb // G, (g + 1) * nb // G):  # beams still running at the end count as finished
            finished[b][g].add(rows[b * nb + j, P:].tolist(), scores[b, j].item())
    pooled = [[h for hyps in groups for h in hyps.items] for groups in finished]  # all groups of a prompt compete
    return [sorted(hyps, key=lambda h: h[0], reverse=True)[: s.num_return_sequences] for hyps in pooled]


def _group_step(
    log_probs: torch.Tensor, rows: torch.Tensor, scores: torch.Tensor, finished: list[list[_Hypotheses]], step: int,
    s: BeamSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend the groups in turn, each seeing the tokens the earlier ones just chose. Updates ``scores``.

    ``log_probs`` (B, nb, V), ``rows`` (B*nb, T); returns each beam's new token (B, nb) and the row it
    continues (B*nb,). Beams of a group that is done get ``PAD_TOKEN_ID`` and stay where they are.
    """
    B, nb, V = log_probs.shape
    size = nb // s.num_beam_groups  # beams per group
    P = rows.size(1) - step
    chosen = torch.full((B, nb), PAD_TOKEN_ID, device=rows.device)
    parents = torch.arange(B * nb, device=rows.device).view(B, nb)
    for g in range(s.num_beam_groups):
        beams = slice(g * size, (g + 1) * size)
        group_rows = rows.view(B, nb, -1)[:, beams]  # (B, size, T)
        group = _group_log_probs(log_probs[:, beams], group_rows.reshape(B * size, -1), chosen[:, : g * size], step, s)
        totals = (group + scores[:, beams].reshape(-1, 1)).view(B, size * V)
        top_scores, top = totals.topk(s.candidates_per_beam * size)  # (B, K) each, best first
        for b in (b for b in range(B) if not finished[b][g].done):
            hyps = finished[b][g]
            survivors = _advance_group(hyps, top_scores[b].tolist(), (top[b] // V).tolist(), (top[b] % V).tolist(),
                                       group_rows[b, :, P:], s.eos_token_ids)
            for j, (score, parent, token) in enumerate(survivors):
                scores[b, g * size + j], chosen[b, g * size + j] = score, token
                parents[b, g * size + j] = b * nb + g * size + parent
            hyps.done = hyps.is_done(top_scores[b].max().item(), step + 1)
    return chosen, parents.flatten()


def _group_log_probs(
    log_probs: torch.Tensor, rows: torch.Tensor, earlier: torch.Tensor, step: int, s: BeamSettings
) -> torch.Tensor:
    """(B, size, V) log-probs of one group → (B*size, V): diversity penalty first, then the others."""
    if s.diversity_penalty > 0 and earlier.size(1) > 0:
        log_probs = hamming_diversity(log_probs, earlier, s.diversity_penalty)
    return s.chain(log_probs.reshape(-1, log_probs.size(-1)), rows, new_tokens=step)


def _advance_group(
    hyps: _Hypotheses, scores: list[float], parents: list[int], tokens: list[int], beams: torch.Tensor,
    eos_token_ids: tuple[int, ...],
) -> list[tuple[float, int, int]]:
    """Walk one group's candidates best first: EOS ones finish, the first ``size`` others go on.

    ``beams`` (size, t) are the new tokens of the group's beams so far; returns (score, parent, token) per
    beam that goes on.
    """
    survivors = []
    for rank, (score, parent, token) in enumerate(zip(scores, parents, tokens)):
        if token in eos_token_ids:
            if rank < hyps.size:  # only the `size` best candidates may finish; the others are spares
                hyps.add(beams[parent].tolist() + [token], score)
        else:
            survivors.append((score, parent, token))
        if len(survivors) == hyps.size:
            break
    return survivors


def hamming_diversity(log_probs: torch.Tensor, earlier: torch.Tensor, penalty: float) -> torch.Tensor:
    """Subtract ``penalty`` once for every earlier-group beam that chose the token at this step.

    ``log_probs`` (B, n, V) are one group's beams, ``earlier`` (B, m) the tokens the earlier groups of the
    same prompt just chose. Diverse beam search (Vijayakumar et al. 2016), Hamming variant.

    >>> hamming_diversity(torch.zeros(1, 1, 4), torch.tensor([[2, 2, 0]]), 0.5)
    tensor([[[-0.5000,  0.0000, -1.0000,  0.0000]]])
    """
    counts = torch.zeros(log_probs.size(0), log_probs.size(-1), device=log_probs.device)  # (B, V)
    counts.scatter_add_(1, earlier, torch.ones_like(earlier, dtype=counts.dtype))
    return log_probs - penalty * counts.unsqueeze(1)


# ---- sample-and-rank ----


@torch.inference_mode()
def sample_and_rank(
    model: GPT,
    prompt: str | Sequence[str] | torch.Tensor,
    *,
    num_samples: int,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
    **settings,
) -> Generation:
    """Draw ``num_samples`` continuations per prompt and rank them by mean log-probability per token.

    Meena's decoder (Adiwardana et al. 2020): plain sampling explores, the ranking keeps the candidate the
    model itself finds most likely. A token's log-prob is that of the distribution it was drawn from (after
    temperature and filters), as ``generate(return_scores=True)`` reports it; the EOS that ended a sample
    counts as a token. ``settings`` go to ``generate`` (``top_k``, ``top_p``, ``eos_token_id``, …). The
    result has beam search's layout: every sample of each prompt, best first, ``scores`` the means (and
    ``token_logprobs`` the log-probs they are the means of). The samples are ``generate``'s
    ``num_return_sequences``: a count whose run would not fit in memory is refused under that name, at once.

    >>> from minigpt.model import GPT, GPTConfig
    >>> out = sample_and_rank(GPT(GPTConfig.from_preset("tiny")), "Hi", num_samples=4, max_new_tokens=5, seed=0)
    >>> len(out.texts), bool(out.scores[0] >= out.scores[-1])
    (4, True)
    """
    check_model("model", model)
    check_int("num_samples", num_samples, 1)
    check_int("max_new_tokens", max_new_tokens, 1)
    check_real("temperature", temperature, "a finite number > 0", lambda v: 0 < v < math.inf)
    out = generate(
        model, prompt, attention_mask=attention_mask, seed=seed, generator=generator, return_scores=True,
        do_sample=True, temperature=temperature, max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
        **settings,
    )
    means = torch.tensor([sum(lp) / len(lp) for lp in out.token_logprobs], device=out.ids.device)
    scores, order = means.view(-1, num_samples).sort(dim=1, descending=True, stable=True)  # (B, N) each
    rows = (order + torch.arange(order.size(0), device=order.device).unsqueeze(1) * num_samples).flatten().tolist()
    return Generation(
        out.ids[rows],
        out.attention_mask[rows],
        [out.new_tokens[r] for r in rows],
        None if out.texts is None else [out.texts[r] for r in rows],
        [out.stopped_by[r] for r in rows],
        token_logprobs=[out.token_logprobs[r] for r in rows],
        scores=scores.flatten(),
    )


# ---- contrastive search ----


@torch.inference_mode()
def contrastive_search(
    model: GPT,
    prompt: str | Sequence[str] | torch.Tensor,
    *,
    penalty_alpha: float,
    top_k: int,
    max_new_tokens: int = 50,
    eos_token_id: int | Sequence[int] | None = None,
    attention_mask: torch.Tensor | None = None,
    allow_special: bool = False,
    logits: L.LogitsSettings | None = None,
    **settings,
) -> Generation:
    """Contrastive search (Su et al. 2022): of the ``top_k`` most likely tokens, take the best by

        (1 - penalty_alpha) * p(token) - penalty_alpha * max cosine(h_token, h_earlier)

    where h is the model's last hidden state: a likely token is preferred unless it would make the model
    "say again" something it already said. ``penalty_alpha=0`` is greedy decoding. Finished rows get
    ``PAD_TOKEN_ID``, as in ``generate``, whose ``Generation`` this returns. ``top_k`` is at most the
    vocabulary size (it is the candidate count, not the top-k filter). ``logits`` (a
    ``minigpt.logits.LogitsSettings``, or its fields as keywords) are applied as in greedy decoding: the
    penalties, bans and ``min_new_tokens``, not the sampling filters. As in ``generate``, a model in train
    mode decodes in eval mode and gets its mode back, and a run whose peak memory (KV cache, logits and
    activations of B * top_k rows) is more than the device's is refused before any work.

    >>> from minigpt.model import GPT, GPTConfig
    >>> out = contrastive_search(GPT(GPTConfig.from_preset("tiny")), "Hi", penalty_alpha=0.6, top_k=4,
    ...                          max_new_tokens=5)
    >>> len(out.new_tokens[0])
    5
    """
    check_model("model", model)
    check_real("penalty_alpha", penalty_alpha, "a number in [0, 1]", lambda v: 0 <= v <= 1)
    check_int("top_k", top_k, 1, high=model.config.vocab_size)  # candidates are distinct tokens
    s = DecodingSettings.from_keywords(  # greedy: only the settings that describe the sequence apply
        logits, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, allow_special=allow_special, **settings
    )
    ids, mask, texts = prepare_prompt(model, prompt, attention_mask, s)
    state = LoopState(ids, mask, s.max_new_tokens, scores=False, dists=False)
    (B, P), width = ids.shape, state.ids.size(1)  # the prompt's pass returns every position's logits
    check_memory_fits(model, B * top_k, width, f"top_k={top_k} × batch size {B} = {B * top_k} rows",
                      prompt_rows=B, prompt_len=P, all_positions=True)
    with eval_mode(model):
        cache = KVCache.for_model(model, ids.size(0), state.ids.size(1))
        positions = position_ids_from_mask(mask)
        logits, hidden = _forward_with_hidden(model, ids, attention_mask=mask, position_ids=positions, kv_cache=cache)
        logits = logits[:, -1]  # (B, V): the next token's logits of each running row
        # hidden (B, P, C) grows by the chosen token's state each step: the "context" candidates are compared to
        cache.reorder(torch.arange(ids.size(0), device=ids.device).repeat_interleave(top_k))  # top_k rows per prompt
        for step in range(s.max_new_tokens):
            if len(state.active) == 0:
                break
            logits, hidden = _contrastive_step(model, state, logits, hidden, cache, step, s, penalty_alpha, top_k)
        return state.result(texts, ())


def _contrastive_step(
    model: GPT, state: LoopState, logits: torch.Tensor, hidden: torch.Tensor, cache: KVCache, step: int,
    s: DecodingSettings, alpha: float, k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose and append one token per running row; return the next logits and grown hidden states."""
    A = len(state.active)
    context_mask = state.mask[state.active, : state.length]  # (A, S): 0 at left padding
    probs = torch.softmax(s.chain(logits, state.ids[state.active, : state.length], new_tokens=step), dim=-1)
    top_probs, candidates = probs.topk(k)  # (A, k)
    # run every candidate one step further, all A*k of them in one batch, to see its hidden state
    cand_mask = torch.cat([context_mask, context_mask.new_ones(A, 1)], 1).repeat_interleave(k, 0)
    cand_logits, cand_hidden = _forward_with_hidden(
        model, candidates.view(-1, 1), attention_mask=cand_mask, position_ids=position_ids_from_mask(cand_mask)[:, -1:],
        kv_cache=cache, last_only=True,
    )
    cand_hidden = cand_hidden.view(A, k, -1)  # (A, k, C)
    score = (1 - alpha) * top_probs - alpha * degeneration_penalty(hidden, cand_hidden, context_mask)
    best = score.max(dim=-1).indices  # (A,)
    rows = torch.arange(A, device=best.device)
    state.append(candidates[rows, best], probs, top_probs[rows, best].log())
    hidden = torch.cat([hidden, cand_hidden[rows, best].unsqueeze(1)], 1)
    logits = cand_logits.view(A, k, -1)[rows, best]  # the chosen candidate's logits are the next step's
    going_on = torch.tensor([not row_finished(state, row, s) for row in state.active.tolist()], device=best.device)
    state.active = state.active[going_on]
    cache.reorder((rows * k + best)[going_on].repeat_interleave(k))  # each row of a prompt: the chosen past
    return logits[going_on], hidden[going_on]


def degeneration_penalty(context: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """For each candidate, its largest cosine similarity with the hidden state of any earlier real token.

    ``context`` (B, S, C) and ``mask`` (B, S) (0 at padding), ``candidates`` (B, k, C) → (B, k).

    >>> context = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    >>> degeneration_penalty(context, torch.tensor([[[1.0, 1.0], [-2.0, 0.0]]]), torch.tensor([[1, 1, 0]]))
    tensor([[0.7071, 0.0000]])
    """
    context = context / context.norm(dim=-1, keepdim=True)
    candidates = candidates / candidates.norm(dim=-1, keepdim=True)
    cosine = candidates @ context.transpose(1, 2)  # (B, k, S)
    return cosine.masked_fill(mask.unsqueeze(1) == 0, -math.inf).amax(dim=-1)


def _forward_with_hidden(model: GPT, ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits and its last hidden states (the output of ``ln_f``, what the head reads).

    ``GPT.forward`` returns logits only; rather than change it for one decoding method, a forward hook
    catches ``ln_f``'s output on the way (with ``last_only`` that is the last position only).
    """
    caught = []
    handle = model.transformer.ln_f.register_forward_hook(lambda module, inputs, output: caught.append(output))
    try:
        logits = model(ids, **kwargs)
    finally:
        handle.remove()
    return logits, caught[0]


# ---- shared by the methods above ----


def _grown_mask(mask: torch.Tensor, num_beams: int, step: int) -> torch.Tensor:
    """The (B, P) prompt mask for every beam, plus ``step`` generated (real) tokens: (B*num_beams, P + step)."""
    rows = mask.repeat_interleave(num_beams, 0)
    return torch.cat([rows, rows.new_ones(rows.size(0), step)], 1)


def _ranked_output(
    ids: torch.Tensor, mask: torch.Tensor, texts: list[str] | None, hypotheses: list[list[Hypothesis]],
    eos_token_ids: tuple[int, ...],
) -> Generation:
    """Lay the hypotheses of each prompt out as rows: prompt (B, P) + new tokens + padding."""
    n, P = len(hypotheses[0]), ids.size(1)
    new_tokens = [tokens for per_prompt in hypotheses for _, tokens in per_prompt]
    width = P + max(map(len, new_tokens))
    sequences = torch.full((len(new_tokens), width), PAD_TOKEN_ID, device=ids.device)
    sequences[:, :P] = ids.repeat_interleave(n, 0)
    sequences_mask = torch.zeros_like(sequences)
    sequences_mask[:, :P] = mask.repeat_interleave(n, 0)
    for row, tokens in enumerate(new_tokens):
        sequences[row, P : P + len(tokens)] = torch.tensor(tokens)
        sequences_mask[row, P : P + len(tokens)] = 1
    scores = torch.tensor([score for per_prompt in hypotheses for score, _ in per_prompt], device=ids.device)
    if texts is not None:
        texts = [texts[row // n] + decode(tokens) for row, tokens in enumerate(new_tokens)]
    stopped_by = ["eos" if tokens[-1] in eos_token_ids else None for tokens in new_tokens]
    return Generation(sequences, sequences_mask, new_tokens, texts, stopped_by, scores=scores)
