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
# # Chapter 3 — Top-k sampling
#
# Sampling from the full distribution sometimes picks a token from the long, unreliable tail. **Top-k**
# keeps only the k most likely tokens: every other logit becomes −∞, so softmax gives it probability
# exactly 0 and the survivors are renormalised. We build it on the nine-word toy of chapter 2, then watch
# a fixed k on the shipped model's 50,257 tokens, at a step where it is unsure and one where it is sure.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.logits import apply_temperature, top_k_filter
from minigpt.tokenizer import VOCAB_SIZE, decode, encode
from minigpt.viz import plot_kept, plot_truncation, save_figure

torch.manual_seed(123)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: find the k largest logits

# %%
vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])
top_logits, top_pos = torch.topk(logits, 3)
print("top-3 logits:   ", top_logits.tolist())
print("top-3 positions:", top_pos.tolist(), [vocab[i] for i in top_pos])

# %% [markdown]
# ## Step 2: mask everything below the k-th largest with −∞

# %%
def top_k_by_hand(logits, k):
    kth_largest = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth_largest, float("-inf"))  # NEW: the whole trick


masked = top_k_by_hand(logits, 3)
print(masked.tolist())

# %% [markdown]
# ## Step 3: softmax renormalises the survivors
#
# exp(−∞) = 0, so the masked tokens get probability 0 and the three survivors now share all the mass.

# %%
full = torch.softmax(logits, dim=-1)
truncated = torch.softmax(masked, dim=-1)
for w, p, q in zip(vocab, full.tolist(), truncated.tolist()):
    print(f"{w:8} {p:.3f} → {q:.3f}")
print(f"sum of kept probabilities before: {full[top_pos].sum():.3f}, after: {truncated.sum():.3f}")
# renormalising divides the survivors by the mass they had: the exact check behind the rounded print
torch.testing.assert_close(truncated[top_pos], full[top_pos] / full[top_pos].sum(), atol=1e-6, rtol=0)

# %%
fig = plot_truncation(full, truncated, vocab, title="Top-k: keep the 3 most likely tokens, renormalise",
                      after_title="after: top-k = 3, renormalised")
save_figure(fig, "03_top_k")
plt.show()
left, right = fig.axes
kept_color = left.patches[top_pos[0]].get_facecolor()
grey = [w for w, bar in zip(vocab, left.patches) if bar.get_facecolor() != kept_color]
print("grey (removed):", grey)
assert sorted(set(vocab) - set(grey)) == sorted(vocab[i] for i in top_pos)  # coloured: exactly the top 3
assert [bar.get_height() for bar in right.patches[:9]] == truncated.tolist()  # right: the renormalised top 3

# %% [markdown]
# ## Step 4: ties at the boundary
#
# With `logits < kth_largest`, a token *equal* to the k-th largest logit survives, so ties can keep more
# than k tokens. transformers does the same, and so does minigpt.

# %%
tied = torch.tensor([3.0, 2.0, 2.0, 1.0])
print(top_k_by_hand(tied, 2).tolist())

# %% [markdown]
# ## Step 5: top-k together with temperature
#
# Temperature first (it reshapes), then top-k (it truncates). Dividing by T does not change which
# tokens are largest, so the survivors are the same; only their shares change.

# %%
for T in (0.5, 1.0, 2.0):
    probs = torch.softmax(top_k_by_hand(logits / T, 3), dim=-1)
    print(f"T = {T}: " + ", ".join(f"{vocab[i]}={probs[i]:.3f}" for i in top_pos))

# %% [markdown]
# ## Step 6: real text

# %%
model = minigpt.load_model("shakespeare")
for k in (1, 5, 50):
    out = minigpt.generate(model, "JULIET:\n", max_new_tokens=30, do_sample=True, top_k=k, seed=7)
    print(f"--- top_k = {k}\n{out.text}\n")

# %% [markdown]
# ## Step 7: one k for a flat step and a peaked step
#
# As in chapter 2 (Step 7): chapter 1's greedy text from `"ROMEO:"` (60 tokens), the logits of every step
# from one pass over it, and the flattest and the most peaked step, picked by their entropy.

# %%
prompt = "ROMEO:"
text = minigpt.generate(model, prompt, max_new_tokens=60)  # greedy: chapter 1's text
n_prompt = len(encode(prompt))
with torch.no_grad():
    step_logits = model(text.ids)[0, n_prompt - 1 : -1]  # (60, 50257): position t predicts token t + 1
log_p = torch.log_softmax(step_logits.double(), dim=-1)  # float64, for the peaked step (chapter 2, Step 7)
step_H = -(log_p.exp() * log_p).sum(dim=-1)  # each step's entropy, in nats
flat, peaked = int(step_H.argmax()), int(step_H.argmin())
ranked = step_H.sort().values
assert ranked[-1] - ranked[-2] > 0.1 and ranked[1] - ranked[0] > 0.01  # clear winners on any CPU
for name, s in (("flat", flat), ("peaked", peaked)):
    context = decode(text.ids[0, : n_prompt + s].tolist())
    print(f"{name:6} step {s:2}: entropy {step_H[s]:.3g} nats after ...{context[-24:]!r}")
torch.testing.assert_close(step_H[[flat, peaked]].float(), torch.tensor([6.5663, 0.0019547]), rtol=1e-4, atol=0)

# %% [markdown]
# Top-k with k = 10 at both steps, by hand (Step 2). Kept tokens in colour, dropped ones grey; the hatched
# bar is the other 50,237 tokens together. The y axis is logarithmic, so tokens of probability 1e-6 show.

# %%
k = 10
labels = [decode([i]) for i in range(VOCAB_SIZE)]  # every token's text, for the tick labels
probs = torch.softmax(step_logits, dim=-1)
fig, axes = plt.subplots(1, 2, figsize=(14, 5))
for ax, (name, s) in zip(axes, (("flat", flat), ("peaked", peaked))):
    kept = top_k_by_hand(step_logits[s], k) > float("-inf")
    plot_kept(probs[s], labels, kept=kept, log=True, ax=ax,
              title=f"{name} step (entropy {step_H[s]:.3g} nats): top-k = {k}")
fig.suptitle(f"One k for both: at the flat step top-{k} cuts most of the mass away, "
             f"at the peaked step it keeps {k - 1} tokens of almost no mass")
fig.tight_layout()
save_figure(fig, "03_real_top_k")
plt.show()
flat_sorted, peaked_sorted = probs[flat].sort(descending=True).values, probs[peaked].sort(descending=True).values
print(f"flat step:   top-{k} keeps {flat_sorted[:k].sum():.3f} of the mass (top-50: {flat_sorted[:50].sum():.3f}); "
      f"the first token dropped is {flat_sorted[k] / flat_sorted[k - 1]:.3f} x as likely as the last kept")
print(f"peaked step: top-{k} keeps {peaked_sorted[:k].sum():.3f} of the mass; "
      f"the {k - 1} kept after the newline hold {peaked_sorted[1:k].sum():.3g} together")
shown = [flat_sorted[:k].sum(), flat_sorted[:50].sum(), flat_sorted[k] / flat_sorted[k - 1],
         peaked_sorted[:k].sum(), peaked_sorted[1:k].sum()]
torch.testing.assert_close(torch.stack(shown), torch.tensor([0.23545, 0.44616, 0.97589, 0.99993, 5.3897e-05]),
                           rtol=1e-4, atol=0)
for ax, s in zip(axes, (flat, peaked)):  # the legend counts what top_k_by_hand kept
    assert ax.get_legend().get_texts()[0].get_text() == f"kept: {k} tokens, mass {probs[s].topk(k).values.sum():.3f}"

# %% [markdown]
# At the flat step (*"as I am a ..."*, many nouns fit) top-10 throws away 76% of the mass, and it
# draws its line between two tokens that are almost equally likely: the 11th is dropped at 0.976 x the
# 10th's probability. Renormalised, each survivor is multiplied by 1 / 0.235 ≈ 4.2. Even transformers'
# default k = 50 keeps only 45%. At the peaked step (after *"PRINCE."*, a newline) top-10 keeps nine
# tokens besides the newline that hold 5.4e-05 together: noise that k = 1 would have removed. No single k
# fits both steps; top-p (chapter 4) sets the cut by probability mass instead of by count.

# %% [markdown]
# ## The library's version

# %%
for k in (1, 3, 5, 9):
    torch.testing.assert_close(top_k_filter(logits.unsqueeze(0), k)[0], top_k_by_hand(logits, k))
assert torch.equal(top_k_filter(tied.unsqueeze(0), 2)[0], top_k_by_hand(tied, 2))
library = torch.softmax(top_k_filter(apply_temperature(logits.unsqueeze(0), 0.5), 3), dim=-1)[0]
torch.testing.assert_close(library, torch.softmax(top_k_by_hand(logits / 0.5, 3), dim=-1))
real = step_logits[[flat, peaked]]  # Step 7's two steps
assert torch.equal(top_k_filter(real, k), torch.stack([top_k_by_hand(row, k) for row in real]))
print("hand-built top-k == minigpt.logits.top_k_filter")

# %% [markdown]
# ## Try it
#
# Open the decoding explorer on this chapter's example (in Jupyter; run as a plain script, this line makes the
# widget and shows nothing). Top-k starts at 10 at the flat step: move it and watch how much mass the kept bars
# hold, then step on to a peaked step and see what the same k keeps there. Every number in it comes from
# `minigpt.logits.process_logits`, the functions this chapter checked.

# %%
# NBVAL_IGNORE_OUTPUT
# why: a live widget: its output is the id Jupyter gives it, new on every run
minigpt.explore(model, decode(text.ids[0, : n_prompt + flat].tolist()), top_k=10)

# %% [markdown]
# ## Sources
#
# - **The nine-word vocabulary and its logits** after *"every effort moves you"*, and k = 3: Raschka, S. (2024).
#   *Build a Large Language Model (From Scratch)*. Manning, chapter 5. (As in chapter 2.)
# - **Top-k sampling**: Fan, A., Lewis, M., & Dauphin, Y. (2018). *Hierarchical Neural Story Generation*. ACL 2018.
#   arXiv:1805.04833.
