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
# # Chapter 4 — Top-p (nucleus) sampling
#
# Top-k keeps a fixed number of tokens, whether the model is sure or not. **Top-p** keeps the smallest
# set of most likely tokens whose probabilities add up to at least p: few tokens when the model is
# confident, many when it is unsure (Holtzman et al., 2020).

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.logits import min_p_filter, top_p_filter
from minigpt.viz import save_figure

torch.manual_seed(123)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: sort, accumulate, cut

# %%
vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])
probs = torch.softmax(logits, dim=-1)
sorted_probs, order = torch.sort(probs, descending=True)
cumulative = torch.cumsum(sorted_probs, dim=0)
for i, (p, c) in enumerate(zip(sorted_probs.tolist(), cumulative.tolist())):
    print(f"{vocab[order[i]]:8} p={p:.3f}  cumulative={c:.3f}")

# %% [markdown]
# Keep tokens until the running total reaches p. The token that *crosses* the threshold is kept too:
# without it the kept mass would be below p.

# %%
def top_p_by_hand(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=0)
    # a token is dropped when the tokens *before* it already reach p
    drop_sorted = (cumulative - sorted_probs) >= p
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


for p in (0.5, 0.9, 0.99):
    kept = [vocab[i] for i in torch.nonzero(top_p_by_hand(logits, p) > float("-inf")).flatten()]
    print(f"p = {p}: keeps {kept}")

# %%
kept = int(((cumulative - sorted_probs) < 0.9).sum())  # the nucleus: tokens kept at p = 0.9
assert kept == 2 and cumulative[kept - 1] >= 0.9 > cumulative[kept - 2]
x = torch.arange(1, 10)
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.axvspan(0.5, kept + 0.5, color="tab:green", alpha=0.12, label=f"nucleus: {kept} tokens kept")
ax.bar(x, sorted_probs, color=["tab:green"] * kept + ["lightgray"] * (9 - kept), label="probability of the token")
ax.step(x, cumulative, where="mid", color="tab:blue", marker="o", label="cumulative probability")
ax.axhline(0.9, color="tab:red", ls="--", label="threshold p = 0.9")
ax.set_ylim(0, 1.05)
ax.set_xticks(x, [vocab[i] for i in order], rotation=45, ha="right")
ax.set_xlabel("tokens, most likely first")
ax.set_ylabel("probability")
ax.set_title("Top-p keeps tokens until the running total reaches p")
ax.legend(loc="center right")
fig.tight_layout()
save_figure(fig, "04_top_p_cumulative")
plt.show()
print("cumulative:", [round(c, 3) for c in cumulative.tolist()])
print("nucleus at p = 0.9:", [vocab[i] for i in order[:kept]])

# %% [markdown]
# ## Step 2: the nucleus grows and shrinks with the model's confidence
#
# Along a real generation, count how many tokens top-p = 0.9 keeps at each step.

# %%
model = minigpt.load_model("shakespeare")
out = minigpt.generate(model, "ROMEO:", max_new_tokens=40, do_sample=True, top_p=0.9, seed=1,
                       return_distributions=True)
sizes = [int((d[0] > 0).sum()) for d in out.distributions]
assert max(sizes) >= 100 * min(sizes)  # a few tokens when the model is sure, hundreds or more when not

# %%
# NBVAL_IGNORE_OUTPUT
# why: at a flat step the nucleus ends among tokens of probability ~1e-5, where another CPU's arithmetic
# (the 5th decimal, chapter 9) can count one token more or less; the assert above checks what they show
print("nucleus size per step:", sizes)
print(f"smallest nucleus {min(sizes)}, largest {max(sizes)}")

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.bar(range(len(sizes)), sizes)
ax.set_yscale("log")
ax.set_xlabel("generation step")
ax.set_ylabel("tokens kept (log scale)")
ax.set_title("Top-p = 0.9: the nucleus is small when the model is sure")
fig.tight_layout()
save_figure(fig, "04_nucleus_size")
plt.show()

# %% [markdown]
# ## Step 3: min-p beside it
#
# **Min-p** keeps every token whose probability is at least `min_p` × the top token's probability.
# It also adapts to confidence, with a simpler rule.
#
# The two rules keep different sets (kept in colour, removed in grey). On the peaked distribution
# (T = 1) top-p stops at 2 tokens while min-p keeps "closer" too; flattened (T = 2, chapter 2) top-p
# needs 4 tokens to reach 0.9 while min-p's bar (a tenth of the top token) keeps 3.

# %%
def min_p_by_hand(logits, min_p):
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(), float("-inf"))


rules = {"top-p 0.9": lambda l: top_p_by_hand(l, 0.9), "min-p 0.1": lambda l: min_p_by_hand(l, 0.1)}
fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharey="row")
for row, T in enumerate((1.0, 2.0)):
    scaled = logits / T
    p_T = torch.softmax(scaled, dim=-1)
    by_p = torch.argsort(p_T, descending=True)  # most likely first
    for col, (name, rule) in enumerate(rules.items()):
        keep = rule(scaled) > float("-inf")
        print(f"T = {T}, {name}: keeps {[vocab[i] for i in by_p if keep[i]]}")
        ax = axes[row, col]
        ax.bar(range(9), p_T[by_p], color=["tab:blue" if keep[i] else "lightgray" for i in by_p])
        ax.set_xticks(range(9), [vocab[i] for i in by_p], rotation=45, ha="right")
        ax.set_title(f"T = {T:g}, {name}: keeps {int(keep.sum())} of 9")
        if col == 0:
            ax.set_ylabel("probability")
        else:  # min-p's bar: a tenth of the top token's probability
            ax.axhline(0.1 * p_T.max(), color="tab:red", ls="--", lw=1)
    if row == 0:
        assert [int((r(scaled) > float("-inf")).sum()) for r in rules.values()] == [2, 3]
    else:
        assert [int((r(scaled) > float("-inf")).sum()) for r in rules.values()] == [4, 3]
axes[0, 0].legend(handles=[plt.Rectangle((0, 0), 1, 1, color="tab:blue"), plt.Rectangle((0, 0), 1, 1, color="lightgray"),
                           plt.Line2D([], [], color="tab:red", ls="--", lw=1)],
                  labels=["kept", "removed", "min-p's bar: 0.1 x top probability"], loc="upper right")
fig.suptitle("Top-p vs min-p: peaked (top row) and flatter (bottom row) distributions")
fig.tight_layout()
save_figure(fig, "04_top_p_min_p")
plt.show()

# %% [markdown]
# ## The library's version

# %%
for p in (0.3, 0.5, 0.9, 0.99):
    assert torch.equal(top_p_filter(logits.unsqueeze(0), p)[0], top_p_by_hand(logits, p))
for m in (0.01, 0.1, 0.5):
    assert torch.equal(min_p_filter(logits.unsqueeze(0), m)[0], min_p_by_hand(logits, m))
print("hand-built top-p and min-p == minigpt.logits")

# %% [markdown]
# ## Sources
#
# - **The nine-word vocabulary and its logits** after *"every effort moves you"*: Raschka, S. (2024). *Build a Large
#   Language Model (From Scratch)*. Manning, chapter 5. (As in chapter 2.)
# - **Top-p (nucleus) sampling**: Holtzman, A., Buys, J., Du, L., Forbes, M., & Choi, Y. (2020). *The Curious Case of
#   Neural Text Degeneration*. ICLR 2020. arXiv:1904.09751.
# - **Min-p sampling** (Step 3): Nguyen, M. N., Baker, A., Neo, C., Roush, A., Kirsch, A., & Shwartz-Ziv, R. (2024).
#   *Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs*. arXiv:2407.01082 (ICLR 2025).
