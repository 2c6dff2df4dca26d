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
# # Chapter 9 — Determinism
#
# Is temperature 0 the same as greedy? Does the same prompt always give the same tokens? Mostly — and
# the exceptions come from floating-point arithmetic.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.tokenizer import encode
from minigpt.viz import save_figure

torch.manual_seed(0)
torch.set_num_threads(1)
model = minigpt.load_model("shakespeare")

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: temperature 0 is greedy — by definition
#
# softmax(z / T) puts all its mass on the argmax as T → 0, but dividing by 0 is not defined. minigpt
# (like most libraries) treats `temperature=0` as an explicit switch to greedy decoding.

# %%
greedy = minigpt.generate(model, "ROMEO:", max_new_tokens=30)
zero = minigpt.generate(model, "ROMEO:", max_new_tokens=30, do_sample=True, temperature=0, seed=123)
print(greedy.new_tokens[0] == zero.new_tokens[0])

# %% [markdown]
# ## Step 2: floating-point addition is not associative

# %%
print((1 + 1e-16) - 1e-16 == 1 + (1e-16 - 1e-16))
print(f"{(0.1 + 0.2) + 0.3:.17f}")
print(f"{0.1 + (0.2 + 0.3):.17f}")
x = torch.randn(10_000, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
print("sum forwards minus sum backwards:", (x.sum() - x.flip(0).sum()).item())

# %% [markdown]
# ## Step 3: the batch size changes the low bits of the logits
#
# The same row computed alone or inside a batch goes through differently blocked matrix products, so the
# additions happen in a different order.

# %%
prompt = torch.tensor([encode("ROMEO:\nBut soft, what light")])
with torch.no_grad():
    alone = model(prompt)[0, -1]
    batch = model(prompt.repeat(8, 1))[0, -1]
diff = (alone - batch).abs().max().item()
print(f"largest difference between batch 1 and batch 8: {diff:.2e}  (exactly equal: {diff == 0})")

# %% [markdown]
# ## Step 4: when a near-tie flips the argmax
#
# Such tiny differences matter only when the top two logits are almost equal. Along a greedy generation,
# how close do they come?

# %%
out = minigpt.generate(model, "ROMEO:", max_new_tokens=60, return_distributions=True)
gaps = []
for d in out.distributions:
    top2 = torch.topk(d[0].log(), 2).values
    gaps.append((top2[0] - top2[1]).item())
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.semilogy(gaps, marker="o")
ax.set_xlabel("generation step")
ax.set_ylabel("gap between top-2 logits")
ax.set_title("How close greedy decoding comes to a tie")
fig.tight_layout()
save_figure(fig, "09_top2_gap")
plt.show()
print(f"smallest gap: {min(gaps):.4f} at step {gaps.index(min(gaps))}")

# %% [markdown]
# A gap smaller than the batch-size noise above (about 1e-6) would let the batch size change the token.
# Let us build such a tie on purpose:

# %%
tie = torch.tensor([2.0, 2.0 + 1e-7, 1.0])
print("argmax:", tie.argmax().item(), "| after a 1e-6 nudge to token 0:", (tie + torch.tensor([1e-6, 0, 0])).argmax().item())

# %% [markdown]
# ## The library's version
#
# Same seed, same tokens: minigpt's sampling always draws from a seeded generator.

# %%
a = minigpt.generate(model, "ROMEO:", max_new_tokens=20, do_sample=True, seed=5)
b = minigpt.generate(model, "ROMEO:", max_new_tokens=20, do_sample=True, seed=5)
assert a.new_tokens == b.new_tokens
print("same seed, same tokens:", a.new_tokens[0][:8], "...")
