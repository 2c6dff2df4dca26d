# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 6 — Beam search
#
# Greedy keeps one candidate and can miss a better sentence (chapter 1). **Beam search** keeps the
# `num_beams` best partial sentences at every step, scored by their total log-probability, and only at
# the end picks the best. Then: length penalty, n-gram blocking, why beams are bland, and three relatives —
# diverse beams, sample-and-rank and contrastive search.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
text = "HAMLET:\nO"  # the prompt of Steps 2, 4 and 5
seed = 3  # the top-p sample of Step 4

# %%
# %matplotlib inline
import functools
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

import minigpt
from minigpt.metrics import separated, spread
from minigpt.search import beam_search, contrastive_search, degeneration_penalty, hamming_diversity, sample_and_rank
from minigpt.tokenizer import decode, encode
from minigpt.viz import KEPT, OKABE_ITO, save_figure

default_run = (text, seed) == ("HAMLET:\nO", 3)
torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: by hand, on the toy tree
#
# With two beams, "dog" (0.4) survives the first step next to "nice" (0.5), and in the second step
# "The dog has" (0.36) beats "The nice woman" (0.20).

# %%
tree = {
    "nice": (0.5, {"woman": (0.4, {}), "house": (0.3, {}), "guy": (0.3, {})}),
    "dog": (0.4, {"has": (0.9, {}), "and": (0.05, {}), "runs": (0.05, {})}),
    "car": (0.1, {"is": (0.3, {}), "drives": (0.5, {}), "turns": (0.2, {})}),
}


def toy_beam_search(tree, num_beams):
    beams = [([], 0.0, tree)]  # (words so far, sum of log-probs, subtree)
    while any(sub for _, _, sub in beams):
        candidates = [(words + [w], score + math.log(p), children)
                      for words, score, sub in beams for w, (p, children) in sub.items()]
        beams = sorted(candidates, key=lambda c: c[1], reverse=True)[:num_beams]  # keep the best few
        print("  kept:", [(" ".join(w), round(math.exp(s), 2)) for w, s, _ in beams])
    return beams[0][0], math.exp(beams[0][1])


for k in (1, 2):
    print(f"num_beams = {k}")
    words, p = toy_beam_search(tree, k)
    print(f"  best: The {' '.join(words)} (p = {p:.2f})")

# %%
def draw_beam_tree(tree, num_beams, ax):
    """The toy tree with every step of beam search: kept beams in colour, pruned candidates greyed."""
    kept_at, beams = [], [((), 1.0, tree)]
    while any(sub for _, _, sub in beams):  # the same search as above, remembering who survived
        cands = [(path + (w,), q * p, ch) for path, q, sub in beams for w, (p, ch) in sub.items()]
        beams = sorted(cands, key=lambda c: c[1], reverse=True)[:num_beams]
        kept_at.append({path for path, _, _ in beams})
    final = [path for path, _, _ in beams]  # best first
    # the best beam and the runner-up (greedy's pick) differ in line style as well as colour, styled as in
    # minigpt.viz.plot_token_tree (chapter 1's greedy path: vermillion, solid)
    colour = {final[0]: (OKABE_ITO["bluish green"], "--"), final[1]: (OKABE_ITO["vermillion"], "-")}
    ys = {}

    def place(sub, path, leaves=iter(range(100))):  # leaves top to bottom, parents centred on children
        kids = [place(ch, path + (w,)) for w, (_, ch) in sub.items()]
        ys[path] = sum(kids) / len(kids) if kids else -next(leaves)
        return ys[path]

    place(tree, ())

    def edges(sub, path):
        for w, (p, ch) in sub.items():
            child = path + (w,)
            step = len(child) - 1
            expanded = path == () or path in kept_at[step - 1]  # was the parent still a beam?
            best = [c for f, c in colour.items() if f[: len(child)] == child]
            if best:  # on a final beam's path
                style = dict(color=best[0][0], ls=best[0][1], lw=3)
            elif expanded:  # proposed, then pruned
                style = dict(color="gray", lw=1, ls="-.")
            else:  # its parent was pruned: never scored
                style = dict(color="gainsboro", lw=1, ls=":")
            ax.plot([step, step + 1], [ys[path], ys[child]], zorder=1, **style)
            ax.text(step + 0.5, (ys[path] + ys[child]) / 2, f"{p:.2f}", ha="center", va="bottom", fontsize=8,
                    color="black" if expanded else "silver")
            ax.text(step + 1, ys[child], w, ha="center", va="center", zorder=2, color="black" if expanded else "silver",
                    bbox=dict(boxstyle="round", fc="white", ec="gray" if expanded else "gainsboro"))
            edges(ch, child)

    edges(tree, ())
    ax.text(0, ys[()], "The", ha="center", va="center", zorder=2, bbox=dict(boxstyle="round", fc="white", ec="gray"))
    handles = [plt.Line2D([], [], color=c, ls=ls, lw=3) for c, ls in colour.values()]
    handles += [plt.Line2D([], [], color="gray", lw=1, ls="-."), plt.Line2D([], [], color="gainsboro", lw=1, ls=":")]
    ax.legend(handles, [f"best beam: The {' '.join(final[0])} ({beams[0][1]:.2f})",
                        f"2nd beam: The {' '.join(final[1])} ({beams[1][1]:.2f}), greedy's pick (ch. 1)",
                        "proposed, then pruned", "never expanded (its beam was pruned)"],
              loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8)
    ax.set_xlabel("decoding step")
    ax.set_yticks([])
    ax.set_xticks(range(len(kept_at) + 1))
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    return kept_at


fig, ax = plt.subplots(figsize=(8, 5))
kept_at = draw_beam_tree(tree, 2, ax)
assert kept_at == [{("nice",), ("dog",)}, {("dog", "has"), ("nice", "woman")}]
ax.set_title("Two beams find 'The dog has' (0.36); 'car' is pruned at step 1")
fig.tight_layout()
save_figure(fig, "06_beam_tree")
plt.show()

# %% [markdown]
# ## Step 2: by hand, on the model
#
# The same loop on real logits: every beam proposes every token; we keep the `num_beams` best
# (beam, token) pairs by total log-probability. At the first step all beams are the same prompt, so only
# one of them may propose (else we would keep the same token three times).

# %%
model = minigpt.load_model("shakespeare")


def beam_search_by_hand(model, prompt_ids, num_beams, steps):
    seqs = prompt_ids.repeat(num_beams, 1)  # (beams, T)
    scores = torch.tensor([0.0] + [-1e9] * (num_beams - 1))  # only beam 0 is live at first
    for _ in range(steps):
        with torch.no_grad():
            logp = torch.log_softmax(model(seqs)[:, -1], dim=-1)  # (beams, V)
        total = (scores[:, None] + logp).flatten()  # (beams * V,)
        scores, flat = torch.topk(total, num_beams)
        parent, token = flat // logp.size(1), flat % logp.size(1)
        seqs = torch.cat([seqs[parent], token[:, None]], dim=1)  # each new beam extends its parent
    return seqs, scores


# the default prompt's beams win every step clearly (tests/test_notebook_margins.py)
prompt = torch.tensor([encode(text)])
seqs, scores = beam_search_by_hand(model, prompt, num_beams=3, steps=12)
for s, sc in zip(seqs, scores):
    print(f"{sc:6.1f}  {decode(s.tolist())!r}")  # 3 significant digits: the CPU moves the 4th decimal

# %% [markdown]
# ### Inside one step
#
# Stop the loop after two tokens and look at the third decoding step. Every beam proposes every token, and a
# candidate's score is its beam's score plus the token's log-prob, $S(\text{beam}) + \log p(y \mid \text{beam})$.
# The 3 best of all 3 × 50,257 candidates go on, whichever beam proposed them: a beam can keep several
# children, and a beam with none in the top 3 dies. The cell says which. (Each beam's 4 best extensions are
# shown; a beam's 4th can never make the top 3.)

# %%
def sum_logprob(model, prompt, tokens):
    """Σ log p of ``tokens`` after ``prompt`` (a string), from one pass over both: an independent check."""
    ids = torch.tensor([encode(prompt) + tokens])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0, :-1], dim=-1)  # (T - 1, V): position t predicts token t + 1
    return logp[-len(tokens) :].gather(1, ids[0, -len(tokens) :, None]).sum().item()


before, before_scores = beam_search_by_hand(model, prompt, num_beams=3, steps=2)  # the beams entering step 3
beam_texts = [decode(b.tolist()) for b in before]
if default_run:
    assert beam_texts == ["HAMLET:\nO, I", "HAMLET:\nO, my", "HAMLET:\nO, that"]  # their rankings: margins test
with torch.no_grad():
    logp = torch.log_softmax(model(before)[:, -1], dim=-1)  # (beams, V)
total = before_scores[:, None] + logp  # (beams, V): the score of every (beam, token) candidate
shown_scores, shown_tokens = total.topk(4, dim=1)  # each beam's 4 best extensions, best first
kept_flat = total.flatten().topk(3).indices  # the 3 best of all beams × V candidates
kept = [(i // logp.size(1), i % logp.size(1)) for i in kept_flat.tolist()]  # (beam, token), best first
for b, beam_text in enumerate(beam_texts):
    print(f"beam {b}: {beam_text[len(text):]!r} (score {before_scores[b]:.3g})")
    for score, token in zip(shown_scores[b].tolist(), shown_tokens[b].tolist()):
        mark = f"  kept, rank {kept.index((b, token)) + 1}" if (b, token) in kept else ""
        print(f"    + {decode([token])!r:9} {score:#.3g}{mark}")
        new = before[b, prompt.size(1) :].tolist() + [token]
        assert abs(score - sum_logprob(model, text, new)) < 1e-4  # beam score + log p == Σ log p of the text
if default_run:
    assert [decode([t]) for _, t in kept] == [" lord", " am", "'ll"] and [b for b, _ in kept] == [1, 0, 0]
after, after_scores = beam_search_by_hand(model, prompt, num_beams=3, steps=3)  # the loop agrees
assert after.tolist() == [before[b].tolist() + [t] for b, t in kept]
everything = sorted(shown_scores.flatten().tolist() + before_scores.tolist())
if default_run:
    assert min(hi - lo for lo, hi in zip(everything, everything[1:])) > 1e-3  # no printed order is a near tie
children = [sum(b == parent for parent, _ in kept) for b in range(len(beam_texts))]
for b, beam_text in enumerate(beam_texts):
    print(f"{beam_text[len(text):]!r} keeps {children[b]} {'child' if children[b] == 1 else 'children'}"
          f"{': it dies' if children[b] == 0 else ''}")

# %%
fig, ax = plt.subplots(figsize=(8, 5.5))
cutoff = (total.flatten().topk(4).values[2:].sum() / 2).item()  # halfway between the 3rd and the 4th best
rows = 0
for b, beam_text in enumerate(beam_texts):
    start = before_scores[b].item()
    ys = [-(rows + 1 + j) for j in range(4)]
    ax.plot(start, -(rows + 2.5), "D", color="black", zorder=3)
    ax.text(start + 0.12, -(rows + 2.5), f"beam {b}: {beam_text[len(text):]!r}\n(score {start:.3g})", fontsize=9,
            va="center")
    for y, score, token in zip(ys, shown_scores[b].tolist(), shown_tokens[b].tolist()):
        on = (b, token) in kept
        colour = KEPT if on else "darkgray"
        ax.plot([start, score], [-(rows + 2.5), y], color=colour, lw=2.5 if on else 1, ls="-" if on else ":", zorder=1)
        ax.plot(score, y, "o" if on else "x", color=colour, zorder=2)
        ax.text(score - 0.08, y, f"{decode([token])!r} {score:#.3g}", ha="right", va="center", fontsize=9,
                color="black" if on else "gray")
    rows += 5.5
ax.axvline(cutoff, color=OKABE_ITO["vermillion"], ls="--", lw=1.5)
ax.legend([plt.Line2D([], [], color="black", marker="D", ls=""),
           plt.Line2D([], [], color=KEPT, marker="o", lw=2.5),
           plt.Line2D([], [], color="darkgray", marker="x", lw=1, ls=":"),
           plt.Line2D([], [], color=OKABE_ITO["vermillion"], ls="--", lw=1.5)],
          ["a beam and its score after 2 tokens", "candidate kept (one of the 3 best overall)",
           "candidate dropped", "cutoff (between the 3rd and 4th best)"],
          loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
lowest, highest = shown_scores.min().item(), before_scores.max().item()
ax.set_xlim(lowest - 1.2, highest + 1.3)  # room for the labels left of the candidates and right of the beams
ax.set_yticks([])
ax.set_xlabel("score = Σ log p of the prompt's continuation (higher is better)")
dead = [repr(t[len(text):]) for t, n in zip(beam_texts, children) if n == 0]
ax.set_title(f"The 3rd decoding step of beam search with 3 beams after {text!r}:\n"
             "the 3 best candidates go on, whichever beam proposed them"
             + (f"; {', '.join(dead)} dies" if dead else ""))
fig.tight_layout()
save_figure(fig, "06_beam_candidates")
plt.show()

# %% [markdown]
# ## Step 3: length penalty
#
# Every token adds a negative log-probability, so longer hypotheses score lower. When sequences can end
# (at end-of-text), beam search divides the score by `length ** length_penalty`: 0 ranks by total
# log-probability (favouring short), 1 by average per token, 2 favours longer ones.

# %%
eos = encode(".")[0]  # let a full stop end a hypothesis, so lengths differ
lengths = {}
for lp in (0.0, 1.0, 2.0):
    out = beam_search(model, "JULIET:\nO Romeo", num_beams=4, max_new_tokens=20, eos_token_id=eos,
                      length_penalty=lp)
    n = lengths[lp] = len(out.new_tokens[0])
    print(f"length_penalty {lp}: {n:2} tokens, score {out.scores[0]:.3g}: {out.texts[0]!r}")
    assert abs(out.scores[0] - sum_logprob(model, "JULIET:\nO Romeo", out.new_tokens[0]) / n**lp) < 1e-4
assert lengths[0.0] < min(lengths[1.0], lengths[2.0])  # the total favours short, the others longer

# %% [markdown]
# ## Step 4: n-gram blocking, and why beams are bland
#
# Beam search maximises probability, and the most probable text is repetitive and generic. Blocking
# repeated n-grams helps; sampling (chapters 2–4) gives more varied text.

# %%
def distinct_ratio(tokens):
    return len(set(tokens)) / len(tokens)


@functools.cache  # the spread below decodes this prompt again
def beam_tokens(prompt_text, no_repeat_ngram_size=None):
    out = beam_search(model, prompt_text, num_beams=4, max_new_tokens=40, no_repeat_ngram_size=no_repeat_ngram_size)
    return out.new_tokens[0]


sampled = minigpt.generate(model, text, max_new_tokens=40, do_sample=True, top_p=0.9, seed=seed)
rows = {"beam search": beam_tokens(text), "beam + no-repeat 2-gram": beam_tokens(text, no_repeat_ngram_size=2),
        "top-p 0.9 sample": sampled.new_tokens[0]}
for name, toks in rows.items():
    print(f"{name:24} distinct {distinct_ratio(toks):.2f}: {decode(toks)!r}")
if default_run:  # the sentence above, for this prompt
    assert distinct_ratio(rows["beam search"]) < distinct_ratio(rows["beam + no-repeat 2-gram"]) < distinct_ratio(
        rows["top-p 0.9 sample"])

# %% [markdown]
# One text per method says little. Over four prompts (and two seeds per prompt for sampling) the spread
# shows: plain beams can collapse into a loop (the lowest ratio below is "KING:", which repeats one line over
# and over), blocking 2-grams lifts every prompt, and most samples are more varied still, though an unlucky
# seed can repeat too. The cell below says which means are told apart by their spread, and which tie.

# %%
prompts = [text, "QUEEN:", "JULIET:\nO Romeo", "KING:"]
ratios = {name: [] for name in rows}
for prompt_text in prompts:
    ratios["beam search"].append(distinct_ratio(beam_tokens(prompt_text)))
    ratios["beam + no-repeat 2-gram"].append(distinct_ratio(beam_tokens(prompt_text, no_repeat_ngram_size=2)))
    for sample_seed in (0, 1):
        sample = minigpt.generate(model, prompt_text, max_new_tokens=40, do_sample=True, top_p=0.9, seed=sample_seed)
        ratios["top-p 0.9 sample"].append(distinct_ratio(sample.new_tokens[0]))
spreads = {name: spread(r) for name, r in ratios.items()}
for name, r in ratios.items():
    print(f"{name:24} mean {spreads[name].mean:.2f} ± {spreads[name].stderr:.2f}, range {min(r):.2f}-{max(r):.2f}: "
          f"{[round(x, 2) for x in r]}")
names = list(ratios)
for i, a in enumerate(names):
    for b in names[i + 1 :]:
        verdict = "told apart" if separated(spreads[a], spreads[b]) else "tie here (the intervals overlap)"
        print(f"{a} vs {b}: {verdict}")
beam, blocked, sampled_r = ratios.values()
above = sum(r > max(blocked) for r in sampled_r)
print(f"{above} of {len(sampled_r)} samples are more varied than every blocked-beam text")
if default_run:  # the sentences above
    assert min(beam) == beam[prompts.index("KING:")]  # "KING:" loops
    assert all(b2 > b for b, b2 in zip(beam, blocked))  # blocking lifts every prompt
    assert separated(spreads[names[0]], spreads[names[1]]) and separated(spreads[names[0]], spreads[names[2]])
    assert not separated(spreads[names[1]], spreads[names[2]])  # blocked beams and sampling tie
    assert above > len(sampled_r) / 2 and min(sampled_r) < min(blocked)  # most samples vary more; one repeats

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for i, (name, r) in enumerate(ratios.items()):
    ax.bar(i, spreads[name].mean, color=KEPT, alpha=0.35, label="mean" if i == 0 else None)
    ax.errorbar(i, spreads[name].mean, yerr=2 * spreads[name].stderr, color="black", capsize=6, lw=1.5,
                label="mean ± 2 standard errors" if i == 0 else None)
    jitter = torch.linspace(-0.15, 0.15, len(r)).tolist()
    ax.scatter([i + j for j in jitter], r, color=KEPT, zorder=3, label="one text" if i == 0 else None)
ax.set_xticks(range(len(ratios)), list(ratios))
ax.set_ylim(0, 1)
ax.set_ylabel("distinct tokens / tokens")
ax.set_title(f"Plain beam search repeats itself; blocked beams and sampling vary more\n"
             f"({len(prompts)} prompts; 2 seeds each for sampling)")
ax.legend(loc="upper left")
fig.tight_layout()
save_figure(fig, "06_distinct_ratio")
plt.show()

# %% [markdown]
# ## Step 5: the family
#
# Three relatives of beam search, each written as a formula, built by hand on the model, and checked
# against `minigpt.search`.
#
# ### Diverse beam search
#
# Vijayakumar et al. split the `num_beams` beams into $G$ groups that take turns at every step. Group
# $g$ runs ordinary beam search within itself, but scores the extension of a beam by token $y$ as
#
# $$\text{score}_g(y) = S(\text{beam}) + \log p(y \mid \text{beam}) - \lambda \cdot
#   \#\{\text{beams of groups } 1, \dots, g-1 \text{ that chose } y \text{ at this step}\},$$
#
# the Hamming diversity penalty with strength $\lambda$ (`diversity_penalty`). The penalised score is what
# the beam carries on, so a later group's final scores include its penalties. At the first step each
# group has one live beam, as in Step 2.

# %%
def diverse_beam_search_by_hand(model, prompt_ids, num_beams, num_groups, penalty, steps):
    size = num_beams // num_groups  # beams per group
    seqs = prompt_ids.repeat(num_beams, 1)
    scores = torch.full((num_beams,), -1e9)
    scores[::size] = 0.0  # one live beam per group at first
    for _ in range(steps):
        with torch.no_grad():
            logp = torch.log_softmax(model(seqs)[:, -1], dim=-1)  # (beams, V)
        chosen, new_seqs, new_scores = [], [], []  # tokens the groups chose at this step, in turn
        for g in range(num_groups):
            rows = slice(g * size, (g + 1) * size)
            penalised = logp[rows].clone()
            for token in chosen:  # once for every earlier-group beam that chose it
                penalised[:, token] -= penalty
            top, flat = torch.topk((scores[rows, None] + penalised).flatten(), size)  # beam search in the group
            parent, token = flat // logp.size(1), flat % logp.size(1)
            new_seqs.append(torch.cat([seqs[rows][parent], token[:, None]], dim=1))
            new_scores.append(top)
            chosen += token.tolist()
        seqs, scores = torch.cat(new_seqs), torch.cat(new_scores)
    return seqs, scores


seqs_d, scores_d = diverse_beam_search_by_hand(model, prompt, num_beams=4, num_groups=2, penalty=1.0, steps=15)
diverse = beam_search(model, text, num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                      max_new_tokens=15, num_return_sequences=4)
by_score = scores_d.argsort(descending=True)  # the library returns all groups' beams, best first
assert diverse.ids.tolist() == seqs_d[by_score].tolist()
torch.testing.assert_close(diverse.scores, scores_d[by_score] / 15, atol=1e-4, rtol=0)  # mean per token
for t, s in zip(diverse.texts, diverse.scores):
    print(f"diverse {s:#6.3g} {t!r}")
print("hand-built diverse beam search == minigpt.search.beam_search(num_beam_groups=2, diversity_penalty=1.0)")

# %% [markdown]
# The penalty at work, at the second decoding step: group 0 (beams 0 and 1) chooses its two tokens first.
# Group 1 (beams 2 and 3) scores the same candidates, less 1.0 for each token group 0 chose. Where do those
# candidates fall in group 1's ranking?

# %%
before_d, before_d_scores = diverse_beam_search_by_hand(model, prompt, 4, 2, 1.0, steps=1)
after_d, _ = diverse_beam_search_by_hand(model, prompt, 4, 2, 1.0, steps=2)
earlier = after_d[:2, -1]  # what group 0 chose at this step
if default_run:
    assert [decode([t]) for t in earlier.tolist()] == [" I", " my"]
with torch.no_grad():
    logp = torch.log_softmax(model(before_d[2:])[:, -1], dim=-1)  # group 1's two beams, (2, V)
penalised = hamming_diversity(logp[None], earlier[None], 1.0)[0]  # the library's penalty
by_hand = logp.clone()
by_hand[:, earlier] -= 1.0  # each of the two tokens was chosen once
assert torch.equal(penalised, by_hand)
plain = (before_d_scores[2:, None] + logp).flatten()
with_penalty = (before_d_scores[2:, None] + penalised).flatten()
V = logp.size(1)
kept_d = with_penalty.topk(2).indices.tolist()
assert after_d[2:].tolist() == [before_d[2 + i // V].tolist() + [i % V] for i in kept_d]  # the loop agrees
def rank(scores, i):
    if default_run:  # no other candidate within 1e-3: the printed rank is the same on every CPU
        assert ((scores - scores[i]).abs() > 1e-3).sum() == scores.numel() - 1
    return 1 + int((scores > scores[i]).sum())  # 1 = best of all of group 1's candidates


def ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


print("group 1's candidate   score  rank   chosen by group 0   penalised score  rank")
for i in plain.topk(5).indices.tolist():
    beam, token = i // V, i % V
    mark = "  kept" if i in kept_d else ""
    candidate = decode(before_d[2 + beam, prompt.size(1) :].tolist() + [token])
    print(f"  {candidate!r:16} {plain[i]:#6.3g}  {rank(plain, i):>4}"
          f"   {int((earlier == token).sum()):>9} ×         {with_penalty[i]:#6.3g}  {rank(with_penalty, i):>4}{mark}")
if default_run:
    assert plain.topk(6).values.diff().abs().min() > 1e-3  # the printed order is no near tie
    assert with_penalty.topk(3).values.diff().abs().min() > 1e-3  # nor is the choice
# group 1's best candidate with each token group 0 chose: where it ranked before and after the penalty
moves = []
for token in dict.fromkeys(earlier.tolist()):
    best = max((b * V + token for b in range(2)), key=lambda i: plain[i].item())
    moves.append((decode([token]), ordinal(rank(plain, best)), ordinal(rank(with_penalty, best)), best in kept_d))
display(Markdown(
    "Group 0 chose " + " and ".join(f'"{t}"' for t, *_ in moves) + ". In group 1's ranking, "
    + "; ".join(f'"{t}" falls from {a} to {b}' + (" and is still kept" if k else "") for t, a, b, k in moves)
    + ". " + ("A penalised token can still be kept: the penalty is a price, not a ban."
              if any(k for *_, k in moves) else "Here the penalty pushes every one of them out.")))

# %% [markdown]
# ### Sample-and-rank
#
# Adiwardana et al. draw $N$ samples $y^{(1)}, \dots, y^{(N)}$ by plain sampling and keep the one the
# model finds most likely. `sample_and_rank` ranks by the mean log-probability per token,
#
# $$\hat y = \arg\max_i \frac{1}{|y^{(i)}|} \sum_{t=1}^{|y^{(i)}|} \log p\big(y^{(i)}_t \mid x, y^{(i)}_{<t}\big),$$
#
# so that a sample is not favoured just for being shorter. By hand: draw the same 5 samples (same seed) with
# `generate`, score each with one pass over its text, sort.

# %%
samples = minigpt.generate(model, text, max_new_tokens=15, do_sample=True, num_return_sequences=5, seed=0)
means = [sum_logprob(model, text, toks) / len(toks) for toks in samples.new_tokens]
best = max(range(5), key=lambda i: means[i])
for i, (toks, m) in enumerate(zip(samples.new_tokens, means)):
    print(f"sample {i}: mean log p {m:#.3g}{'  <- best' if i == best else '         '} {decode(toks)!r}")
ranked = sample_and_rank(model, text, num_samples=5, max_new_tokens=15, seed=0)
order = sorted(range(5), key=lambda i: means[i], reverse=True)
assert ranked.new_tokens == [samples.new_tokens[i] for i in order]
torch.testing.assert_close(ranked.scores, torch.tensor([means[i] for i in order]), atol=1e-4, rtol=0)
print(f"sample-and-rank picks sample {best} == minigpt.search.sample_and_rank: {ranked.texts[0]!r}")

# %% [markdown]
# ### Contrastive search
#
# Su et al. pick, among the $k$ most likely tokens $V^{(k)}$, the one that is likely *and* least like
# anything already said:
#
# $$x_t = \arg\max_{v \in V^{(k)}} \Big[(1 - \alpha)\, p(v \mid x_{<t}) - \alpha \max_{j < t} \cos(h_v, h_{x_j})\Big],$$
#
# where $h$ is the model's last hidden state (the output of `ln_f`, what the head reads): $h_v$ that of
# the candidate $v$ appended to the text, $h_{x_j}$ that of every earlier token, prompt included. The
# second term, the degeneration penalty, is large when the candidate would make the model "say again"
# something it already said. With $\alpha = 0$ only $p$ counts: that is greedy decoding.

# %%
def hidden_states(model, rows):
    """The last hidden states (R, T, C) of equally long rows, caught on their way out of ln_f."""
    caught = []
    hook = model.transformer.ln_f.register_forward_hook(lambda module, inputs, output: caught.append(output))
    with torch.no_grad():
        logits = model(torch.tensor(rows))
    hook.remove()
    return logits, caught[0]


def contrastive_step_by_hand(model, ids, alpha, k):
    logits, context = hidden_states(model, [ids])  # context (1, T, C): every token so far
    p, candidates = torch.softmax(logits[0, -1], dim=-1).topk(k)  # the k most likely tokens
    _, h = hidden_states(model, [ids + [c] for c in candidates.tolist()])  # each candidate appended
    h_v = h[:, -1]  # (k, C): each candidate's own hidden state
    cos = torch.nn.functional.normalize(h_v, dim=-1) @ torch.nn.functional.normalize(context[0], dim=-1).T
    max_cos = cos.amax(dim=-1)  # (k,): its closest earlier token
    assert torch.allclose(max_cos, degeneration_penalty(context, h_v[None], torch.ones(1, len(ids)))[0], atol=1e-5)
    score = (1 - alpha) * p - alpha * max_cos
    return candidates, p, max_cos, score


alpha, ids = 0.6, encode(text)
departures = []  # (p of the pick / p of the most likely, the text so far) where the search passes the latter by
for _ in range(30):
    candidates, p, max_cos, score = contrastive_step_by_hand(model, ids, alpha, k=4)
    if score.argmax() != 0:  # the top candidate by p is candidates[0]: greedy's pick
        departures.append(((p[score.argmax()] / p[0]).item(), decode(ids)))
    ids = ids + [candidates[score.argmax()].item()]
contrast = contrastive_search(model, text, penalty_alpha=alpha, top_k=4, max_new_tokens=30)
assert contrast.ids[0].tolist() == ids
no_penalty = contrastive_search(model, text, penalty_alpha=0.0, top_k=4, max_new_tokens=10)
assert torch.equal(no_penalty.ids, minigpt.generate(model, text, max_new_tokens=10).ids)  # α = 0 is greedy
print(f"contrastive: {contrast.text!r}")
print("hand-built contrastive search == minigpt.search.contrastive_search")

# %% [markdown]
# One step in numbers: of the steps where contrastive search passes over the most likely token (greedy's
# pick), take the closest call, where its pick is nearly as likely. After "…I am a man that would make" the
# most likely token is " a", but its hidden state is almost that of the earlier " a": saying it would echo
# "a man". " thee" is nearly as likely and much less like anything said, so it wins.

# %%
# the closest call: the pick most nearly as likely as the token passed over (the first step if none was)
step_text = max(departures)[1] if departures else text
print(f"{len(departures)} of 30 steps pass over the most likely token; the closest call comes after {step_text!r}")
candidates, p, max_cos, score = contrastive_step_by_hand(model, encode(step_text), alpha, k=4)
chosen = score.argmax().item()
print(f"{'candidate':10} {'p':>5}   {'max cos':>7}   (1-α)·p - α·max cos")
for i, c in enumerate(candidates.tolist()):
    print(f"{decode([c])!r:10} {p[i]:.3f}   {max_cos[i]:7.3f}   {score[i]:19.3f}{'  <- chosen' if i == chosen else ''}")
assert contrast.text.startswith(step_text + decode([candidates[chosen].item()]))  # the step of the search above
if default_run:
    assert step_text == "HAMLET:\nO, I am a man that would make"
    assert [decode([c]) for c in candidates.tolist()] == [" a", " thee", " me", " him"] and chosen == 1
    assert score.topk(2).values.diff().abs().item() > 1e-3  # the choice is no near tie

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.5))
x = torch.arange(4).tolist()
bars = ax.bar([i - 0.27 for i in x], ((1 - alpha) * p).tolist(), width=0.27, color=OKABE_ITO["blue"],
              label="(1 - α)·p: how likely")
ax.bar_label(bars, [f"p {v:.3f}" for v in p.tolist()], fontsize=8, padding=2)
bars = ax.bar(x, (-alpha * max_cos).tolist(), width=0.27, color=OKABE_ITO["orange"], hatch="//", edgecolor="white",
              label="-α·max cos: how like an earlier token")
ax.bar_label(bars, [f"cos {v:.3f}" for v in max_cos.tolist()], fontsize=8, padding=2)
bars = ax.bar([i + 0.27 for i in x], score.tolist(), width=0.27, color="black", label="score: the sum")
ax.bar_label(bars, [f"{v:.3f}" for v in score.tolist()], fontsize=8, padding=2)
ax.axhline(0, color="gray", lw=0.8)
ax.set_xticks(x, [f"{decode([c])!r}" + ("\nchosen" if i == chosen else "\ngreedy's pick" if i == 0 else "")
                  for i, c in enumerate(candidates.tolist())])
for i, tick in enumerate(ax.get_xticklabels()):
    tick.set_fontweight("bold" if i == chosen else "normal")
ax.set_xlabel("the k = 4 most likely next tokens, most likely first")
ax.set_ylabel("contribution to the score")
ax.set_ylim(min(-alpha * max_cos.max().item(), score.min().item()) - 0.08, (1 - alpha) * p.max().item() + 0.12)
tail = " ".join(step_text.split()[-2:])
pick, top = decode([candidates[chosen].item()]), decode([candidates[0].item()])
ax.set_title(f"Contrastive search after '…{tail}' (α = {alpha}):\n"
             + (f"{pick!r} beats the likelier {top!r}, which is more like an earlier token" if chosen
                else f"the most likely {top!r} wins"))
ax.legend(loc="upper center", ncol=3, fontsize=8)
fig.tight_layout()
save_figure(fig, "06_contrastive_step")
plt.show()

# %% [markdown]
# ## The library's version
#
# Without end-of-text every hypothesis has the same length, so `beam_search` ranks exactly by total
# log-probability, like our loop.

# %%
library = beam_search(model, prompt, num_beams=3, max_new_tokens=12, num_return_sequences=3)
assert library.ids.tolist() == seqs.tolist()
torch.testing.assert_close(library.scores, scores / 12, atol=1e-4, rtol=0)
print("hand-built beam search == minigpt.search.beam_search")

# %% [markdown]
# ## Recap
#
# **What we built.** Beam search by hand, first on the toy tree and then on the model: keep the `num_beams`
# best partial sentences by total log-probability, let every beam propose every token, and pick the best at
# the end. Then its relatives: length penalty, n-gram blocking, diverse beams, sample-and-rank and
# contrastive search. The library's matches are `minigpt.search.beam_search` (with
# `num_beam_groups=...` and `diversity_penalty=...` for diverse beams), `minigpt.search.sample_and_rank` and
# `minigpt.search.contrastive_search`, each of which gave the same output as our hand-built version.
#
# **Check yourself.**
#
# 1. On the toy tree, why do two beams find "The dog has" (0.36) when greedy finds only "The nice woman"
#    (0.20)?
#
# <details><summary>Answer</summary>
#
# With two beams, "dog" ($0.4$) is kept next to "nice" ($0.5$) after the first step instead of being thrown
# away. At the second step "dog has" ($0.4 \times 0.9 = 0.36$) beats "nice woman" ($0.5 \times 0.4 = 0.20$).
#
# </details>
#
# 2. In "Inside one step", the beam `', that'` keeps 0 children while `', I'` keeps 2. How can one beam have
#    two children and another none?
#
# <details><summary>Answer</summary>
#
# All 3 × 50,257 candidates compete together, whichever beam proposed them. The best candidate of
# `', that'` (-6.13) scores below the third one kept (-5.40), so that beam dies, while two of `', I'`'s
# candidates are in the top 3.
#
# </details>
#
# 3. With `length_penalty` 0, beam search picked a 7-token text; with 1 it picked a 20-token one. Why does
#    ranking by total log-probability favour short texts?
#
# <details><summary>Answer</summary>
#
# Every token adds a negative log-probability, so each extra token lowers the total. Dividing by the length
# (`length_penalty` 1) ranks by the average per token instead, which does not punish length.
#
# </details>
#
# 4. Does Step 4 show that top-p sampling is more varied than beam search with 2-gram blocking?
#
# <details><summary>Answer</summary>
#
# Not by the means: their spreads overlap, and the cell calls it a tie. Most single samples were more varied
# (7 of 8), but one unlucky seed repeated itself. What it does show is that plain beams are less varied
# than both.
#
# </details>
#
# 5. In contrastive search, ' thee' (p 0.126) was chosen over the more likely ' a' (p 0.138). Why?
#
# <details><summary>Answer</summary>
#
# The score subtracts a penalty for being like something already said. ' a''s hidden state is very close
# to an earlier ' a' (max cos 0.881, against 0.442 for ' thee'), and that penalty outweighs its small lead
# in probability.
#
# </details>

# %% [markdown]
# ## Sources
#
# - **The toy tree, and two beams finding "The dog has"** (Step 1): von Platen, P. (2020). *How to generate text:
#   using different decoding methods for language generation with Transformers*. Hugging Face blog,
#   <https://huggingface.co/blog/how-to-generate>. (As in chapter 1.)
# - **Why beam text is bland and repetitive** (Step 4): Holtzman, A., Buys, J., Du, L., Forbes, M., & Choi, Y. (2020).
#   *The Curious Case of Neural Text Degeneration*. ICLR 2020. arXiv:1904.09751.
# - **N-gram blocking** (Step 4): Paulus, R., Xiong, C., & Socher, R. (2018). *A Deep Reinforced Model for Abstractive
#   Summarization*. ICLR 2018. arXiv:1705.04304.
# - **Diverse beam search**: Vijayakumar, A. K., Cogswell, M., Selvaraju, R. R., Sun, Q., Lee, S., Crandall, D., &
#   Batra, D. (2016). *Diverse Beam Search: Decoding Diverse Solutions from Neural Sequence Models*. arXiv:1610.02424.
# - **Sample-and-rank** (Meena's decoder): Adiwardana, D., Luong, M.-T., So, D. R., Hall, J., Fiedel, N., Thoppilan,
#   R., Yang, Z., Kulshreshtha, A., Nemade, G., Lu, Y., & Le, Q. V. (2020). *Towards a Human-like Open-Domain
#   Chatbot*. arXiv:2001.09977.
# - **Contrastive search**: Su, Y., Lan, T., Wang, Y., Yogatama, D., Kong, L., & Collier, N. (2022). *A Contrastive
#   Framework for Neural Text Generation*. NeurIPS 2022. arXiv:2202.06417.
