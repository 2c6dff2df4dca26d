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
from minigpt.viz import plot_distributions, save_figure

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
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.step(range(1, 10), cumulative.tolist(), where="mid", label="cumulative probability")
ax.axhline(0.9, color="tab:red", ls="--", label="p = 0.9")
ax.set_xticks(range(1, 10), [vocab[i] for i in order], rotation=45, ha="right")
ax.set_xlabel("tokens, most likely first")
ax.set_ylabel("cumulative probability")
ax.set_title("Top-p keeps tokens until the running total reaches p")
ax.legend()
fig.tight_layout()
save_figure(fig, "04_top_p_cumulative")
plt.show()
print("cumulative:", [round(c, 3) for c in cumulative.tolist()])

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

# %%
def min_p_by_hand(logits, min_p):
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(), float("-inf"))


dists = {
    "full": probs,
    "top-p 0.9": torch.softmax(top_p_by_hand(logits, 0.9), dim=-1),
    "min-p 0.1": torch.softmax(min_p_by_hand(logits, 0.1), dim=-1),
}
for name, d in dists.items():
    print(f"{name:10}", [round(x, 3) for x in d.tolist()])
fig = plot_distributions(dists, vocab, title="Truncation: top-p and min-p")
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
