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
# # Chapter 3 — Top-k sampling
#
# Sampling from the full distribution sometimes picks a token from the long, unreliable tail. **Top-k**
# keeps only the k most likely tokens: every other logit becomes −∞, so softmax gives it probability
# exactly 0 and the survivors are renormalised. We build it on the nine-word toy of chapter 2, then watch
# a fixed k on the shipped model's 50,257 tokens, at a step where it is unsure and one where it is sure.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
sample_prompt = "JULIET:\n"  # Step 6 samples three continuations of it
seed = 7  # Step 6's random numbers
prompt = "ROMEO:"  # Step 7 looks at the steps of its greedy continuation
k = 10  # Step 7's top-k

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

import minigpt
from minigpt.logits import apply_temperature, top_k_filter
from minigpt.tokenizer import VOCAB_SIZE, decode, encode
from minigpt.viz import DROPPED, KEPT, plot_truncation, save_figure, token_label

torch.manual_seed(123)
torch.set_num_threads(1)
default_run = (sample_prompt, seed, prompt, k) == ("JULIET:\n", 7, "ROMEO:", 10)  # the checks of its numbers

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: find the k largest logits

# %%
vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])
top_logits, top_pos = torch.topk(logits, 3)
print("top-3 logits:   ", top_logits.tolist())
print("top-3 positions:", top_pos.tolist(), [vocab[i] for i in top_pos])

# %% [markdown]
# ## Step 2: mask everything below the k-th largest with −∞

# %%
def top_k_by_hand(logits, k):
    kth_largest = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth_largest, float("-inf"))  # NEW: the whole trick


masked = top_k_by_hand(logits, 3)
print(masked.tolist())

# %% [markdown]
# ## Step 3: softmax renormalises the survivors
#
# exp(−∞) = 0, so the masked tokens get probability 0 and the three survivors now share all the mass.

# %%
full = torch.softmax(logits, dim=-1)
truncated = torch.softmax(masked, dim=-1)
for w, p, q in zip(vocab, full.tolist(), truncated.tolist()):
    print(f"{w:8} {p:.3f} → {q:.3f}")
print(f"sum of kept probabilities before: {full[top_pos].sum():.3f}, after: {truncated.sum():.3f}")
# renormalising divides the survivors by the mass they had: the exact check behind the rounded print
torch.testing.assert_close(truncated[top_pos], full[top_pos] / full[top_pos].sum(), atol=1e-6, rtol=0)

# %% [markdown]
# The six words top-3 removes held little of the mass, so the three survivors hardly grow: "forward" goes
# from 0.572 to 0.578. Renormalising divides each survivor by the mass the survivors held, so it shows where
# the cut removes more. Flatten the distribution first (temperature 2, chapter 2) and cut again:

# %%
T_flat = 2.0  # a flatter distribution of the same nine words
full_T = torch.softmax(logits / T_flat, dim=-1)
truncated_T = torch.softmax(top_k_by_hand(logits / T_flat, 3), dim=-1)
kept_mass = full_T[top_pos].sum()  # the survivors' mass before the cut: each grows by 1 / kept_mass
print(f"T = {T_flat:g}: top-3 removes {1 - kept_mass:.3f} of the mass; each survivor grows by "
      f"1 / {kept_mass:.3f} = {1 / kept_mass:.3f}")
for i in top_pos:
    print(f"{vocab[i]:8} {full_T[i]:.3f} → {truncated_T[i]:.3f}")
torch.testing.assert_close(truncated_T[top_pos], full_T[top_pos] / kept_mass, atol=1e-6, rtol=0)
assert torch.equal(truncated_T.topk(3).indices, top_pos)  # the same three survive: T keeps the order
assert 1 - kept_mass > 10 * (1 - full[top_pos].sum())  # the cut removes far more here than at T = 1

# %%
fig = plot_truncation(full_T, truncated_T, vocab,
                      title=f"Top-k = 3 at temperature {T_flat:g}: the survivors share the removed mass",
                      after_title=f"after: renormalised, each survivor × 1 / {kept_mass:.3f} = {1 / kept_mass:.3f}")
save_figure(fig, "03_top_k")
plt.show()
left, right = fig.axes
kept_color = left.patches[top_pos[0]].get_facecolor()
grey = [w for w, bar in zip(vocab, left.patches) if bar.get_facecolor() != kept_color]
print("grey (removed):", grey)
assert sorted(set(vocab) - set(grey)) == sorted(vocab[i] for i in top_pos)  # coloured: exactly the top 3
assert [bar.get_height() for bar in right.patches[:9]] == truncated_T.tolist()  # right: the renormalised top 3
assert all(right.patches[i].get_height() > left.patches[i].get_height() for i in top_pos)  # each survivor grew

# %% [markdown]
# ## Step 4: ties at the boundary
#
# With `logits < kth_largest`, a token *equal* to the k-th largest logit survives, so ties can keep more
# than k tokens. transformers does the same, and so does minigpt.

# %%
tied = torch.tensor([3.0, 2.0, 2.0, 1.0])
print(top_k_by_hand(tied, 2).tolist())

# %% [markdown]
# ## Step 5: top-k together with temperature
#
# Temperature first (it reshapes), then top-k (it truncates). Dividing by T does not change which
# tokens are largest, so the survivors are the same; only their shares change.

# %%
for T in (0.5, 1.0, 2.0):
    probs = torch.softmax(top_k_by_hand(logits / T, 3), dim=-1)
    print(f"T = {T}: " + ", ".join(f"{vocab[i]}={probs[i]:.3f}" for i in top_pos))

# %% [markdown]
# ## Step 6: real text
#
# The shipped `shakespeare` model continues the prompt of the parameters cell three times, with the same seed
# and three values of k.

# %%
model = minigpt.load_model("shakespeare")
for top_k in (1, 5, 50):  # top_k = 1 is greedy decoding: the same text for any seed
    out = minigpt.generate(model, sample_prompt, max_new_tokens=30, do_sample=True, top_k=top_k, seed=seed)
    print(f"--- top_k = {top_k}\n{out.text}\n")

# %% [markdown]
# ## Step 7: one k for a flat step and a peaked step
#
# As in chapter 2 (Step 7): the greedy continuation of the prompt (chapter 1's text from `"ROMEO:"`), the
# logits of every one of its 60 steps from one pass over it, and the flattest and the most peaked step,
# picked by their entropy.

# %%
text = minigpt.generate(model, prompt, max_new_tokens=60)  # greedy: chapter 1's text
n_prompt = len(encode(prompt))
with torch.no_grad():
    step_logits = model(text.ids)[0, n_prompt - 1 : -1]  # (60, 50257): position t predicts token t + 1
log_p = torch.log_softmax(step_logits.double(), dim=-1)  # float64, for the peaked step (chapter 2, Step 7)
step_H = -(log_p.exp() * log_p).sum(dim=-1)  # each step's entropy, in nats
flat, peaked = int(step_H.argmax()), int(step_H.argmin())
for name, s in (("flat", flat), ("peaked", peaked)):
    context = decode(text.ids[0, : n_prompt + s].tolist())
    print(f"{name:6} step {s:2}: entropy {step_H[s]:.3g} nats after ...{context[-24:]!r}")
if default_run:
    ranked = step_H.sort().values
    assert ranked[-1] - ranked[-2] > 0.1 and ranked[1] - ranked[0] > 0.01  # clear winners on any CPU
    torch.testing.assert_close(step_H[[flat, peaked]].float(), torch.tensor([6.5663, 0.0019547]), rtol=1e-4, atol=0)

# %% [markdown]
# Top-k at both steps, by hand (Step 2), with the k of the parameters cell. Each panel shows the 20 most
# likely tokens, kept in colour and dropped in grey (hatched), and then, on the same linear axis, two bars
# for the whole vocabulary: the mass of all the kept tokens together and of all the dropped ones together.
# The two add up to 1, so the figure shows how much of the distribution the cut throws away.

# %%
labels = [decode([i]) for i in range(VOCAB_SIZE)]  # every token's text, for the tick labels
probs = torch.softmax(step_logits, dim=-1)  # (60, 50257)
keeps = {s: top_k_by_hand(step_logits[s], k) > float("-inf") for s in (flat, peaked)}  # (V,) each: what top-k keeps
top = 20  # tokens drawn one by one


def mass_label(m):
    return f"{m:.3f}" if m >= 1e-3 else f"{m:.3g}"  # tiny masses in 3 significant digits


fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), sharey=True)
for ax, (name, s) in zip(axes, (("flat", flat), ("peaked", peaked))):
    p, kept = probs[s], keeps[s]
    order = p.argsort(descending=True)[:top]  # (20,) the most likely tokens, most likely first
    bars = ax.bar(range(top), p[order], color=[KEPT if kept[i] else DROPPED for i in order])
    for bar, i in zip(bars, order):
        bar.set_hatch("" if kept[i] else "//")  # dropped: grey and hatched, so it shows without colour
    # the whole vocabulary in two bars: everything kept, everything dropped; together they are 1
    totals = [p[kept].sum().item(), p[~kept].sum().item()]
    mass = ax.bar([top + 1, top + 2.4], totals, width=1, color=[KEPT, DROPPED], hatch=["", "//"], edgecolor="white")
    ax.bar_label(mass, [mass_label(m) for m in totals], fontsize=9)
    ax.axvline(top, color="black", lw=0.8)  # tokens on the left, sums over the vocabulary on the right
    ticks = [token_label(labels[i]) for i in order.tolist()]
    ticks += [f"all {int(kept.sum()):,} kept", f"all {int((~kept).sum()):,} dropped"]
    ax.set_xticks([*range(top), top + 1, top + 2.4], ticks, rotation=60, ha="right", fontsize=8)
    for tick, on in zip(ax.get_xticklabels(), [*kept[order].tolist(), True, True]):
        tick.set_color("black" if on else "gray")
    ax.set_xlabel("the 20 most likely tokens, most likely first  |  the whole vocabulary")
    ax.set_title(f"{name} step (entropy {step_H[s]:.3g} nats): top-k = {k} keeps {mass_label(totals[0])} of the mass")
    ax.set_ylim(0, 1.1)
    if name == "peaked":  # the kept tokens after the first are too light to see: say where they are
        n_extra = int(kept[order[1:]].sum())
        ax.annotate(f"the other {n_extra} kept tokens: {mass_label(p[order[1:]][kept[order[1:]]].sum().item())} "
                    "together,\ntoo little to see on this axis", xy=(n_extra / 2 + 0.5, 0.01), xytext=(3, 0.5),
                    arrowprops=dict(arrowstyle="->", color="black"), fontsize=9)
axes[0].set_ylabel("probability")
axes[0].legend([plt.Rectangle((0, 0), 1, 1, color=KEPT),
                plt.Rectangle((0, 0), 1, 1, fc=DROPPED, hatch="//", ec="white")],
               ["kept by top-k", "dropped by top-k"], loc="upper center")
step_kept = {s: probs[s][keeps[s]].sum().item() for s in (flat, peaked)}  # what the kept tokens hold, per step
fig.suptitle(f"One k for both steps: top-{k} keeps {mass_label(step_kept[flat])} of the flat step's mass "
             f"and {mass_label(step_kept[peaked])} of the peaked step's")
fig.tight_layout()
save_figure(fig, "03_real_top_k")
plt.show()
for ax, s in zip(axes, (flat, peaked)):  # the two bars on the right are the kept and the dropped mass
    kept_bar, dropped_bar = ax.patches[-2:]
    assert abs(kept_bar.get_height() - probs[s][keeps[s]].sum().item()) < 1e-6
    assert abs(kept_bar.get_height() + dropped_bar.get_height() - 1) < 1e-4
print([ax.get_title() for ax in axes])

# %%
flat_sorted, peaked_sorted = probs[flat].sort(descending=True).values, probs[peaked].sort(descending=True).values
kept_flat, kept_peaked = probs[flat][keeps[flat]].sum().item(), probs[peaked][keeps[peaked]].sum().item()
edge = (flat_sorted[k] / flat_sorted[k - 1]).item()  # the first token dropped against the last one kept
top_50 = flat_sorted[:50].sum().item()  # transformers' default k
extra = peaked_sorted[1:k].sum().item()  # the peaked step: what top-k keeps besides its most likely token
# a sample from the kept tokens picks one of those extras once in this many draws
one_in = round(1 / extra, -2) if extra > 0 else float("inf")
print(f"flat step:   top-{k} keeps {kept_flat:.3f} of the mass and drops {1 - kept_flat:.3f}; each kept token is "
      f"multiplied by 1 / {kept_flat:.3f} = {1 / kept_flat:.3g}; top-50 keeps {top_50:.3f}")
print(f"             the first token dropped is {edge:.3f} x as likely as the last kept")
print(f"peaked step: top-{k} keeps {kept_peaked:.3f} of the mass; the {k - 1} kept besides the most likely "
      f"token hold {extra:.3g} together, one draw in {one_in:,.0f}")
if default_run:
    torch.testing.assert_close(torch.tensor([kept_flat, top_50, edge, kept_peaked, extra]),
                               torch.tensor([0.23545, 0.44616, 0.97589, 0.99993, 5.3897e-05]), rtol=1e-4, atol=0)
    # the sentences below: most of the flat step's mass cut, a near tie at the edge, and at the peaked step
    # extras so light that a sampler would take one of them less than once in 10,000 draws
    assert kept_flat < 0.5 and top_50 < 0.5 and edge > 0.9 and one_in > 10_000

# %%
# the conclusions, in words chosen by the numbers above (true for any prompt and k of the parameters cell)
flat_context = decode(text.ids[0, n_prompt + flat - 4 : n_prompt + flat].tolist())  # the 4 tokens before it
peaked_context = decode(text.ids[0, n_prompt + peaked - 4 : n_prompt + peaked].tolist())
favourite = token_label(decode([int(probs[peaked].argmax())]))
display(Markdown(
    f"At the flat step (after *{flat_context.strip()!r}*) top-{k} keeps {kept_flat:.3f} of the mass and throws "
    f"away {1 - kept_flat:.3f}, {'most' if kept_flat < 0.5 else 'less than half'} of what the model finds "
    f"plausible; and it draws its line between two tokens that are "
    f"{'almost equally likely' if edge > 0.9 else 'unequal'}: the first one dropped is {edge:.3f} x as likely as "
    f"the last one kept. Renormalised, each survivor is multiplied by 1 / {kept_flat:.3f} = {1 / kept_flat:.3g}. "
    f"Transformers' default k = 50 keeps {top_50:.3f} there.\n\n"
    f"At the peaked step (after *{peaked_context.strip()!r}*, where `{favourite}` has {peaked_sorted[0]:.3f}) "
    f"top-{k} also keeps {k - 1} tokens besides it, but together they hold {extra:.3g} of the mass: a sampler "
    f"picks one of them once in about {one_in:,.0f} draws. "
    + ("There the fixed k is all but harmless: k = 1 would give the same text in nearly every sample. So a fixed "
       "k does its damage where the model is unsure, " if one_in > 1_000 else
       "Even there the extra tokens are drawn now and then, ")
    + "and the count k says nothing about how much of the distribution it keeps. Top-p (chapter 4) sets the "
    "cut by probability mass instead of by count."))

# %% [markdown]
# ## The library's version

# %%
for k_toy in (1, 3, 5, 9):
    torch.testing.assert_close(top_k_filter(logits.unsqueeze(0), k_toy)[0], top_k_by_hand(logits, k_toy))
assert torch.equal(top_k_filter(tied.unsqueeze(0), 2)[0], top_k_by_hand(tied, 2))
library = torch.softmax(top_k_filter(apply_temperature(logits.unsqueeze(0), 0.5), 3), dim=-1)[0]
torch.testing.assert_close(library, torch.softmax(top_k_by_hand(logits / 0.5, 3), dim=-1))
real = step_logits[[flat, peaked]]  # Step 7's two steps
assert torch.equal(top_k_filter(real, k), torch.stack([top_k_by_hand(row, k) for row in real]))
print("hand-built top-k == minigpt.logits.top_k_filter")

# %% [markdown]
# ## Try it
#
# Open the decoding explorer on this chapter's example (in Jupyter; run as a plain script, this line makes the
# widget and shows nothing). Top-k starts at the chapter's k at the flat step: move it and watch how much mass
# the kept bars
# hold, then step on to a peaked step and see what the same k keeps there. Every number in it comes from
# `minigpt.logits.process_logits`, the functions this chapter checked.

# %%
# NBVAL_IGNORE_OUTPUT
# why: a live widget: its output is the id Jupyter gives it, new on every run
# temperature=1: the explorer starts where `minigpt generate` samples (T = 0.8); here top-k acts alone
minigpt.explore(model, decode(text.ids[0, : n_prompt + flat].tolist()), temperature=1, top_k=k)

# %% [markdown]
# ## Recap
#
# **What we built.** Top-k by hand: find the k largest logits, set every logit below the k-th largest to −∞,
# and let softmax renormalise the survivors. The library's match is `minigpt.logits.top_k_filter`, which
# gave the same logits as ours (on the toy, with ties, after temperature and at the real steps); when
# generating, `minigpt.generate(model, prompt, do_sample=True, top_k=k)` applies it before it samples.
#
# **Check yourself.**
#
# 1. At T = 2, top-3 removes 0.108 of the nine-word mass, and "forward" had 0.421. What does "forward"
#    have after the cut?
#
# <details><summary>Answer</summary>
#
# Renormalising divides each survivor by the mass the survivors held: $0.421 / (1 - 0.108) = 0.421 / 0.892
# \approx 0.472$, the number Step 3 printed.
#
# </details>
#
# 2. Predict what top-k with `k = 2` keeps from the logits `[3.0, 2.0, 2.0, 1.0]`, and why.
#
# <details><summary>Answer</summary>
#
# Three tokens: `[3.0, 2.0, 2.0, -inf]`. The test is `logits < kth_largest`, and the k-th largest is 2.0,
# so a token *equal* to it survives too. Ties at the boundary can keep more than k tokens.
#
# </details>
#
# 3. You apply temperature and then top-k. Can changing the temperature change *which* tokens top-k keeps?
#
# <details><summary>Answer</summary>
#
# No. Dividing every logit by the same positive T keeps their order, so the k largest stay the same tokens;
# only their shares change (Step 5).
#
# </details>
#
# 4. The same top-10 keeps 0.235 of the mass at the flat step and 1.000 at the peaked step. What does that
#    say about a fixed k?
#
# <details><summary>Answer</summary>
#
# A fixed k ignores the shape of the distribution. At the flat step it throws away most of the mass,
# including tokens almost as likely as the last one kept (the first dropped was 0.976 x as likely). At the
# peaked step nine of its ten tokens hold almost nothing, so the cut changes nothing there.
#
# </details>
#
# 5. What decoding method is top-k sampling with `top_k = 1`?
#
# <details><summary>Answer</summary>
#
# Greedy decoding: only the argmax survives, so it gets probability 1 and every draw picks it (but for a
# tie at the top).
#
# </details>

# %% [markdown]
# ## Sources
#
# - **The nine-word vocabulary and its logits** after *"every effort moves you"*, and k = 3: Raschka, S. (2024).
#   *Build a Large Language Model (From Scratch)*. Manning, chapter 5. (As in chapter 2.)
# - **Top-k sampling**: Fan, A., Lewis, M., & Dauphin, Y. (2018). *Hierarchical Neural Story Generation*. ACL 2018.
#   arXiv:1805.04833.
