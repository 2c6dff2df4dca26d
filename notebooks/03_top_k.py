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
# exactly 0 and the survivors are renormalised.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.logits import apply_temperature, top_k_filter
from minigpt.viz import plot_truncation, save_figure

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
    out = minigpt.generate(model, "JULIET:", max_new_tokens=30, do_sample=True, top_k=k, seed=7)
    print(f"--- top_k = {k}\n{out.text}\n")

# %% [markdown]
# ## The library's version

# %%
for k in (1, 3, 5, 9):
    torch.testing.assert_close(top_k_filter(logits.unsqueeze(0), k)[0], top_k_by_hand(logits, k))
assert torch.equal(top_k_filter(tied.unsqueeze(0), 2)[0], top_k_by_hand(tied, 2))
library = torch.softmax(top_k_filter(apply_temperature(logits.unsqueeze(0), 0.5), 3), dim=-1)[0]
torch.testing.assert_close(library, torch.softmax(top_k_by_hand(logits / 0.5, 3), dim=-1))
print("hand-built top-k == minigpt.logits.top_k_filter")

# %% [markdown]
# ## Sources
#
# - **The nine-word vocabulary and its logits** after *"every effort moves you"*, and k = 3: Raschka, S. (2024).
#   *Build a Large Language Model (From Scratch)*. Manning, chapter 5. (As in chapter 2.)
# - **Top-k sampling**: Fan, A., Lewis, M., & Dauphin, Y. (2018). *Hierarchical Neural Story Generation*. ACL 2018.
#   arXiv:1805.04833.
