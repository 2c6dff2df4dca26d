"""Answers to the exercises of chapters 5-8 (loop control, beam search, KV cache, speculative decoding).

``CORRECT`` pairs each checker with solutions it must accept; ``WRONG`` names the typical mistakes it must
reject, each with a piece of the message the student should see. Used by tests/test_exercises.py.
"""

import torch

from minigpt.exercises import beam_search as ch6
from minigpt.exercises import kv_cache as ch7
from minigpt.exercises import loop as ch5
from minigpt.exercises import speculative as ch8
from minigpt.kv_cache import KVCache

# ---- chapter 5: controlling the loop ----


def apply_repetition_penalty(logits, input_ids, penalty, *, negatives="multiply", once=True):
    out = logits.clone()
    for row, ids in enumerate(input_ids.tolist()):
        for token in set(ids) if once else ids:
            x = out[row, token]
            out[row, token] = x * penalty if x < 0 and negatives == "multiply" else x / penalty
    return out


def banned_ngram_tokens(ids, n, *, prefix_length=None, last_ngram=True):
    prefix_length = n - 1 if prefix_length is None else prefix_length
    prefix = ids[len(ids) - prefix_length :]
    starts = range(len(ids) - n + 1 if last_ngram else len(ids) - n)
    return {ids[i + prefix_length] for i in starts if ids[i : i + prefix_length] == prefix}


def cut_at_stop(text, stop_strings, *, earliest=True, keep_stop=False):
    found = [(text.find(s), s) for s in stop_strings if s in text]
    if not found:
        return text
    start, stop = min(found) if earliest else found[0]
    return text[: start + len(stop) if keep_stop else start]


# ---- chapter 6: beam search ----


def beam_score(sum_logprobs, sequence_length, prompt_length, length_penalty, *, count_prompt=False, penalty=True):
    length = sequence_length if count_prompt else sequence_length - prompt_length
    return sum_logprobs / length**length_penalty if penalty else sum_logprobs


def beam_step(beam_scores, log_probs, num_beams, *, add_running=True):
    totals = beam_scores[:, None] + log_probs if add_running else log_probs
    scores, flat = totals.flatten().topk(num_beams)
    vocab_size = log_probs.size(1)
    return scores, flat // vocab_size, flat % vocab_size


def best_token_per_beam(beam_scores, log_probs, num_beams):
    scores, tokens = (beam_scores[:, None] + log_probs).max(dim=-1)  # one candidate per beam: too few
    order = scores.argsort(descending=True)[:num_beams]
    return scores[order], order, tokens[order]


def beam_search_by_hand(model, prompt_ids, num_beams, steps, *, all_live=False, follow_parents=True):
    beams = prompt_ids.repeat(num_beams, 1)
    scores = torch.zeros(num_beams)
    if not all_live:
        scores[1:] = -1e9
    for _ in range(steps):
        with torch.no_grad():
            log_probs = model(beams)[:, -1].log_softmax(dim=-1)
        scores, parents, tokens = beam_step(scores, log_probs, num_beams)
        beams = torch.cat([beams[parents] if follow_parents else beams, tokens[:, None]], dim=1)
    return beams


# ---- chapter 7: the KV cache ----


def greedy_with_cache(model, prompt_ids, max_new_tokens, *, positions="continue"):
    cache = KVCache.for_model(model, prompt_ids.size(0))
    ids, fresh = prompt_ids, prompt_ids
    for _ in range(max_new_tokens):
        past = cache.length
        position_ids = torch.arange(past, past + fresh.size(1))[None]
        if positions == "zero" and past > 0:  # the prompt is right, every new token sits at 0
            position_ids = torch.zeros_like(fresh)
        with torch.no_grad():
            logits = model(fresh, kv_cache=cache, position_ids=position_ids)
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        fresh = ids if positions == "refeed" else next_id
    return ids


def kv_cache_bytes(n_layer, batch_size, seq_len, n_embd, dtype, *, keys_and_values=2, bytes_per_number=None):
    size = dtype.itemsize if bytes_per_number is None else bytes_per_number
    return keys_and_values * n_layer * batch_size * seq_len * n_embd * size


def causal_mask_with_cache(past_length, new_length, *, offset=True):
    mask = torch.ones(new_length, past_length + new_length, dtype=torch.bool)
    return mask.tril(diagonal=past_length if offset else 0)


# ---- chapter 8: speculative decoding ----


def verify_greedy(drafts, target_logits, *, bonus=True, prefix=True):
    best = target_logits.argmax(dim=-1).tolist()
    if not prefix:  # every matching draft, even after a miss
        return [d for d, b in zip(drafts, best) if d == b] + [best[len(drafts)]]
    n = 0
    while n < len(drafts) and drafts[n] == best[n]:
        n += 1
    return drafts[:n] + [best[n]] if bonus or n < len(drafts) else drafts


def accept_probability(p_x, q_x):
    return min(1.0, p_x / q_x)


def residual_distribution(p, q, *, clamp=True, normalise=True):
    leftover = (p - q).clamp(min=0) if clamp else p - q
    if leftover.sum() <= 0 and clamp:
        return p
    return leftover / leftover.sum() if normalise else leftover


CORRECT = [
    (ch5.check_apply_repetition_penalty, apply_repetition_penalty),
    (ch5.check_banned_ngram_tokens, banned_ngram_tokens),
    (ch5.check_cut_at_stop, cut_at_stop),
    (ch6.check_beam_score, beam_score),
    (ch6.check_beam_step, beam_step),
    (ch6.check_beam_search_by_hand, beam_search_by_hand),
    (ch7.check_greedy_with_cache, greedy_with_cache),
    (ch7.check_kv_cache_bytes, kv_cache_bytes),
    (ch7.check_causal_mask_with_cache, causal_mask_with_cache),
    (ch8.check_verify_greedy, verify_greedy),
    (ch8.check_accept_probability, accept_probability),
    (ch8.check_residual_distribution, residual_distribution),
]


def wrong(function, **mistake):
    return lambda *args: function(*args, **mistake)


# (checker, a typical wrong answer, text its message must contain)
WRONG = {
    "penalty divides negative logits": (
        ch5.check_apply_repetition_penalty, wrong(apply_repetition_penalty, negatives="divide"),
        "negative logit is multiplied by the penalty"),
    "penalty once per occurrence": (
        ch5.check_apply_repetition_penalty, wrong(apply_repetition_penalty, once=False),
        "penalised once, not three times"),
    "n-gram prefix of n tokens": (
        ch5.check_banned_ngram_tokens, lambda ids, n: banned_ngram_tokens(ids, n + 1, prefix_length=n),
        "the prefix is the last n - 1 = 2 tokens"),
    "n-gram loop misses the last one": (
        ch5.check_banned_ngram_tokens, wrong(banned_ngram_tokens, last_ngram=False),
        "the n-gram that ends at the last token counts too"),
    "first stop string in list order": (
        ch5.check_cut_at_stop, wrong(cut_at_stop, earliest=False), "the stop string that comes first in the text"),
    "text keeps the stop string": (
        ch5.check_cut_at_stop, wrong(cut_at_stop, keep_stop=True), "the text ends just before the stop string"),
    "beam score without length penalty": (
        ch6.check_beam_score, wrong(beam_score, penalty=False), "length_penalty 1: divide by the number of NEW"),
    "beam score counts the prompt": (
        ch6.check_beam_score, wrong(beam_score, count_prompt=True), "the prompt does not count"),
    "beam score multiplies": (
        ch6.check_beam_score, lambda s, length, prompt, lp: s * (length - prompt) ** lp, "expected: -2.0"),
    "beam step without running scores": (
        ch6.check_beam_step, wrong(beam_step, add_running=False), "only beam 0 is live"),
    "beam step keeps each beam's best": (
        ch6.check_beam_step, best_token_per_beam, "only beam 0 is live"),
    "beam step returns flat indices": (
        ch6.check_beam_step, lambda b, lp, n: (*beam_step(b, lp, n)[:2], (b[:, None] + lp).flatten().topk(n)[1]),
        "the token is the position within its beam's row"),
    "beam search with every beam live at first": (
        ch6.check_beam_search_by_hand, wrong(beam_search_by_hand, all_live=True), "three beams on a short prompt"),
    "beam search that forgets the parents": (
        ch6.check_beam_search_by_hand, wrong(beam_search_by_hand, follow_parents=False), "wrong value at position"),
    "cache that forgets positions": (
        ch7.check_greedy_with_cache, wrong(greedy_with_cache, positions="zero"), "not at 0"),
    "whole sequence fed into a filled cache": (
        ch7.check_greedy_with_cache, wrong(greedy_with_cache, positions="refeed"), "not the whole sequence again"),
    "cache bytes without keys and values": (
        ch7.check_kv_cache_bytes, wrong(kv_cache_bytes, keys_and_values=1), "2 (keys AND values)"),
    "cache bytes always float32": (
        ch7.check_kv_cache_bytes, wrong(kv_cache_bytes, bytes_per_number=4), "bfloat16 takes 2 bytes"),
    "cache bytes as a float": (
        ch7.check_kv_cache_bytes, lambda *args: float(kv_cache_bytes(*args)), "expected an int, got a float"),
    "mask ignores the cached positions": (
        ch7.check_causal_mask_with_cache, wrong(causal_mask_with_cache, offset=False), "sees all 6 keys"),
    "verify without the bonus token": (
        ch8.check_verify_greedy, wrong(verify_greedy, bonus=False), "plus the target's next token as a bonus"),
    "verify keeps drafts after a miss": (
        ch8.check_verify_greedy, wrong(verify_greedy, prefix=False), "the first miss ends the round"),
    "accept with q / p": (
        ch8.check_accept_probability, lambda p_x, q_x: min(1.0, q_x / p_x), "probability p/q = 0.4"),
    "accept without the cap at 1": (
        ch8.check_accept_probability, lambda p_x, q_x: p_x / q_x, "the target likes x more than the draft: probability 1, not 2"),
    "residual without the clamp": (
        ch8.check_residual_distribution, wrong(residual_distribution, clamp=False), "the negative entry becomes 0"),
    "residual not renormalised": (
        ch8.check_residual_distribution, wrong(residual_distribution, normalise=False), "divided by its sum"),
}
