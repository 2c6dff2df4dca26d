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
# # Chapter 5 — Controlling the loop
#
# Temperature, top-k and top-p shape one step's distribution. This chapter is about the loop around it:
# discouraging repeats, forbidding an early end, stopping on end-of-text or on a string, drawing several
# samples, and decoding a batch of prompts of different lengths at once.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.generate import PAD_TOKEN_ID
from minigpt.logits import no_repeat_ngram, repetition_penalty, suppress_eos
from minigpt.tokenizer import EOT_TOKEN_ID, decode, encode
from minigpt.viz import plot_distributions, save_figure

torch.manual_seed(0)
torch.set_num_threads(1)
model = minigpt.load_model("shakespeare")

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: repetition penalty
#
# Every token already in the sequence gets its logit pushed down: divided by the penalty when positive,
# multiplied when negative (so it always moves towards "less likely").

# %%
vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])
seen = [3, 5]  # "forward" and "moves" are already in the text


def penalise_by_hand(logits, seen, penalty):
    out = logits.clone()
    for t in set(seen):
        out[t] = out[t] / penalty if out[t] > 0 else out[t] * penalty
    return out


penalised = penalise_by_hand(logits, seen, 1.5)
print([round(x, 3) for x in penalised.tolist()])  # one division or product each: exact on every CPU
dists = {"no penalty": torch.softmax(logits, -1), "penalty 1.5": torch.softmax(penalised, -1)}
for name, d in dists.items():
    print(f"{name:12}", [round(x, 3) for x in d.tolist()])
fig = plot_distributions(dists, vocab, title="Repetition penalty 1.5 on 'forward' and 'moves'")
save_figure(fig, "05_repetition_penalty")
plt.show()

# %%
plain = minigpt.generate(model, "ROMEO:", max_new_tokens=40)
penalty = minigpt.generate(model, "ROMEO:", max_new_tokens=40, repetition_penalty=1.3)
print(plain.text, "\n---")
print(penalty.text)
print("distinct tokens:", len(set(plain.new_tokens[0])), "→", len(set(penalty.new_tokens[0])))

# %% [markdown]
# ## Step 2: no-repeat n-gram
#
# A harder rule: if the last n−1 tokens already appeared followed by token x, then x is banned now, so no
# n-gram can occur twice.

# %%
def banned_by_hand(tokens, n):
    prefix = tuple(tokens[len(tokens) - n + 1 :])
    return sorted({tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix})


history = [1, 2, 3, 1, 2]  # "1 2" was followed by 3 before: 3 is banned after "1 2"
print("banned next:", banned_by_hand(history, 3))
ngram = minigpt.generate(model, "ROMEO:", max_new_tokens=40, no_repeat_ngram_size=3)
print(ngram.text)

# %% [markdown]
# ## Step 3: a minimum length
#
# While fewer than `min_new_tokens` tokens were generated, the end-of-text token is forbidden (logit −∞).

# %%
row = torch.zeros(1, 50257)
row[0, EOT_TOKEN_ID] = 5.0
before = torch.softmax(row, -1)[0, EOT_TOKEN_ID].item()
after = torch.softmax(suppress_eos(row, [EOT_TOKEN_ID]), -1)[0, EOT_TOKEN_ID].item()
# 3 significant digits: a sum over 50,257 numbers is added up in a different order on another CPU
print(f"P(<|endoftext|>) before: {before:.3g}")
print(f"P(<|endoftext|>) after:  {after}")  # exactly 0: exp(-inf)
assert math.isclose(before, math.exp(5) / (math.exp(5) + 50256), rel_tol=1e-4)  # e^5 / (e^5 + 50,256 e^0)
assert after == 0.0

# %% [markdown]
# ## Step 4: end of text in a batch
#
# Rows finish at different times. A finished row keeps receiving padding (and drops out of the batch,
# so it stops costing work); the call ends when every row is done. Here we pick as "EOS" the first
# token the first prompt produces, so that row ends at once.

# %%
prompts = ["ROMEO:", "JULIET:\nO Romeo", "First Citizen:\nBefore we proceed any further, hear me speak."]
first = minigpt.generate(model, prompts[0], max_new_tokens=1).new_tokens[0][0]
batch = minigpt.generate(model, prompts, max_new_tokens=8, eos_token_id=first)
for text, new, why in zip(batch.texts, batch.new_tokens, batch.stopped_by):
    print(f"{len(new):2} new tokens, stopped by {why}: {text!r}")
print(batch.ids[:, -8:])

# %% [markdown]
# ## Step 5: stop strings
#
# A stop string is looked for in the decoded text, so it is found even when it spans several tokens.
# The text ends just before it.

# %%
free = minigpt.generate(model, "ROMEO:", max_new_tokens=40).text
stopped = minigpt.generate(model, "ROMEO:", max_new_tokens=40, stop="\n")
print(repr(free))
print(repr(stopped.text), stopped.stopped_by)
assert stopped.text == free[: free.index("\n", len("ROMEO:"))]

# %% [markdown]
# ## Step 6: several samples per prompt
#
# `num_return_sequences` repeats each prompt's row before decoding, so each copy draws its own sample.

# %%
samples = minigpt.generate(model, "ROMEO:", max_new_tokens=15, do_sample=True, top_k=50,
                           num_return_sequences=3, seed=11)
for t in samples.texts:
    print(repr(t))

# %% [markdown]
# ## Step 7: left padding and the attention mask
#
# Prompts of different lengths are padded on the *left* so every last token sits in the same column,
# where generation continues. The mask hides the padding from attention, and the positions count only
# real tokens, so each row gets the same tokens as when it is decoded alone.

# %%
rows = [encode(p) for p in prompts]
width = max(map(len, rows))
ids = torch.tensor([[PAD_TOKEN_ID] * (width - len(r)) + r for r in rows])
mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
print(mask)
padded = minigpt.generate(model, ids, attention_mask=mask, max_new_tokens=10)
for i, p in enumerate(prompts):
    alone = minigpt.generate(model, p, max_new_tokens=10)
    assert padded.new_tokens[i] == alone.new_tokens[0]
    print(repr(decode(alone.new_tokens[0])))

# %% [markdown]
# ## The library's version

# %%
ids_seen = torch.tensor([seen])
torch.testing.assert_close(repetition_penalty(logits.unsqueeze(0), ids_seen, 1.5)[0], penalised)
banned = no_repeat_ngram(torch.zeros(1, 5), torch.tensor([history]), 3)[0]
assert torch.isinf(banned).nonzero().flatten().tolist() == banned_by_hand(history, 3)
print("hand-built repetition penalty and n-gram ban == minigpt.logits")

# %% [markdown]
# ## Sources
#
# - **The nine-word vocabulary and its logits** after *"every effort moves you"* (Step 1): Raschka, S. (2024). *Build
#   a Large Language Model (From Scratch)*. Manning, chapter 5. (As in chapter 2.)
# - **Repetition penalty** (Step 1; multiplying negative logits instead of dividing them is transformers' rule):
#   Keskar, N. S., McCann, B., Varshney, L. R., Xiong, C., & Socher, R. (2019). *CTRL: A Conditional Transformer
#   Language Model for Controllable Generation*. arXiv:1909.05858.
# - **No-repeat n-gram** (Step 2; the paper blocks repeated trigrams in beam search): Paulus, R., Xiong, C., & Socher,
#   R. (2018). *A Deep Reinforced Model for Abstractive Summarization*. ICLR 2018. arXiv:1705.04304.
# - The third prompt, *"First Citizen: Before we proceed any further, hear me speak."*, opens Shakespeare's
#   *Coriolanus*.
