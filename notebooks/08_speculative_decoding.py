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
# # Chapter 8 — Speculative decoding
#
# A model spends one full forward pass per token. For a big model on a GPU that pass is mostly spent
# reading its weights, so scoring k tokens in one pass costs little more than scoring one; here, a small
# model on a CPU, it costs more, but less than k passes (Step 4 measures it). So let a small **draft**
# model guess k tokens, and let the **target** check all of them in one pass: keep the guesses it agrees
# with, fix the first one it does not. The output is exactly what the target alone would have produced.

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.kv_cache import KVCache
from minigpt.speculative import speculative_generate
from minigpt.tokenizer import decode, encode
from minigpt.viz import save_figure

torch.manual_seed(0)
torch.set_num_threads(1)
target = minigpt.load_model("shakespeare")
draft = minigpt.load_model("shakespeare-draft")
print(f"target {target.num_parameters():,} parameters, draft {draft.num_parameters():,}")

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: draft and verify, by hand (greedy)

# %%
def greedy_next(model, ids):
    with torch.no_grad():
        return model(ids)[0, -1].argmax().item()


def speculative_by_hand(target, draft, ids, k, new_tokens):
    proposed = accepted = passes = 0
    start = ids.size(1)
    while ids.size(1) - start < new_tokens:
        # a round adds up to m + 1 tokens: near the end, draft only as many as can still be used
        m = min(k, new_tokens - (ids.size(1) - start) - 1)
        guesses = []
        for _ in range(m):  # the draft guesses m tokens, one at a time
            guesses.append(greedy_next(draft, torch.cat([ids, torch.tensor([guesses], dtype=torch.long)], 1)))
        with torch.no_grad():  # the target scores every guess in ONE pass
            logits = target(torch.cat([ids, torch.tensor([guesses], dtype=torch.long)], 1))[0, -m - 1 :]
        passes += 1
        wanted = logits.argmax(-1).tolist()  # the target's own choice after each prefix
        n = 0
        while n < m and guesses[n] == wanted[n]:
            n += 1
        proposed, accepted = proposed + m, accepted + n
        keep = guesses[:n] + [wanted[n]]  # the agreed guesses, then the target's correction (or bonus)
        ids = torch.cat([ids, torch.tensor([keep])], 1)
    return ids, accepted / proposed, passes


prompt = torch.tensor([encode("ROMEO:\nI")])
ids, rate, passes = speculative_by_hand(target, draft, prompt, k=4, new_tokens=30)
print(repr(decode(ids[0].tolist())))
print(f"acceptance rate {rate:.2f}; {passes} target passes for 30 tokens (greedy needs 30)")

# %% [markdown]
# ## Step 2: exactly the target's output

# %%
plain = minigpt.generate(target, prompt, max_new_tokens=30)
assert ids.tolist() == plain.ids.tolist()
print("speculative (greedy) == the target's greedy output")

# %% [markdown]
# ## Step 3: acceptance rate against k
#
# Longer guesses save more passes when they are right, and waste more draft work when they are not.

# %%
ks = [1, 2, 3, 4, 6, 8]
results = [speculative_generate(target, draft, "ROMEO:\nI", k=k, max_new_tokens=40) for k in ks]
for k, r in zip(ks, results):
    print(f"k = {k}: acceptance {r.acceptance_rate:.2f}, target passes {r.num_target_passes}")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(ks, [r.num_target_passes for r in results], marker="o")
ax.axhline(40, ls="--", color="gray", label="plain decoding: 40 passes")
ax.set_xlabel("draft length k")
ax.set_ylim(0, 42)  # from 0, so that the heights compare
ax.set_ylabel("target forward passes for 40 tokens")
ax.set_title("Speculative decoding: fewer passes of the big model")
ax.legend()
fig.tight_layout()
save_figure(fig, "08_passes_vs_k")
plt.show()

# %% [markdown]
# ## Step 4: what one pass over k positions costs
#
# Fewer passes help only if a pass over k positions is cheap. Time the target's forward pass over 1 to 8
# new positions after a cached prompt, as in one verification round (the best of a few runs, on this CPU):

# %%
# NBVAL_IGNORE_OUTPUT
# why: timings depend on the machine and its load; the assert checks only that each was measured
context = torch.tensor([encode("ROMEO:\nI")])
positions = torch.tensor([encode(" will not be moved by thee, for I am constant")])[:, :8]
assert positions.size(1) == 8
cache = KVCache.for_model(target, batch_size=1, max_len=context.size(1) + 8)
seconds = {}
with torch.no_grad():
    target(context, kv_cache=cache)  # the prompt, cached once
    for n in range(1, 9):
        runs = []
        for _ in range(10):
            cache.crop(context.size(1))  # forget the previous round's positions
            t0 = time.perf_counter()
            target(positions[:, :n], kv_cache=cache)
            runs.append(time.perf_counter() - t0)
        seconds[n] = min(runs)
print("positions  one pass (ms)  × a pass over one position")
for n, t in seconds.items():
    print(f"{n:9d}  {1000 * t:13.2f}  {t / seconds[1]:26.2f}")
assert all(t > 0 for t in seconds.values())

# %% [markdown]
# Compare the last column with the first, which is what n separate passes would cost. The time grows with
# the number of positions, by how much depends on the CPU: a model this small, on a CPU, spends much of a
# pass on arithmetic (the output layer alone multiplies each position by 50,257 × 192 weights), not only on
# reading its weights. But it grows more slowly than the count, so one pass over k positions still costs
# less than the k passes plain decoding would spend on them. Speculative decoding therefore saves less time
# here than the pass counts of Step 3 suggest; on a GPU with a big target, where a pass is bound by reading
# the weights, the saving comes closer to them.

# %% [markdown]
# ## Step 5: why sampling stays exact
#
# With sampling, the target accepts a draft token x with probability min(1, p(x) / q(x)), where p is the
# target's and q the draft's distribution. On rejection it draws from the leftover max(0, p − q),
# renormalised. Together the two cases give every token probability exactly p(x) (Leviathan et al.,
# 2023; Chen et al., 2023). Checked on a three-token example:

# %%
p = torch.tensor([0.5, 0.3, 0.2])  # target
q = torch.tensor([0.2, 0.6, 0.2])  # draft
accept = torch.minimum(torch.ones(3), p / q)
residual = torch.clamp(p - q, min=0) / torch.clamp(p - q, min=0).sum()
rejected_mass = (q * (1 - accept)).sum()
result = q * accept + rejected_mass * residual
print("P(output) =", [round(x, 3) for x in result.tolist()], "== p =", [round(x, 3) for x in p.tolist()])
assert torch.allclose(result, p)

# %% [markdown]
# ## The library's version
#
# It counts the acceptance rate as we did: draft tokens kept over draft tokens proposed, leaving out the
# target's own token at the end of each round. And like our loop, its last round drafts only as many tokens
# as can still be used: a full k there would count guesses past the 30th token, and give another rate.

# %%
library = speculative_generate(target, draft, prompt, k=4, max_new_tokens=30)
assert library.ids.tolist() == ids.tolist()
assert library.acceptance_rate == rate and library.num_target_passes == passes
print(f"minigpt.speculative_generate: same tokens, acceptance {library.acceptance_rate:.2f}, "
      f"{library.num_target_passes} target passes")

# %% [markdown]
# ## Sources
#
# - **Speculative decoding and the sampling rule of Step 5**: Leviathan, Y., Kalman, M., & Matias, Y. (2023). *Fast
#   Inference from Transformers via Speculative Decoding*. ICML 2023. arXiv:2211.17192.
# - **The same, found independently (speculative sampling)**: Chen, C., Borgeaud, S., Irving, G., Lespiau, J.-B.,
#   Sifre, L., & Jumper, J. (2023). *Accelerating Large Language Model Decoding with Speculative Sampling*.
#   arXiv:2302.01318.
# - **Prompt lookup decoding**, which drafts from the text itself instead of a draft model
#   (`minigpt.speculative.prompt_lookup_generate`, not used in this chapter): Saxena, A. (2023). *Prompt Lookup
#   Decoding*. GitHub, <https://github.com/apoorvumang/prompt-lookup-decoding>.
