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
# # Chapter 1 — Greedy decoding
#
# The simplest way to generate: at every step take the single most likely next token (the argmax),
# append it, and ask again. We write that loop by hand, watch it fall into a loop, and see on a small
# tree why "most likely at each step" is not "most likely overall".

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.tokenizer import decode, encode
from minigpt.viz import plot_token_tree, save_figure

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: the argmax loop, by hand

# %%
model = minigpt.load_model("shakespeare")


def greedy(model, ids, max_new_tokens):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(ids)  # (1, T, V): a full pass over the whole sequence every step
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1): the most likely token
        ids = torch.cat([ids, next_id], dim=1)  # (1, T + 1)
    return ids


prompt = torch.tensor([encode("ROMEO:")])
ids = greedy(model, prompt, max_new_tokens=40)
print(ids[0, prompt.size(1):].tolist())
print(decode(ids[0].tolist()))

# %% [markdown]
# ## Step 2: the repetition loop
#
# Greedy decoding is deterministic: once it produces a stretch of text it has produced before, the
# context looks the same and it picks the same tokens again. Let us find the first repeated 4-gram.

# %%
long = greedy(model, prompt, max_new_tokens=80)[0, prompt.size(1):].tolist()


def first_repeat(tokens, n=4):
    seen = {}
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            return seen[gram], i
        seen[gram] = i
    return None


print("first repeated 4-gram at positions:", first_repeat(long))
print(repr(decode(long)))

# %% [markdown]
# ## Step 3: greedy is short-sighted
#
# A two-step toy tree. After "The", greedy takes "nice" (0.5) and then "woman" (0.4):
# 0.5 × 0.4 = **0.20**. But "The dog has" has probability 0.4 × 0.9 = **0.36**. Greedy never looks at
# it, because "dog" lost the first step.

# %%
tree = {
    "nice": (0.5, {"woman": (0.4, {}), "house": (0.3, {}), "guy": (0.3, {})}),
    "dog": (0.4, {"has": (0.9, {}), "and": (0.05, {}), "runs": (0.05, {})}),
    "car": (0.1, {"is": (0.3, {}), "drives": (0.5, {}), "turns": (0.2, {})}),
}


def greedy_path(tree):
    path, prob = [], 1.0
    while tree:
        word, (p, tree) = max(tree.items(), key=lambda kv: kv[1][0])
        path.append(word)
        prob *= p
    return path, prob


def best_path(tree):
    if not tree:
        return [], 1.0
    options = []
    for word, (p, children) in tree.items():
        rest, q = best_path(children)
        options.append(([word, *rest], p * q))
    return max(options, key=lambda o: o[1])


g, b = greedy_path(tree), best_path(tree)
print(f"greedy: The {' '.join(g[0])}  p = {g[1]:.2f}")
print(f"best:   The {' '.join(b[0])}  p = {b[1]:.2f}")

# %%
fig = plot_token_tree(tree, root="The", title="Greedy picks 'The nice woman' (0.20), not 'The dog has' (0.36)",
                      highlight=[g[0], b[0]])
save_figure(fig, "01_greedy_tree")
plt.show()

# %% [markdown]
# ## The library's version
#
# `minigpt.generate` with its defaults is greedy decoding (and uses a KV cache, chapter 7, so it does not
# recompute the whole sequence each step). Same tokens as our loop:

# %%
library = minigpt.generate(model, "ROMEO:", max_new_tokens=40)
assert library.ids[0].tolist() == ids[0].tolist()
print("hand-built greedy == minigpt.generate (greedy):", library.new_tokens[0][:10], "...")

# %% [markdown]
# ## Sources
#
# - **The "nice woman" / "dog has" tree** (Step 3): von Platen, P. (2020). *How to generate text: using different
#   decoding methods for language generation with Transformers*. Hugging Face blog,
#   <https://huggingface.co/blog/how-to-generate>.
# - **Why the most likely text repeats itself** (Step 2): Holtzman, A., Buys, J., Du, L., Forbes, M., & Choi, Y.
#   (2020). *The Curious Case of Neural Text Degeneration*. ICLR 2020. arXiv:1904.09751.
