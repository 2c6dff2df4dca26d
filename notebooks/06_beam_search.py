# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.search import beam_search, contrastive_search, sample_and_rank
from minigpt.tokenizer import decode, encode
from minigpt.viz import save_figure

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
    colour = {final[0]: "tab:green", final[1]: "tab:red"}
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
                style = dict(color=best[0], lw=2.5)
            elif expanded:  # proposed, then pruned
                style = dict(color="gray", lw=1, ls="--")
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
    handles = [plt.Line2D([], [], color="tab:green", lw=2.5),
               plt.Line2D([], [], color="tab:red", lw=2.5),
               plt.Line2D([], [], color="gray", lw=1, ls="--"),
               plt.Line2D([], [], color="gainsboro", lw=1, ls=":")]
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


text = "HAMLET:\nO"  # a prompt whose beams win every step clearly (tests/test_notebook_margins.py)
prompt = torch.tensor([encode(text)])
seqs, scores = beam_search_by_hand(model, prompt, num_beams=3, steps=12)
for s, sc in zip(seqs, scores):
    print(f"{sc:6.1f}  {decode(s.tolist())!r}")  # 3 significant digits: the CPU moves the 4th decimal

# %% [markdown]
# ## Step 3: length penalty
#
# Every token adds a negative log-probability, so longer hypotheses score lower. When sequences can end
# (at end-of-text), beam search divides the score by `length ** length_penalty`: 0 ranks by total
# log-probability (favouring short), 1 by average per token, 2 favours longer ones.

# %%
def sum_logprob(model, prompt, tokens):
    """Σ log p of ``tokens`` after ``prompt`` (a string), from one pass over both."""
    ids = torch.tensor([encode(prompt) + tokens])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0, :-1], dim=-1)  # (T - 1, V): position t predicts token t + 1
    return logp[-len(tokens) :].gather(1, ids[0, -len(tokens) :, None]).sum().item()


eos = encode(".")[0]  # let a full stop end a hypothesis, so lengths differ
for lp in (0.0, 1.0, 2.0):
    out = beam_search(model, "JULIET:\nO Romeo", num_beams=4, max_new_tokens=20, eos_token_id=eos,
                      length_penalty=lp)
    n = len(out.new_tokens[0])
    print(f"length_penalty {lp}: {n:2} tokens, score {out.scores[0]:.3g}: {out.texts[0]!r}")
    assert abs(out.scores[0] - sum_logprob(model, "JULIET:\nO Romeo", out.new_tokens[0]) / n**lp) < 1e-4

# %% [markdown]
# ## Step 4: n-gram blocking, and why beams are bland
#
# Beam search maximises probability, and the most probable text is repetitive and generic. Blocking
# repeated n-grams helps; sampling (chapters 2–4) gives more varied text.

# %%
def distinct_ratio(tokens):
    return len(set(tokens)) / len(tokens)


beams = beam_search(model, text, num_beams=4, max_new_tokens=40)
blocked = beam_search(model, text, num_beams=4, max_new_tokens=40, no_repeat_ngram_size=2)
sampled = minigpt.generate(model, text, max_new_tokens=40, do_sample=True, top_p=0.9, seed=3)
rows = {"beam search": beams.new_tokens[0], "beam + no-repeat 2-gram": blocked.new_tokens[0],
        "top-p 0.9 sample": sampled.new_tokens[0]}
for name, toks in rows.items():
    print(f"{name:24} distinct {distinct_ratio(toks):.2f}: {decode(toks)!r}")

# %% [markdown]
# One text per method says little. Over four prompts (and two seeds per prompt for sampling) the spread
# shows: plain beams can collapse into a loop ("KING:" repeats one line over and over), blocking 2-grams
# lifts every prompt, and sampling is usually most varied, though an unlucky seed can repeat too.

# %%
prompts = [text, "QUEEN:", "JULIET:\nO Romeo", "KING:"]
ratios = {name: [] for name in rows}
for prompt_text in prompts:
    ratios["beam search"].append(distinct_ratio(beam_search(model, prompt_text, num_beams=4, max_new_tokens=40).new_tokens[0]))
    ratios["beam + no-repeat 2-gram"].append(distinct_ratio(
        beam_search(model, prompt_text, num_beams=4, max_new_tokens=40, no_repeat_ngram_size=2).new_tokens[0]))
    for seed in (0, 1):
        ratios["top-p 0.9 sample"].append(distinct_ratio(
            minigpt.generate(model, prompt_text, max_new_tokens=40, do_sample=True, top_p=0.9, seed=seed).new_tokens[0]))
for name, r in ratios.items():
    print(f"{name:24} mean {sum(r) / len(r):.2f}, range {min(r):.2f}-{max(r):.2f}: {[round(x, 2) for x in r]}")
means = [sum(r) / len(r) for r in ratios.values()]
assert means[0] < means[1] and means[0] < means[2]  # plain beams repeat the most

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for i, (name, r) in enumerate(ratios.items()):
    ax.bar(i, sum(r) / len(r), color="tab:blue", alpha=0.35, label="mean" if i == 0 else None)
    jitter = torch.linspace(-0.15, 0.15, len(r)).tolist()
    ax.scatter([i + j for j in jitter], r, color="tab:blue", zorder=3, label="one text" if i == 0 else None)
ax.set_xticks(range(len(ratios)), list(ratios))
ax.set_ylim(0, 1)
ax.set_ylabel("distinct tokens / tokens")
ax.set_title(f"Beam search text repeats itself; sampling varies\n({len(prompts)} prompts; 2 seeds each for sampling)")
ax.legend(loc="upper left")
fig.tight_layout()
save_figure(fig, "06_distinct_ratio")
plt.show()

# %% [markdown]
# ## Step 5: the family
#
# - **Diverse beam search** (Vijayakumar et al., 2016) splits the beams into groups and penalises a group
#   for choosing tokens earlier groups chose at the same step.
# - **Sample-and-rank** (Adiwardana et al., 2020) draws N samples and keeps the one with the best average
#   log-probability per token.
# - **Contrastive search** (Su et al., 2022) picks among the top-k tokens the one that is likely *and*
#   least similar to what was already said.

# %%
diverse = beam_search(model, text, num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                      max_new_tokens=15, num_return_sequences=4)
for t, s in zip(diverse.texts, diverse.scores):
    print(f"diverse   {s:6.3g} {t!r}")  # the later group's scores include the diversity penalty
ranked = sample_and_rank(model, text, num_samples=5, max_new_tokens=15, seed=0)
print(f"sample-and-rank best {ranked.scores[0]:.3g}: {ranked.texts[0]!r}")
assert abs(ranked.scores[0] - sum_logprob(model, text, ranked.new_tokens[0]) / 15) < 1e-4  # mean log p
contrast = contrastive_search(model, text, penalty_alpha=0.6, top_k=4, max_new_tokens=30)
print(f"contrastive: {contrast.text!r}")

# %% [markdown]
# ## The library's version
#
# Without end-of-text every hypothesis has the same length, so `beam_search` ranks exactly by total
# log-probability, like our loop.

# %%
library = beam_search(model, prompt, num_beams=3, max_new_tokens=12, num_return_sequences=3)
assert library.sequences.tolist() == seqs.tolist()
torch.testing.assert_close(library.scores, scores / 12, atol=1e-4, rtol=0)
assert ranked.scores.tolist() == sorted(ranked.scores.tolist(), reverse=True)
print("hand-built beam search == minigpt.search.beam_search")

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
