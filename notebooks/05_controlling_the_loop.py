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
# # Chapter 5 — Controlling the loop
#
# Temperature, top-k and top-p shape one step's distribution. This chapter is about the loop around it:
# discouraging repeats, forbidding an early end, decoding a batch of prompts of different lengths at
# once, ending each row on end-of-text or on a stop string (also while streaming), and drawing several
# samples per prompt. The batch loop is built by hand and checked against `minigpt.generate`.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
prompt = "ROMEO:"  # Steps 1, 2 and 6 continue it
prompts = ["HAMLET:\nTo be, or not to be", "FALSTAFF:\nI", "JULIET:\nO Romeo"]  # Steps 4 and 5: a padded batch
sample_prompts = ["ROMEO:", "HAMLET:"]  # Step 7: several samples of each
seed = 11  # Step 7's random generator

# %%
# %matplotlib inline
import dataclasses
import math

import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.generate import PAD_TOKEN_ID
from minigpt.logits import (
    LogitsSettings,
    apply_frequency_penalty,
    apply_presence_penalty,
    no_repeat_ngram,
    repetition_penalty,
    suppress_eos,
)
from minigpt.tokenizer import EOT_TOKEN_ID, decode, encode
from minigpt.viz import OKABE_ITO, save_figure

default_run = (prompt, prompts, sample_prompts, seed) == (
    "ROMEO:", ["HAMLET:\nTo be, or not to be", "FALSTAFF:\nI", "JULIET:\nO Romeo"], ["ROMEO:", "HAMLET:"], 11)
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


def plot_penalised(dists, vocab, seen_counts, title, mark="in the text"):
    """The distributions side by side for each word; the penalised words (``seen_counts``) marked and shaded."""
    fig, ax = plt.subplots(figsize=(10, 4.8))
    width = 0.8 / len(dists)
    for i, (name, d) in enumerate(dists.items()):
        xs = [w + (i - (len(dists) - 1) / 2) * width for w in range(len(vocab))]
        bars = ax.bar(xs, d.tolist(), width, label=name, color=list(OKABE_ITO.values())[i],
                      hatch=["", "//", "..", "xx"][i], edgecolor="white")
        ax.bar_label(bars, [f"{p:.3f}" if p >= 0.05 else "" for p in d.tolist()], fontsize=9, padding=2,
                     rotation=90 if len(dists) > 2 else 0)  # upright numbers would overlap at 4 bars a word
    for w in seen_counts:  # shade the penalised words
        ax.axvspan(w - 0.45, w + 0.45, color="0.9", zorder=0)
    labels = [f"{word}\n▲ {mark} ×{seen_counts[w]}" if w in seen_counts else word for w, word in enumerate(vocab)]
    ax.set_xticks(range(len(vocab)), labels, fontsize=11)
    for w, tick in enumerate(ax.get_xticklabels()):
        tick.set_fontweight("bold" if w in seen_counts else "normal")
    ax.set_ylabel("probability of the next token", fontsize=11)
    ax.set_ylim(0, max(d.max().item() for d in dists.values()) * 1.2)
    ax.set_title(title, fontsize=12)
    ax.legend(fontsize=10, loc="upper left")
    fig.tight_layout()
    return fig


penalised = penalise_by_hand(logits, seen, 1.5)
print([round(x, 3) for x in penalised.tolist()])  # one division or product each: exact on every CPU
dists = {"no penalty": torch.softmax(logits, -1), "penalty 1.5": torch.softmax(penalised, -1)}
for name, d in dists.items():
    print(f"{name:12}", [round(x, 3) for x in d.tolist()])
assert all(dists["penalty 1.5"][t] < dists["no penalty"][t] for t in seen)  # every seen word loses mass
assert dists["no penalty"].argmax() == 3 and dists["penalty 1.5"].argmax() == 7  # and "toward" overtakes
fig = plot_penalised(dists, vocab, {t: seen.count(t) for t in seen},
                     "Repetition penalty 1.5: the words already in the text (shaded) lose mass;\n"
                     "'toward' overtakes 'forward'")
save_figure(fig, "05_repetition_penalty")
plt.show()

# %%
plain = minigpt.generate(model, prompt, max_new_tokens=40)
penalty = minigpt.generate(model, prompt, max_new_tokens=40, repetition_penalty=1.3)
print(plain.text, "\n---")
print(penalty.text)
print("distinct tokens:", len(set(plain.new_tokens[0])), "→", len(set(penalty.new_tokens[0])))
if default_run:
    assert len(set(penalty.new_tokens[0])) > 2 * len(set(plain.new_tokens[0]))  # the penalty breaks the loop

# %% [markdown]
# ### Frequency and presence penalties: subtract instead of divide
#
# OpenAI's API offers two other penalties. With $c_j$ the number of times token $j$ was *generated* so far
# (the prompt does not count):
#
# - **frequency penalty** $\alpha_f$: $z_j \leftarrow z_j - \alpha_f \, c_j$, which grows with every repeat;
# - **presence penalty** $\alpha_p$: $z_j \leftarrow z_j - \alpha_p \, [c_j > 0]$, once per token, like the
#   repetition penalty.
#
# Subtracting a from a logit multiplies that token's odds against every other token by $e^{-a}$, whatever the
# logit's size or sign; the repetition penalty's division takes more from a large logit than from a small one
# (the cell prints how much "forward" loses, and what "you" would lose). On the nine words, after the model
# has generated "forward" three times and "moves" once:

# %%
generated = [3, 3, 3, 5]  # "forward" three times, "moves" once


def frequency_penalty_by_hand(logits, generated, penalty):
    counts = torch.bincount(torch.tensor(generated), minlength=logits.numel()).float()  # c_j
    return logits - penalty * counts


def presence_penalty_by_hand(logits, generated, penalty):
    counts = torch.bincount(torch.tensor(generated), minlength=logits.numel())
    return logits - penalty * (counts > 0).float()


by_frequency = frequency_penalty_by_hand(logits, generated, 0.5)
by_presence = presence_penalty_by_hand(logits, generated, 0.5)
by_repetition = penalise_by_hand(logits, generated, 1.5)
print("new logit (change)  repetition 1.5    frequency 0.5    presence 0.5")
for t in (3, 5, 7):
    cells = [f"{z[t]:7.3f} ({z[t] - logits[t]:+.2f})" for z in (by_repetition, by_frequency, by_presence)]
    print(f"{vocab[t]:8} ×{generated.count(t)} {logits[t]:5.2f}  " + "  ".join(cells))
you = penalise_by_hand(logits, [8], 1.5)[8]  # what the division would take from a small positive logit
print(f"'you' ({logits[8]:.2f}), were it penalised: {you:.3f} ({you - logits[8]:+.2f})")
assert logits[3] - by_repetition[3] > logits[8] - you  # the division takes more from the larger logit
assert by_repetition[7] == by_frequency[7] == by_presence[7] == logits[7]  # "toward" was not generated: untouched
ids_generated = torch.tensor([generated])
assert torch.equal(apply_frequency_penalty(logits.unsqueeze(0), ids_generated, 0.5)[0], by_frequency)
assert torch.equal(apply_presence_penalty(logits.unsqueeze(0), ids_generated, 0.5)[0], by_presence)
print("hand-built frequency and presence penalties == minigpt.logits")
dists = {"no penalty": torch.softmax(logits, -1), "repetition 1.5": torch.softmax(by_repetition, -1),
         "frequency 0.5": torch.softmax(by_frequency, -1), "presence 0.5": torch.softmax(by_presence, -1)}
for name, d in dists.items():
    print(f"{name:14}", [round(x, 3) for x in d.tolist()])
assert all(dists[name].argmax() == 7 for name in dists if name != "no penalty")  # "toward" wins under all three
assert dists["frequency 0.5"][3] < dists["presence 0.5"][3]  # three repeats cost more than one
fig = plot_penalised(dists, vocab, {t: generated.count(t) for t in set(generated)},
                     "Three penalties after 'forward' ×3 and 'moves' ×1 were generated (shaded):\n"
                     "each takes mass from them; frequency takes more for more repeats",
                     mark="generated")
save_figure(fig, "05_penalties")
plt.show()

# %% [markdown]
# The frequency penalty takes 1.50 from "forward" (three repeats × 0.5) and only 0.50 from "moves"; presence
# takes 0.50 from each; the repetition penalty takes 2.25 from "forward" and, since "moves" is negative
# (−1.62), makes it 0.81 more negative. All three leave "toward" alone, which now wins. In `generate` they
# are `frequency_penalty=` and `presence_penalty=` (in [−2, 2], as in OpenAI's API; below 0 they reward
# repeating).

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
ngram = minigpt.generate(model, prompt, max_new_tokens=40, no_repeat_ngram_size=3)
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
# ## Step 4: a batch of prompts: left padding and the attention mask
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
# What sits in the padded places does not matter: no real token attends to them, and their own outputs
# are never read. Fill them with "!" instead of `<|endoftext|>` and every real token's logits stay the
# same, bit for bit.

# %%
positions = (mask.cumsum(1) - 1).clamp(min=0)  # real tokens count from 0; padding's positions are never read
with torch.no_grad():
    as_eot = model(ids, attention_mask=mask, position_ids=positions)  # (3, T, V)
    as_bang = model(ids.masked_fill(mask == 0, encode("!")[0]), attention_mask=mask, position_ids=positions)
same = torch.equal(as_eot[mask == 1], as_bang[mask == 1])
print("padding with <|endoftext|> or with '!': the real tokens' logits are identical:", same)
assert same

# %% [markdown]
# ## Step 5: end of text in a batch, by hand
#
# Rows finish at different times. A row that emits the end-of-sequence token (EOS) is marked finished:
# from then on it is **dropped** from the model's batch (it costs no more work) and its column of each
# later step is filled with **padding** (mask 0), so the batch stays a rectangle. The call ends when every
# row has finished or `max_new_tokens` is reached; the text of a row is its real tokens only.
#
# This model almost never writes `<|endoftext|>` (its training text has one only between two of
# Shakespeare's works): with it as the EOS, no row here ends.

# %%
ended = minigpt.generate(model, prompts, max_new_tokens=10, eos_token_id=EOT_TOKEN_ID).stopped_by
print(f"why each row stopped, with <|endoftext|> as EOS: {ended}")  # None: it ran to max_new_tokens
if default_run:
    assert ended == [None] * len(prompts)

# %% [markdown]
# Any token can serve as the end: we take the newline (id 198), so each row ends with its first line.
# With a model that does end its texts, the setting is `eos_token_id=50256`.
#
# We write the loop once, for any way of picking tokens (`pick`) and any rule for when a row is done
# (`ends`); Steps 6 and 7 reuse it.

# %%
NEWLINE = encode("\n")[0]  # 198: our end-of-sequence token in this step


def decode_by_hand(ids, mask, max_new_tokens, pick, ends):
    """Continue the left-padded batch ``ids``/``mask`` (B, T); return the grown ids, mask, and new tokens per row.

    ``pick(logits)`` chooses a token for each of the R running rows from their (R, V) next-token logits;
    ``ends(new)`` says whether a row whose new tokens are ``new`` has finished.
    """
    B = ids.size(0)
    new = [[] for _ in range(B)]
    running = list(range(B))
    for _ in range(max_new_tokens):
        if not running:
            break  # every row has finished
        rows = torch.tensor(running)  # finished rows are dropped: the model sees only running ones
        m = mask[rows]
        positions = (m.cumsum(1) - 1).clamp(min=0)  # as in Step 4: real tokens count from 0
        with torch.no_grad():
            logits = model(ids[rows], attention_mask=m, position_ids=positions)[:, -1]  # (R, V)
        tokens = pick(logits)
        # one new column for every row: the pick for running rows, padding (mask 0) for finished ones
        ids = torch.cat([ids, torch.full((B, 1), PAD_TOKEN_ID)], dim=1)
        mask = torch.cat([mask, torch.zeros(B, 1, dtype=mask.dtype)], dim=1)
        ids[rows, -1], mask[rows, -1] = tokens, 1
        for r, t in zip(running, tokens.tolist()):
            new[r].append(t)
        running = [r for r in running if not ends(new[r])]
    return ids, mask, new


def greedy_pick(logits):
    return logits.argmax(dim=-1)


eos_ids, eos_mask, eos_new = decode_by_hand(ids, mask, 10, greedy_pick, ends=lambda new: new[-1] == NEWLINE)
texts = [decode(row[m == 1].tolist()) for row, m in zip(eos_ids, eos_mask)]  # real tokens only: padding dropped
for text, new in zip(texts, eos_new):
    print(f"{len(new):2} new tokens, {'ended by EOS' if new[-1] == NEWLINE else 'ran to max_new_tokens'}: {text!r}")
print(eos_ids[:, width:])  # the new columns: 50256 (padding) after a row's end
print("row 0 decoded with its padding:", repr(decode(eos_ids[0].tolist())))

# %%
library = minigpt.generate(model, prompts, max_new_tokens=10, eos_token_id=NEWLINE)
assert torch.equal(library.ids, eos_ids) and torch.equal(library.attention_mask, eos_mask)
assert library.new_tokens == eos_new and library.texts == texts
print(f"hand-built EOS handling == minigpt.generate(eos_token_id=...): stopped by {library.stopped_by}")

# %% [markdown]
# **Why `<|endoftext|>` doubles as padding.** GPT-2 has no padding token: its 50,257 ids are 50,256 pieces
# of text and `<|endoftext|>`. A padded place needs *some* id for the tensor, and Step 4 showed that which
# one does not matter to the real tokens, because the mask hides it. So the choice is a convention, and
# `<|endoftext|>` (50256) is the natural one: it is the one id that already means "no text here, nothing
# follows", and if padding is ever decoded by mistake (as in row 0 above) it shows up as `<|endoftext|>`
# rather than as a stray word. The mask, not the id, says what is text: with `eos_token_id=50256` a row's
# real EOS and the padding after it are the same id, told apart only by the mask (1, then 0).
#
# ## Step 6: stop strings across token boundaries
#
# A stop string ends a row when it appears in the text, even when it spans several tokens. A blank line
# (`"\n\n"`) ends a speech in the plays; GPT-2 even has a single token for it (printed below), but this
# model writes it as two newline tokens, as its training text does. Checking each new token on its own never
# sees it:

# %%
stop = "\n\n"
print(f"GPT-2's own token for {stop!r}: {encode(stop)}")
free = minigpt.generate(model, prompt, max_new_tokens=80).new_tokens[0]
found = decode(free).find(stop)
print(f"{stop!r} in the text of the 80 tokens: at character {found}")  # -1: not in them
print("in a single token:", any(stop in decode([t]) for t in free))
if found >= 0:
    at = next(i for i in range(len(free)) if len(decode(free[: i + 1])) > found)  # the token it starts in
    around = free[max(0, at - 2) : at + 3]
    print("the tokens around it:", [decode([t]) for t in around], around)
if default_run:
    assert found > 0 and not any(stop in decode([t]) for t in free)

# %% [markdown]
# The fix is to search the **decoded text**. After each token, decode the tail of the row's new tokens
# and look for the stop string there. A token holds at least one byte, so a stop string of n bytes that
# the newest token completed lies within the last n tokens; the library decodes the last n + 1
# (`_stop_window`). The row ends with the token that completes the stop string, and its text is cut just
# before the stop string.

# %%
window = len(stop.encode()) + 1
prompt_ids = torch.tensor([encode(prompt)])
_, _, stop_new = decode_by_hand(prompt_ids, torch.ones_like(prompt_ids), 80, greedy_pick,
                                ends=lambda new: stop in decode(new[-window:]))
continuation = decode(stop_new[0])
cut = continuation.find(stop)  # -1 when the 80 tokens never wrote it: then the row keeps them all
text = prompt + (continuation[:cut] if cut >= 0 else continuation)
print(f"{len(stop_new[0])} of 80 tokens, text: {text!r}")
stopped = minigpt.generate(model, prompt, max_new_tokens=80, stop=stop)
assert stopped.new_tokens == stop_new and stopped.text == text
assert stopped.stopped_by == (["stop"] if cut >= 0 else [None])
print(f"hand-built stop string == minigpt.generate(stop=...): stopped by {stopped.stopped_by}")

# %% [markdown]
# **Streaming** makes it harder: a piece of text, once shown, cannot be taken back. When the text so far
# ends with the *start* of a stop string (a single `"\n"` here), that tail is held back until the next
# token shows whether the stop string is completed (then it is never shown) or not (then it is released
# with what follows). After the last token nothing more can come, so whatever is held back is released.

# %%
def held_back(text, stop):
    """Length of the longest tail of ``text`` that could still grow into ``stop``."""
    return max((n for n in range(len(stop) - 1, 0, -1) if text.endswith(stop[:n])), default=0)


pieces, sent = [], 0  # sent: how many characters of the continuation were already shown
for i, token in enumerate(stop_new[0]):
    so_far = decode(stop_new[0][: i + 1])
    end = so_far.find(stop)
    last = i == len(stop_new[0]) - 1  # nothing follows the last token: hold nothing back
    safe = end if end >= 0 else len(so_far) if last else len(so_far) - held_back(so_far, stop)  # shown for sure
    pieces.append((token, so_far[sent:safe]))
    sent = safe
for i in sorted({0, 1, 2} | set(range(len(pieces) - 3, len(pieces)))):  # the first and the last three
    token, piece = pieces[i]
    print(f"token {i:2} {decode([token])!r:6} → shows {piece!r}")
assert pieces == list(minigpt.stream(model, prompt, max_new_tokens=80, stop=stop))
assert "".join(piece for _, piece in pieces) == text[len(prompt):]
print("hand-built streaming == minigpt.stream(stop=...)")

# %% [markdown]
# ## Step 7: several samples per prompt
#
# `num_return_sequences=n` repeats each prompt's row n times before decoding (rows 0 … n−1 are the first
# prompt's, then the next prompt's) and samples all rows with **one** random generator. The copies start
# identical; each step draws one token per row from the same stream of random numbers, so they part
# ways at their first different draw. (Prompts of different lengths are padded on the left, as in Step 4.)

# %%
n = 2
sample_rows = [encode(p) for p in sample_prompts]
sample_width = max(map(len, sample_rows))
copies = torch.tensor([[PAD_TOKEN_ID] * (sample_width - len(r)) + r
                       for r in sample_rows]).repeat_interleave(n, dim=0)  # (len(sample_prompts) * n, T): R, R, H, H
copies_mask = torch.tensor([[0] * (sample_width - len(r)) + [1] * len(r)
                            for r in sample_rows]).repeat_interleave(n, dim=0)  # 0 = padding
generator = torch.Generator().manual_seed(seed)  # one generator for the whole batch


def sample_top_k(logits, k=50):
    kth = logits.topk(k).values[:, -1:]  # (R, 1): each row's k-th largest logit
    probs = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # one draw per row


_, _, sample_new = decode_by_hand(copies, copies_mask, 15, sample_top_k, ends=lambda new: False)
samples = minigpt.generate(model, sample_prompts, max_new_tokens=15, do_sample=True, top_k=50,
                           num_return_sequences=n, seed=seed)
assert samples.new_tokens == sample_new
assert samples.texts == [sample_prompts[i // n] + decode(new) for i, new in enumerate(sample_new)]
for t in samples.texts:
    print(repr(t))
print(f"hand-built num_return_sequences == minigpt.generate(num_return_sequences={n}, seed={seed})")

# %% [markdown]
# ## The library's version

# %%
ids_seen = torch.tensor([seen])
torch.testing.assert_close(repetition_penalty(logits.unsqueeze(0), ids_seen, 1.5)[0], penalised)
banned = no_repeat_ngram(torch.zeros(1, 5), torch.tensor([history]), 3)[0]
assert torch.isinf(banned).nonzero().flatten().tolist() == banned_by_hand(history, 3)
print("hand-built repetition penalty and n-gram ban == minigpt.logits")

# %% [markdown]
# ## Step 8: the order of the transforms
#
# The library keeps every setting of these transforms in one `LogitsSettings`, checked once, and turns it into
# a chain, built once per generation and applied at every step. Printing the chain shows what runs, in which
# order, with which argument. The order is data: transformers divides by the temperature *before* the sampling
# filters, llama.cpp's default chain divides *after* them. Here are both on the model's next-token distribution
# after the prompt, hot and with a nucleus.

# %%
context = torch.tensor([encode(prompt)])
with torch.no_grad():
    next_logits = model(context)[:, -1].float()  # (1, V): the model's scores for the token after the prompt
hot_nucleus = LogitsSettings(temperature=1.5, top_p=0.9)
kept = {}
for order in ("transformers", "llama.cpp"):
    chain = dataclasses.replace(hot_nucleus, order=order).chain(sample=True)
    print(chain)
    p = chain(next_logits, context, new_tokens=0).softmax(-1)[0]
    kept[order] = set(torch.nonzero(p).flatten().tolist())
    print(f"  {len(kept[order])} tokens kept; the most likely one drawn with p = {p.max().item():.3f}\n")
nucleus_alone = LogitsSettings(top_p=0.9).chain(sample=True)(next_logits, context, new_tokens=0)
assert kept["llama.cpp"] == set(torch.isfinite(nucleus_alone[0]).nonzero().flatten().tolist())
assert kept["llama.cpp"] <= kept["transformers"]  # heat flattens, so the nucleus needs at least as many tokens
if default_run:
    assert len(kept["llama.cpp"]) < len(kept["transformers"])

# %% [markdown]
# Heat flattens the distribution, so transformers' nucleus needs more tokens to reach the same mass: the chain
# lets more of the tail in, and then samples it hot. llama.cpp cuts the model's own distribution first, so it
# keeps exactly the tokens the nucleus keeps without any heat (asserted), and the temperature only reshapes the
# survivors. Same settings, different text: compare the orders whenever a recipe from one library is moved to
# the other.

# %% [markdown]
# ## Try it
#
# Open the decoding explorer on this chapter's example (in Jupyter; run as a plain script, this line makes the
# widget and shows nothing). The repetition penalty starts at 1.5 after a text that repeats itself: the tokens
# already in it lose mass. Move the slider back to 1 to see what they had. Every number in it comes from
# `minigpt.logits`, the functions this chapter checked.

# %%
# NBVAL_IGNORE_OUTPUT
# why: a live widget: its output is the id Jupyter gives it, new on every run
# temperature=1, top_k=0: the explorer starts where `minigpt generate` samples (T = 0.8, top-k 50); here the
# penalty acts alone
minigpt.explore(model, "ROMEO:\nAnd, as I am a man, and a man, and a man,", temperature=1, top_k=0,
                repetition_penalty=1.5)

# %% [markdown]
# ## Recap
#
# **What we built.** The loop around a step, by hand: the repetition, frequency and presence penalties, the
# no-repeat n-gram ban, a minimum length, a batch of prompts with left padding and an attention mask, rows
# that end on end-of-text or on a stop string (also while streaming), and several samples per prompt. The
# library's matches are `minigpt.logits.repetition_penalty`, `minigpt.logits.apply_frequency_penalty`,
# `minigpt.logits.apply_presence_penalty`, `minigpt.logits.no_repeat_ngram` and
# `minigpt.logits.suppress_eos`, and for the loop `minigpt.generate(model, prompts, attention_mask=...,
# eos_token_id=..., stop=..., num_return_sequences=n)` and `minigpt.stream(model, prompt, stop=...)`, which
# gave the same tokens and text as ours.
#
# **Check yourself.**
#
# 1. "forward" (logit 6.75) and "moves" (logit −1.62) are already in the text. What does a repetition
#    penalty of 1.5 make of each, and why is one divided and the other multiplied?
#
# <details><summary>Answer</summary>
#
# $6.75 / 1.5 = 4.5$ and $-1.62 \times 1.5 = -2.43$. Dividing a negative logit would move it *up*, towards
# zero, so it is multiplied instead: either way the token becomes less likely.
#
# </details>
#
# 2. Why are the prompts of a batch padded on the left, and why does it not matter which id fills the
#    padding?
#
# <details><summary>Answer</summary>
#
# On the left, every prompt's last token sits in the same column, where generation continues. The attention
# mask hides the padded places from every real token, so their id never reaches a real token's logits:
# padding with `'!'` or with `<|endoftext|>` gave identical logits.
#
# </details>
#
# 3. The model writes the blank line `"\n\n"` as two `'\n'` tokens. Why does checking each new token for
#    the stop string never stop the row, and what does the library check instead?
#
# <details><summary>Answer</summary>
#
# No single token holds the stop string, so no token on its own matches it. The library decodes the tail of
# the row's new tokens (the last n + 1 for a stop string of n bytes) and searches that text.
#
# </details>
#
# 4. While streaming with the stop string `"\n\n"`, a `'\n'` token shows nothing at first. Why?
#
# <details><summary>Answer</summary>
#
# A single `'\n'` could be the start of the stop string, and text once shown cannot be taken back. It is
# held back until the next token: if that completes the stop string it is never shown, otherwise it is
# released with what follows.
#
# </details>
#
# 5. With temperature 1.5 and top-p 0.9, transformers' order kept 6796 tokens and llama.cpp's kept 146.
#    Explain the difference.
#
# <details><summary>Answer</summary>
#
# Transformers divides by the temperature first: heat flattens the distribution, so the nucleus needs many
# more tokens to reach 0.9. llama.cpp cuts the model's own distribution first and only then heats the few
# survivors. Same settings, different text.
#
# </details>

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
# - The prompts of Steps 4 and 5 begin from Shakespeare: *"To be, or not to be"* is Hamlet's (*Hamlet*, Act 3,
#   Scene 1); Falstaff and Juliet are characters of *Henry IV* and *Romeo and Juliet*.
