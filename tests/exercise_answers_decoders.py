"""Answers to the exercises that build whole decoders: chapter 7's sampler, chapter 8's speculative sampling loop.

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see. Used by tests/test_exercises.py.
"""

import torch

from minigpt.exercises import kv_cache as ch7
from minigpt.exercises import speculative as ch8
from minigpt.generate import generate
from minigpt.kv_cache import KVCache
from minigpt.logits import apply_temperature, min_p_filter, repetition_penalty, top_k_filter, top_p_filter

# ---- chapter 7: the whole sampler ----

LIBRARY_ORDER = ("penalty", "temperature", "top_k", "top_p", "min_p")


def sample(model, prompt_ids, max_new_tokens, settings, generator, *, order=LIBRARY_ORDER, cache=True,
           global_rng=False, penalise_prompt=True, per_row=False):
    s = settings
    steps = {
        "penalty": lambda x, seen: repetition_penalty(x, seen, s.repetition_penalty) if s.repetition_penalty else x,
        "temperature": lambda x, seen: apply_temperature(x, s.temperature),
        "top_k": lambda x, seen: top_k_filter(x, s.top_k) if s.top_k else x,
        "top_p": lambda x, seen: top_p_filter(x, s.top_p) if s.top_p else x,
        "min_p": lambda x, seen: min_p_filter(x, s.min_p) if s.min_p else x,
    }
    kv = KVCache.for_model(model, batch_size=prompt_ids.size(0))
    ids, fresh = prompt_ids, prompt_ids
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(fresh, kv_cache=kv)[:, -1] if cache else model(ids)[:, -1]  # (B, V)
        seen = ids if penalise_prompt else ids[:, prompt_ids.size(1) :]
        for name in order:
            logits = steps[name](logits, seen) if seen.size(1) or name != "penalty" else logits
        probs = logits.softmax(dim=-1)
        if per_row:  # one draw per row: the generator gives the rows the same numbers in the same order
            token = torch.stack([torch.multinomial(row, 1, generator=generator) for row in probs])
        else:
            token = torch.multinomial(probs, 1, generator=None if global_rng else generator)  # (B, 1)
        ids = torch.cat([ids, token], dim=1)
        fresh = token
    return ids


def sample_greedily(model, prompt_ids, max_new_tokens, settings, generator):
    return generate(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=0).ids


# ---- chapter 8: the speculative sampling loop ----


def speculative_sample(target, draft, prompt_ids, max_new_tokens, k, generator, *, bonus=True, resample="residual",
                       accept="p/q", global_rng=False, draft_greedily=False, draft_to_the_end=False):
    rng = None if global_rng else generator
    ids, prompt_length = prompt_ids, prompt_ids.size(1)
    while ids.size(1) - prompt_length < max_new_tokens:
        left = max_new_tokens - (ids.size(1) - prompt_length)
        drafts, qs, seq = [], [], ids
        with torch.no_grad():
            for _ in range(min(k, left if draft_to_the_end else left - 1)):
                q = draft(seq)[0, -1].softmax(dim=-1)  # (V,)
                x = int(q.argmax()) if draft_greedily else int(torch.multinomial(q, 1, generator=rng))
                drafts.append(x)
                qs.append(q)
                seq = torch.cat([seq, torch.tensor([[x]])], dim=1)
            p = target(seq)[0, -(len(drafts) + 1) :].softmax(dim=-1)  # (m + 1, V)
        kept = []
        for i, x in enumerate(drafts):
            u = torch.rand((), generator=rng)
            keep = {"p/q": u * qs[i][x] < p[i, x], "q/p": u * p[i, x] < qs[i][x], "always": True}[accept]
            if keep:
                kept.append(x)
                continue
            leftover = (p[i] - qs[i]).clamp(min=0) if resample == "residual" else p[i]
            kept.append(int(torch.multinomial(leftover if leftover.sum() > 0 else p[i], 1, generator=rng)))
            break
        else:
            if bonus or not drafts:  # the bonus forgotten: a round of m kept drafts yields m tokens, not m + 1
                kept.append(int(torch.multinomial(p[-1], 1, generator=rng)))
        ids = torch.cat([ids, torch.tensor([kept[:left]])], dim=1)
    return ids


CORRECT = [
    (ch7.check_sample, sample),
    (ch7.check_sample, lambda *args: sample(*args, per_row=True)),
    (ch8.check_speculative_sample, speculative_sample),
]


def wrong(function, **mistake):
    return lambda *args: function(*args, **mistake)


# (checker, a typical wrong answer, text its message must contain)
WRONG = {
    "sampler with temperature last": (
        ch7.check_sample, wrong(sample, order=("penalty", "top_k", "top_p", "min_p", "temperature")),
        "temperature BEFORE top-p"),
    "sampler with top-p before top-k": (
        ch7.check_sample, wrong(sample, order=("penalty", "temperature", "top_p", "top_k", "min_p")),
        "top-k BEFORE top-p"),
    "sampler with the penalty last": (
        ch7.check_sample, wrong(sample, order=("temperature", "top_k", "top_p", "min_p", "penalty")),
        "the repetition penalty comes FIRST"),
    "sampler that penalises only new tokens": (
        ch7.check_sample, wrong(sample, penalise_prompt=False), "each row penalised for its own tokens"),
    "sampler without a cache": (
        ch7.check_sample, wrong(sample, cache=False), "keep one KVCache"),
    "sampler that draws from the global generator": (
        ch7.check_sample, wrong(sample, global_rng=True), "drew from torch's global random generator"),
    "sampler that picks the argmax": (
        ch7.check_sample, sample_greedily, "the generator was never drawn from"),
    "speculative loop that keeps every draft": (
        ch8.check_speculative_sample, wrong(speculative_sample, accept="always"), "not drawn from the target's p"),
    "speculative loop that accepts with q / p": (
        ch8.check_speculative_sample, wrong(speculative_sample, accept="q/p"), "not drawn from the target's p"),
    "speculative loop that resamples from p": (
        ch8.check_speculative_sample, wrong(speculative_sample, resample="p"), "replaced from the residual"),
    "speculative loop without the bonus token": (
        ch8.check_speculative_sample, wrong(speculative_sample, bonus=False), "bonus token"),
    "speculative loop that drafts greedily": (
        ch8.check_speculative_sample, wrong(speculative_sample, draft_greedily=True), "not the library's tokens"),
    "speculative loop that drafts to the end": (
        ch8.check_speculative_sample, wrong(speculative_sample, draft_to_the_end=True), "not the library's tokens"),
    "speculative loop that draws from the global generator": (
        ch8.check_speculative_sample, wrong(speculative_sample, global_rng=True), "all from the generator"),
}
