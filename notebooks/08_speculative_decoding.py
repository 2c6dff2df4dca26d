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
# A big model spends one full forward pass per token, mostly reading its weights. Scoring k tokens in one
# pass costs about the same as scoring one. So let a small **draft** model guess k tokens, and let the
# **target** check all of them in one pass: keep the guesses it agrees with, fix the first one it does
# not. The output is exactly what the target alone would have produced.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

import minigpt
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
        guesses = []
        for _ in range(k):  # the draft guesses k tokens, one at a time
            guesses.append(greedy_next(draft, torch.cat([ids, torch.tensor([guesses], dtype=torch.long)], 1)))
        with torch.no_grad():  # the target scores every guess in ONE pass
            logits = target(torch.cat([ids, torch.tensor([guesses], dtype=torch.long)], 1))[0, -k - 1 :]
        passes += 1
        wanted = logits.argmax(-1).tolist()  # the target's own choice after each prefix
        n = 0
        while n < k and guesses[n] == wanted[n]:
            n += 1
        proposed, accepted = proposed + k, accepted + n
        keep = guesses[:n] + [wanted[n]]  # the agreed guesses, then the target's correction (or bonus)
        ids = torch.cat([ids, torch.tensor([keep])], 1)
    return ids[:, : start + new_tokens], accepted / proposed, passes


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
ax.set_ylabel("target forward passes for 40 tokens")
ax.set_title("Speculative decoding: fewer passes of the big model")
ax.legend()
fig.tight_layout()
save_figure(fig, "08_passes_vs_k")
plt.show()

# %% [markdown]
# ## Step 4: why sampling stays exact
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

# %%
library = speculative_generate(target, draft, prompt, k=4, max_new_tokens=30)
assert library.ids.tolist() == ids.tolist()
print(f"minigpt.speculative_generate: same tokens, acceptance {library.acceptance_rate:.2f}, "
      f"{library.num_target_passes} target passes")

# %% [markdown]
# ## Sources
#
# - **Speculative decoding and the sampling rule of Step 4**: Leviathan, Y., Kalman, M., & Matias, Y. (2023). *Fast
#   Inference from Transformers via Speculative Decoding*. ICML 2023. arXiv:2211.17192.
# - **The same, found independently (speculative sampling)**: Chen, C., Borgeaud, S., Irving, G., Lespiau, J.-B.,
#   Sifre, L., & Jumper, J. (2023). *Accelerating Large Language Model Decoding with Speculative Sampling*.
#   arXiv:2302.01318.
# - **Prompt lookup decoding**, which drafts from the text itself instead of a draft model
#   (`minigpt.speculative.prompt_lookup_generate`, not used in this chapter): Saxena, A. (2023). *Prompt Lookup
#   Decoding*. GitHub, <https://github.com/apoorvumang/prompt-lookup-decoding>.
