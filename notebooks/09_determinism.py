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
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: temperature 0 is greedy — by definition
#
# softmax(z / T) puts all its mass on the argmax as T → 0, but dividing by 0 is not defined, so libraries
# must decide what `temperature=0` means. minigpt treats it, even with `do_sample=True`, as an explicit switch
# to greedy decoding (the argmax, no random draw), and so does vLLM (its `SamplingParams`: "Zero means greedy
# sampling"). Hugging Face transformers refuses it: with `do_sample=True` its temperature step raises
# `ValueError` ("`temperature` … has to be a strictly positive float") and points to `do_sample=False`.

# %%
greedy = minigpt.generate(model, "ROMEO:", max_new_tokens=30)
zero = minigpt.generate(model, "ROMEO:", max_new_tokens=30, do_sample=True, temperature=0, seed=123)
print(greedy.new_tokens[0] == zero.new_tokens[0])

# %% [markdown]
# ## Step 2: floating-point addition is not associative
#
# A float keeps about 16 significant digits (float64, Python's) or 7 (float32, the model's): every sum
# is rounded, so the order of the additions changes the result.

# %%
print((1 + 1e-16) - 1e-16 == 1 + (1e-16 - 1e-16))
print(f"{(0.1 + 0.2) + 0.3:.17f}")
print(f"{0.1 + (0.2 + 0.3):.17f}")
assert (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)

# %% [markdown]
# torch adds a long tensor up in blocks, sized for the CPU's vector instructions. Added from the other
# end, the same 10,000 numbers give a slightly different sum, and by how much depends on the CPU:

# %%
# NBVAL_IGNORE_OUTPUT
# why: the blocks, and so the rounding, depend on the CPU; the assert checks what the difference shows
x = torch.randn(10_000, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
order_noise = (x.sum() - x.flip(0).sum()).item()
print(f"sum forwards minus sum backwards, on this CPU: {order_noise:.2e} (the sum is {x.sum().item():.1f})")
assert abs(order_noise) < 1e-3  # the same sum but for the last bits (float32 keeps ~7 digits)

# %% [markdown]
# ## Step 3: the batch size changes the low bits of the logits
#
# The same row computed alone or inside a batch goes through differently blocked matrix products, so the
# additions happen in a different order.

# %%
# NBVAL_IGNORE_OUTPUT
# why: how the products are blocked depends on the CPU and its math library; the assert checks the size
prompt = torch.tensor([encode("ROMEO:\nBut soft, what light")])
with torch.no_grad():
    alone = model(prompt)[0, -1]
    batch = model(prompt.repeat(8, 1))[0, -1]
noise = (alone - batch).abs().max().item()
print(f"largest difference between batch 1 and batch 8, on this CPU: {noise:.2e}  (exactly equal: {noise == 0})")
assert noise < 1e-4  # the same logits but for the last bits (they are of size ~10)

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
ax.semilogy(gaps, marker="o", label="gap at each step")
# the batch-size noise of Step 3, as measured on this CPU (a float32 step at the logits' size if it was 0)
floor = max(noise, torch.finfo(torch.float32).eps * alone.abs().max().item())
ax.axhline(floor, ls="--", color="red", label=f"batch-size noise measured in Step 3 on this CPU ({floor:.1e})")
ax.set_xlabel("generation step")
ax.set_ylabel("gap between top-2 logits")
ax.set_title("How close greedy decoding comes to a tie")
ax.set_ylim(bottom=floor / 5)
ax.legend(loc="center right")
fig.tight_layout()
save_figure(fig, "09_top2_gap")
plt.show()
print(f"smallest gap: {min(gaps):.3g} at step {gaps.index(min(gaps))}")

# %% [markdown]
# The dashed line is the batch-size noise measured in Step 3 on the machine that ran this notebook: it moves
# from one CPU to the next, but stays far below every gap. A gap smaller than that noise would let the batch
# size change the token.
# Let us build such a tie on purpose. It has to be a float32 tie: near 2.0, float32 numbers are
# 2⁻²² ≈ 2.4e-7 apart, so `2.0 + 1e-7` is 2.0 again. `torch.nextafter` gives the next float.

# %%
two = torch.tensor(2.0)
ulp = (torch.nextafter(two, torch.tensor(3.0)) - two).item()  # one float32 step at 2.0: 2 ** -22
print(f"float32: 2.0 + 1e-7 == 2.0 is {bool(two + 1e-7 == two)}; the next float after 2.0 is 2.0 + {ulp:.3g}")
tie = torch.tensor([2.0, 2.0 + ulp, 1.0])  # token 1 leads token 0 by one step
nudged = tie + torch.tensor([2 * ulp, 0.0, 0.0])  # token 0 two steps up: now it leads by one
print("argmax:", tie.argmax().item(), "→ after nudging token 0 up by two steps:", nudged.argmax().item())
assert tie.argmax() == 1 and nudged.argmax() == 0

# %%
# NBVAL_IGNORE_OUTPUT
# why: it quotes the noise measured in Step 3, which depends on the CPU
print(f"The batch-size noise measured in Step 3 on this CPU, {noise:.2e}, is {noise / ulp:.0f} times that step; "
      f"this greedy generation's smallest gap, {min(gaps):.3g}, is {min(gaps) / max(noise, ulp):,.0f} times "
      f"larger, so its tokens are the same at any batch size.")
assert min(gaps) > 100 * max(noise, ulp)

# %% [markdown]
# ## The library's version
#
# Same seed, same tokens: minigpt's sampling always draws from a seeded generator.

# %%
a = minigpt.generate(model, "ROMEO:", max_new_tokens=20, do_sample=True, seed=5)
b = minigpt.generate(model, "ROMEO:", max_new_tokens=20, do_sample=True, seed=5)
assert a.new_tokens == b.new_tokens
print("same seed, same tokens:", a.new_tokens[0][:8], "...")

# %% [markdown]
# ## Sources
#
# - **Floating-point rounding, and why the order of a sum matters** (Steps 2–4): Goldberg, D. (1991). *What Every
#   Computer Scientist Should Know About Floating-Point Arithmetic*. ACM Computing Surveys, 23(1), 5–48.
