"""Every token a chapter prints from a deterministic decode must be the same on every CPU.

The same forward pass differs by about 1e-5 between AVX-512, AVX2, Apple silicon and torch's portable
kernels. A greedy step whose top two scores are closer than that picks a different token on the next
machine, and everything printed after it changes. So every printed decode must win each of its decisions
by at least ``MIN_MARGIN`` (1e-3), a hundred times the noise. ``DECODES`` lists them, one row per decode
(notebook, prompt, method, settings); the margins are recomputed here from the shipped models as they are
now, so a retrained model is checked as soon as it is shipped. Where a margin is too thin, the chapter
picks another prompt (and the row here follows it).

What "margin" means, per method (scores are logits for greedy, summed log-probs for beam search):

- ``greedy``: at each step, the chosen token's processed logit (after repetition penalty or n-gram ban)
  minus the best other token's. Negative would mean the recomputed argmax is not the token the library chose.
- ``top_n``: a printed ranking of the n most likely next tokens: the gap between each rank and the next,
  down to the (n+1)-th token (which must stay out of the list).
- ``beam``: at each step every (beam, token) pair is a candidate, scored by its beam's summed log-prob plus
  the token's. The beams that go on are the ``num_beams`` best candidates that do not end: the margin is
  the last one kept minus the first one left out. Where a candidate ends (EOS, or the last step), whether
  it may finish depends on its rank against ``num_beams``: the margin is the gap across that rank, where
  a swap would change the pool of finished hypotheses (after the last step: its printed part). Where a
  finished hypothesis pushes another out of the full pool, the gap between them (length-penalised), and
  the early-stop test (the best running beam against the worst finished one) counts too. At the end, the
  ranking of the finished sequences: each printed one against the next, down to the runner-up of the last
  printed one. Diverse beams (``num_beam_groups``): the same per group, after the diversity penalty.
- ``contrastive``: the score (1 - alpha) p - alpha max-cosine of the chosen candidate minus the best other
  candidate's; and, for which tokens are candidates at all, the gap between the k-th and (k+1)-th logits:
  in full when the chosen token is the k-th (it could drop out), else the larger of that gap and the chosen
  token's score lead over the (k+1)-th (which would have to come in and win).
- ``speculative`` (greedy): the target's greedy margins along the output, and the draft's at every guess
  the target compared: top-2 gap where the guess was accepted, (guess - the target's token) where rejected.
- ``sample_and_rank``: the best sample's mean log-prob minus the runner-up's (the samples are seeded).

Each recomputation is also checked against the library's own output (same tokens, same counts), so the
margins belong to the decode the notebook prints.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch

import minigpt
from minigpt.logits import process_logits
from minigpt.tokenizer import decode, encode

MIN_MARGIN = 1e-3
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FULL_STOP = encode(".")[0]  # chapter 6 ends hypotheses at a full stop

ROMEO_I = "ROMEO:\nI"  # chapters 7 and 8
HAMLET_O = "HAMLET:\nO"  # chapter 6
CH5_PROMPTS = ["HAMLET:\nTo be, or not to be", "FALSTAFF:\nI", "JULIET:\nO Romeo"]
CH11_PROMPTS = [  # cut from the held-out plays by chapter 11 (its Step 2)
    "SIR ANDREW.\nFaith, so they say; but I think", "CLOWN.\nWell-a-day,--that you were, sir",
    "JULIA.\nA true-devoted pilgrim is not weary\n", "HERMIONE.\nWas not my lord the verier wag o",
    "PAULINA.\nI say she's dead: I'll swear't.", "AUTOLYCUS.\nIf I had a mind to be honest, I",
]

# Every deterministic decode whose tokens a chapter prints (or asserts equal to another computation).
# A longer greedy decode covers a shorter one of the same prompt: it is listed where it is printed.
DECODES = [
    # notebook, prompt, method, settings
    ("00_tokens_and_logits", "ROMEO:\nBut soft, what light through yonder window", "top_n", dict(n=10)),  # + greedy
    ("01_greedy", "ROMEO:", "greedy", dict(max_new_tokens=80)),  # also 05 (40, and 80 cut by a stop), 09 (60)
    ("02_temperature", "ROMEO:", "greedy", dict(max_new_tokens=60)),  # step 7: the flat and peaked steps' contexts
    ("03_top_k", "JULIET:\n", "greedy", dict(max_new_tokens=30)),  # top_k=1 sampling is greedy
    ("03_top_k", "ROMEO:", "greedy", dict(max_new_tokens=60)),  # step 7: the same two steps as 02
    ("04_top_p", "ROMEO:", "greedy", dict(max_new_tokens=60)),  # steps 3 and 4: the same text as 02
    ("05_controlling_the_loop", "ROMEO:", "greedy", dict(max_new_tokens=40, repetition_penalty=1.3)),
    ("05_controlling_the_loop", "ROMEO:", "greedy", dict(max_new_tokens=40, no_repeat_ngram_size=3)),
    *[("05_controlling_the_loop", p, "greedy", dict(max_new_tokens=10)) for p in CH5_PROMPTS],  # steps 4, 5
    ("06_beam_search", HAMLET_O, "beam", dict(num_beams=3, max_new_tokens=12, num_return_sequences=3)),
    *[("06_beam_search", f"{HAMLET_O}, {w}", "top_n", dict(n=4))  # step 2: each beam's 4 best extensions
      for w in ("I", "my", "that")],
    *[("06_beam_search", "JULIET:\nO Romeo", "beam",
       dict(num_beams=4, max_new_tokens=20, eos_token_id=FULL_STOP, length_penalty=lp)) for lp in (0.0, 1.0, 2.0)],
    ("06_beam_search", HAMLET_O, "beam", dict(num_beams=4, max_new_tokens=40)),
    ("06_beam_search", HAMLET_O, "beam", dict(num_beams=4, max_new_tokens=40, no_repeat_ngram_size=2)),
    *[("06_beam_search", p, "beam", dict(num_beams=4, max_new_tokens=40, **extra))  # step 4's spread
      for p in ("QUEEN:", "JULIET:\nO Romeo", "KING:") for extra in ({}, dict(no_repeat_ngram_size=2))],
    ("06_beam_search", HAMLET_O, "beam", dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                                             max_new_tokens=15, num_return_sequences=4)),
    ("06_beam_search", HAMLET_O, "contrastive", dict(penalty_alpha=0.6, top_k=4, max_new_tokens=30)),
    ("06_beam_search", HAMLET_O, "sample_and_rank", dict(num_samples=5, max_new_tokens=15, seed=0)),
    ("07_kv_cache", ROMEO_I, "greedy", dict(max_new_tokens=100)),
    ("07_kv_cache", "KING:", "greedy", dict(max_new_tokens=20)),
    ("08_speculative_decoding", ROMEO_I, "speculative", dict(k=4, max_new_tokens=30, by_hand=True)),
    *[("08_speculative_decoding", ROMEO_I, "speculative", dict(k=k, max_new_tokens=n))
      for k, n in ((4, 30), *((k, 60) for k in range(1, 9)))],  # steps 3, 4 (and 5: α is k = 1's rate)
    ("08_speculative_decoding",  # step 10: prompt lookup gives the greedy tokens
     "FIRST WITCH.\nDouble, double toil and trouble;\n\nSECOND WITCH.\nDouble, double toil and trouble;\n\nTHIRD WITCH.\n",
     "greedy", dict(max_new_tokens=40)),
    *[("11_which_method_when", p, method, dict(max_new_tokens=40, **extra))  # step 3: measured, one printed
      for p in CH11_PROMPTS for method, extra in (("greedy", {}), ("beam", dict(num_beams=4)),
                                                  ("contrastive", dict(penalty_alpha=0.6, top_k=4)))],
]


@functools.cache
def shipped(name: str) -> minigpt.GPT:
    return minigpt.load_model(name)


def row_id(row) -> str:
    notebook, prompt, method, settings = row
    return f"{notebook[:2]}-{method}-{prompt[:12]!r}-" + ",".join(f"{k}={v}" for k, v in settings.items())


@pytest.mark.parametrize("row", DECODES, ids=row_id)
def test_printed_decodes_win_every_step_by_a_margin(row):
    notebook, prompt, method, settings = row
    assert json.dumps(prompt) in (NOTEBOOKS / f"{notebook}.py").read_text(), (
        f"{notebook} no longer has the prompt {prompt!r}: update DECODES in this file"
    )
    margins = METHODS[method](prompt, **settings)  # [(where, margin)]
    assert margins, "nothing was measured"
    thin = [f"  {where}: margin {m:.2e}" for where, m in margins if not m >= MIN_MARGIN]
    assert not thin, (
        f"{notebook}: {method} decode of {prompt!r} with {settings} wins by less than {MIN_MARGIN} "
        f"(another CPU may choose differently; pick another prompt in the chapter):\n" + "\n".join(thin)
    )


# ---- greedy ----


def next_logits(model, rows: list[list[int]]) -> torch.Tensor:
    """(R, V) fp32 logits after each of the equally long ``rows``."""
    with torch.no_grad():
        return model(torch.tensor(rows), last_only=True)[:, -1].float()


def path_margins(model, ids: list[int], start: int, processed=lambda scores, prefix: scores):
    """Margin of each token ids[start:] as the argmax of the (processed) logits after its prefix, from one pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0].float()  # (T, V); position t predicts token t + 1
    out = []
    for t in range(start, len(ids)):
        scores = processed(logits[t - 1 : t], torch.tensor([ids[:t]]))[0]
        chosen = scores[ids[t]].item()
        others = scores.clone()
        others[ids[t]] = -math.inf
        out.append((t - start, chosen - others.max().item()))
    return out


def greedy(prompt, *, max_new_tokens, repetition_penalty=None, no_repeat_ngram_size=None):
    model = shipped("shakespeare")
    out = minigpt.generate(model, prompt, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                           no_repeat_ngram_size=no_repeat_ngram_size)
    prompt_len = len(encode(prompt))

    def processed(scores, prefix):
        return process_logits(scores, prefix, new_tokens=prefix.size(1) - prompt_len, do_sample=False,
                              repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)

    return [(f"step {s} ({decode([out.new_tokens[0][s]])!r})", m)
            for s, m in path_margins(model, out.ids[0].tolist(), prompt_len, processed)]


def top_n(prompt, *, n):
    scores = next_logits(shipped("shakespeare"), [encode(prompt)])[0].topk(n + 1).values.tolist()
    return [(f"rank {i + 1} vs {i + 2}", scores[i] - scores[i + 1]) for i in range(n)]


# ---- beam search ----


def beam(prompt, *, num_beams, max_new_tokens, num_return_sequences=1, eos_token_id=None, length_penalty=1.0,
         no_repeat_ngram_size=None, num_beam_groups=1, diversity_penalty=0.0):
    """transformers' beam search (as minigpt.search implements it), recomputed step by step with margins."""
    model = shipped("shakespeare")
    settings = dict(num_beams=num_beams, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                    eos_token_id=eos_token_id, length_penalty=length_penalty,
                    no_repeat_ngram_size=no_repeat_ngram_size, num_beam_groups=num_beam_groups,
                    diversity_penalty=diversity_penalty)
    search = beam_by_groups if num_beam_groups > 1 else beam_by_hand
    finished, margins = search(model, encode(prompt), **settings)
    finished.sort(key=lambda h: h[0], reverse=True)
    shown = finished[: num_return_sequences + 1]  # the printed ones and the runner-up of the last
    margins += [(f"final ranking {i + 1} vs {i + 2}", a[0] - b[0]) for i, (a, b) in enumerate(zip(shown, shown[1:]))]
    library = minigpt.beam_search(model, prompt, **settings)
    assert library.new_tokens == [h[1] for h in finished[:num_return_sequences]], "recomputation != library"
    return margins


def beam_log_probs(model, beams, prompt_len, no_repeat_ngram_size):
    logp = torch.log_softmax(next_logits(model, beams), dim=-1)
    return process_logits(logp, torch.tensor(beams), new_tokens=len(beams[0]) - prompt_len, do_sample=False,
                          no_repeat_ngram_size=no_repeat_ngram_size)


def beam_by_hand(model, ids, *, num_beams, max_new_tokens, num_return_sequences, eos_token_id, length_penalty,
                 no_repeat_ngram_size, **_):
    nb, eos = num_beams, {eos_token_id} if eos_token_id is not None else set()
    beams, running = [ids] * nb, torch.tensor([0.0] + [-1e9] * (nb - 1))  # only beam 0 is live at first
    pool, margins, improvable = [], [], True  # pool: finished (score / length ** lp, new tokens)
    for step in range(max_new_tokens):
        logp = beam_log_probs(model, beams, len(ids), no_repeat_ngram_size)
        V, last = logp.size(1), step == max_new_tokens - 1
        values, flat = (logp + running[:, None]).flatten().topk(3 * nb + 1)  # ≥ nb + 1 that do not end
        ranked = [(v, beams[i // V] + [i % V], i % V in eos or last) for v, i in zip(values.tolist(), flat.tolist())]
        going = [c for c in ranked if not c[2]]
        if not last:
            margins.append((f"step {step}: last beam kept vs first dropped", going[nb - 1][0] - going[nb][0]))
        if improvable:
            pool += [(v / (step + 1) ** length_penalty, seq[len(ids):]) for v, seq, ends in ranked[:nb] if ends]
            pool.sort(key=lambda h: h[0], reverse=True)
            matter = num_return_sequences if last else nb  # after the last step only the printed ones matter
            if len(pool) > nb:
                if matter == nb:
                    margins.append((f"step {step}: finished pool, kept vs pushed out", pool[nb - 1][0] - pool[nb][0]))
                del pool[nb:]
            # an ending candidate on either side of rank num_beams: swapping the two changes what matters in the
            # pool if the one inside is there, or if the one outside would get there
            inside, outside = ranked[nb - 1], ranked[nb]
            stays = inside[2] and any(seq == inside[1][len(ids):] for _, seq in pool[:matter])
            outside_score = outside[0] / (step + 1) ** length_penalty
            would_enter = outside[2] and (len(pool) < matter or outside_score > pool[matter - 1][0])
            if stays or would_enter:
                margins.append((f"step {step}: may finish (rank {nb} vs {nb + 1})", inside[0] - outside[0]))
        beams, running = [seq for _, seq, _ in going[:nb]], torch.tensor([v for v, _, _ in going[:nb]])
        if len(pool) == nb and not last:  # transformers' early stop: can the best running beam still win?
            gap = running[0].item() / (step + 1) ** length_penalty - pool[-1][0]
            margins.append((f"step {step}: stopping test", abs(gap)))
            improvable = improvable and gap > 0
        if not improvable:
            break
    return pool, margins


def beam_by_groups(model, ids, *, num_beams, max_new_tokens, eos_token_id, length_penalty, no_repeat_ngram_size,
                   num_beam_groups, diversity_penalty, **_):
    if eos_token_id is not None:
        raise NotImplementedError("diverse beams with an EOS: add the finishing rules here first")
    size = num_beams // num_beam_groups
    beams, running = [ids] * num_beams, torch.full((num_beams,), -1e9)
    running[::size] = 0.0  # one live beam per group at first
    margins = []
    for step in range(max_new_tokens):
        logp = torch.log_softmax(next_logits(model, beams), dim=-1)
        V, chosen, new_beams, new_running = logp.size(1), [], [], []
        for g in range(num_beam_groups):
            rows = slice(g * size, (g + 1) * size)
            group = logp[rows].clone()
            for token in chosen:  # Hamming diversity: once per earlier-group beam that chose the token
                group[:, token] -= diversity_penalty
            group = process_logits(group, torch.tensor(beams[rows]), new_tokens=step, do_sample=False,
                                   no_repeat_ngram_size=no_repeat_ngram_size)
            values, flat = (group + running[rows, None]).flatten().topk(size + 1)
            margins.append((f"step {step}, group {g}: last beam kept vs first dropped", (values[-2] - values[-1]).item()))
            for v, i in zip(values[:size].tolist(), flat[:size].tolist()):
                new_beams.append(beams[rows][i // V] + [i % V])
                new_running.append(v)
                chosen.append(i % V)
        beams, running = new_beams, torch.tensor(new_running)
    pool = [(r / max_new_tokens**length_penalty, b[len(ids):]) for r, b in zip(running.tolist(), beams)]
    return pool, margins


# ---- contrastive search ----


def contrastive(prompt, *, penalty_alpha, top_k, max_new_tokens):
    model = shipped("shakespeare")
    ids, margins, alpha, k = encode(prompt), [], penalty_alpha, top_k
    for step in range(max_new_tokens):
        logits, hidden = logits_and_hidden(model, [ids])  # hidden (1, T, C): the context
        probs = torch.softmax(logits[0, -1], dim=-1)
        top_probs, candidates = probs.topk(k + 1)  # the k candidates and the first token left out
        _, cand_hidden = logits_and_hidden(model, [ids + [c] for c in candidates.tolist()])
        context = torch.nn.functional.normalize(hidden[0], dim=-1)  # (T, C)
        similarity = (torch.nn.functional.normalize(cand_hidden[:, -1], dim=-1) @ context.T).amax(dim=-1)
        score = ((1 - alpha) * top_probs - alpha * similarity).tolist()  # (k + 1,)
        best = max(range(k), key=lambda i: score[i])
        where = f"step {step} ({decode([candidates[best].item()])!r})"
        margins.append((where, score[best] - max(score[i] for i in range(k) if i != best)))
        logit = logits[0, -1, candidates].tolist()
        if best == k - 1:  # the chosen token is the last candidate: could it drop out?
            margins.append((f"{where}: k-th vs (k+1)-th logit", logit[k - 1] - logit[k]))
        else:  # could the first token left out come in and win?
            margins.append((f"{where}: (k+1)-th token", max(logit[k - 1] - logit[k], score[best] - score[k])))
        ids = ids + [candidates[best].item()]
    library = minigpt.contrastive_search(model, prompt, penalty_alpha=alpha, top_k=k, max_new_tokens=max_new_tokens)
    assert library.ids[0].tolist() == ids, "recomputation != library"
    return margins


def logits_and_hidden(model, rows):
    """Logits (R, T, V) and the last hidden states (R, T, C) (the output of ln_f) of equally long rows."""
    caught = []
    hook = model.transformer.ln_f.register_forward_hook(lambda module, inputs, output: caught.append(output))
    try:
        with torch.no_grad():
            logits = model(torch.tensor(rows))
    finally:
        hook.remove()
    return logits.float(), caught[0].float()


# ---- speculative decoding (greedy) ----


def speculative(prompt, *, k, max_new_tokens, by_hand=False):
    """Target margins along its greedy output; draft margins at the guesses the target compared.

    ``by_hand``: chapter 8's own loop, which always drafts k tokens (and may run past max_new_tokens);
    otherwise the library's, which drafts at most what is left minus one.
    """
    target, draft = shipped("shakespeare"), shipped("shakespeare-draft")
    prompt_ids, N = encode(prompt), max_new_tokens
    path = minigpt.generate(target, prompt, max_new_tokens=N + k + 1).ids[0].tolist()  # room to run past N
    P = len(prompt_ids)
    with torch.no_grad():
        guess_logits = draft(torch.tensor([path]))[0, P - 1 : -1].float()  # (N + k + 1, V): guess for new token i
    margins, pos, proposed, accepted, passes = [], 0, 0, 0, 0
    while pos < N:
        m = k if by_hand else min(k, N - pos - 1)
        n = 0
        while n < m:
            scores, wanted = guess_logits[pos + n], path[P + pos + n]
            guess = scores.argmax().item()
            if guess == wanted:
                runner_up = scores.topk(2).values[1].item()
                margins.append((f"draft guess for token {pos + n} (accepted)", scores[guess].item() - runner_up))
                n += 1
            else:
                margins.append((f"draft guess for token {pos + n} (rejected)", (scores[guess] - scores[wanted]).item()))
                break
        proposed, accepted, passes, pos = proposed + m, accepted + n, passes + 1, pos + n + 1
    margins += [(f"target token {s}", m) for s, m in path_margins(target, path[: P + pos], P)]
    if not by_hand:
        library = minigpt.speculative_generate(target, draft, prompt, k=k, max_new_tokens=N)
        assert library.ids[0].tolist() == path[: P + N], "the library's tokens are not the target's greedy ones"
        assert (library.num_proposed, library.num_accepted, library.num_target_passes) == (proposed, accepted, passes)
    return margins


# ---- sample-and-rank: the samples are seeded; only the ranking is a decision ----


def sample_and_rank(prompt, **settings):
    scores = minigpt.sample_and_rank(shipped("shakespeare"), prompt, **settings).scores.tolist()
    return [("best sample vs runner-up (mean log-prob)", scores[0] - scores[1])]


METHODS = dict(greedy=greedy, top_n=top_n, beam=beam, contrastive=contrastive, speculative=speculative,
               sample_and_rank=sample_and_rank)


if __name__ == "__main__":  # python tests/test_notebook_margins.py: every decode's thinnest step
    torch.set_num_threads(1)
    for row in DECODES:
        where, margin = min(METHODS[row[2]](row[1], **row[3]), key=lambda wm: wm[1])
        print(f"{'ok  ' if margin >= MIN_MARGIN else 'THIN'} {margin:9.2e}  {row_id(row)}  at {where}")
