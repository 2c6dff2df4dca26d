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
# # Chapter 2 — Temperature
#
# The model gives a score (a *logit*) to every token; softmax turns scores into probabilities.
# **Temperature** divides the logits before the softmax: `softmax(z / T)`.
# Below 1 it sharpens the distribution, above 1 it flattens it. We build it by hand on fixed toy
# logits, so every number here is exact, then look at what it does to the shipped model's distribution
# over all 50,257 tokens, and check that `minigpt.logits.apply_temperature` agrees.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
prompt = "ROMEO:"  # Step 6 samples continuations of it, Step 7 looks at the steps of its greedy continuation
seed = 42  # Step 6's random numbers

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

import minigpt
from minigpt.logits import apply_temperature
from minigpt.tokenizer import VOCAB_SIZE, decode, encode
from minigpt.viz import plot_distributions, plot_kept, save_figure

torch.manual_seed(123)
torch.set_num_threads(1)
default_run = (prompt, seed) == ("ROMEO:", 42)  # the checks of the default run's numbers

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__, "| minigpt", minigpt.__name__)

# %% [markdown]
# ## Step 1: softmax of four scores, at three temperatures

# %%
z = torch.tensor([0.5, 1.2, -1.0, 0.1])


def softmax_with_temperature(logits, T):
    scaled = logits / T  # NEW: the only change to a plain softmax
    # subtracting the largest score changes nothing mathematically, but keeps exp() finite:
    # at T = 0.01 the scores reach 675, and exp(675) overflows float32 to inf (inf / inf = nan)
    scaled = scaled - scaled.max()
    return torch.exp(scaled) / torch.exp(scaled).sum()


for T in (1.0, 0.5, 2.0):
    probs = softmax_with_temperature(z, T)
    print(f"T = {T:g}:", ", ".join(f"{p:.3f}" for p in probs.tolist()))
    # the same in float64: float32's exp differs between CPUs in the last bit, far below what we print
    torch.testing.assert_close(probs, torch.softmax(z.double() / T, dim=0).float(), atol=1e-6, rtol=0)

# %% [markdown]
# At T = 0.5 the largest score (1.2) takes 0.730 of the mass; at T = 2 it keeps only 0.382.

# %%
share = {T: softmax_with_temperature(z, T).max().item() for T in (0.5, 1.0, 2.0)}  # the largest score's share
assert share[0.5] > share[1.0] > share[2.0]  # colder: the favourite gains; hotter: it loses
print(", ".join(f"T = {T:g}: {p:.3f}" for T, p in share.items()))

# %% [markdown]
# ## Step 2: a nine-word vocabulary
#
# A toy model's next-token logits after *"every effort moves you"*.

# %%
vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])
print("argmax:", vocab[logits.argmax()])

temperatures = [0.1, 1.0, 5.0]  # coldest first: the panels below run from sharp to flat
dists = {f"T = {T}": softmax_with_temperature(logits, T) for T in temperatures}
for name, p in dists.items():
    print(f"{name:8}", " ".join(f"{w}={q:.3f}" for w, q in zip(vocab, p.tolist())))

# %%
fig = plot_distributions(dists, vocab, title="Temperature reshapes the next-token distribution",
                         xlabel="next token")
save_figure(fig, "02_temperature_bars")
plt.show()
print([ax.get_title() for ax in fig.axes])
assert [ax.get_xlabel() for ax in fig.axes] == ["next token"] * 3
assert [max(b.get_height() for b in ax.patches) for ax in fig.axes] == sorted(
    (max(b.get_height() for b in ax.patches) for ax in fig.axes), reverse=True)  # colder is sharper

# %% [markdown]
# ## Step 3: sampling 1,000 times
#
# `torch.multinomial` draws a token index with the given probabilities. With the seed fixed, the counts
# below are always the same.

# %%
def sample_counts(probs, n=1_000, seed=123):
    torch.manual_seed(seed)
    draws = [torch.multinomial(probs, num_samples=1).item() for _ in range(n)]
    return {vocab[i]: draws.count(i) for i in range(len(vocab)) if draws.count(i)}


print("T = 0.1", sample_counts(softmax_with_temperature(logits, 0.1)))
print("T = 1  ", sample_counts(softmax_with_temperature(logits, 1.0)))
print("T = 5  ", sample_counts(softmax_with_temperature(logits, 5.0)))

# %% [markdown]
# ## Step 4: entropy against temperature
#
# Entropy, `-Σ p log p`, measures how spread out a distribution is: 0 nats when one token is certain,
# `log 9 ≈ 2.197` nats when all nine are equally likely.

# %%
def entropy(p):
    p = p[p > 0]
    return -(p * p.log()).sum().item()


Ts = torch.logspace(-2, 2, 41)
H = [entropy(softmax_with_temperature(logits, T)) for T in Ts]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogx(Ts, H)
ax.axhline(torch.log(torch.tensor(9.0)).item(), ls="--", color="gray", label="uniform: log 9")
ax.set_xlabel("temperature T (log scale)")
ax.set_ylabel("entropy (nats)")
ax.set_title("Higher temperature, more uncertainty")
ax.legend()
fig.tight_layout()
save_figure(fig, "02_entropy_vs_temperature")
plt.show()
print(f"entropy at T=0.01: {H[0]:.3f}, T=1: {entropy(softmax_with_temperature(logits, 1.0)):.3f}, "
      f"T=100: {H[-1]:.3f}")
assert H[0] < 1e-3 and abs(H[-1] - math.log(9)) < 1e-3  # the two ends: certain, and nearly uniform

# %% [markdown]
# ## Step 5: the two limits
#
# As T → 0 all the mass goes to the argmax (greedy decoding); as T → ∞ the distribution becomes uniform.

# %%
cold = softmax_with_temperature(logits, 0.01)
hot = softmax_with_temperature(logits, 1e4)
print("T → 0: ", [round(p, 3) for p in cold.tolist()])
print("T → ∞: ", [round(p, 3) for p in hot.tolist()])
assert cold.argmax() == logits.argmax() and cold.max() > 0.9999
assert torch.allclose(hot, torch.full((9,), 1 / 9), atol=1e-3)

# %% [markdown]
# ## Step 6: real text at several temperatures
#
# The shipped `shakespeare` model continues the prompt of the parameters cell: same seed, three temperatures.

# %%
model = minigpt.load_model("shakespeare")
for T in (0.3, 1.0, 1.5):
    out = minigpt.generate(model, prompt, max_new_tokens=30, do_sample=True, temperature=T, seed=seed)
    print(f"--- T = {T}\n{out.text}\n")

# %% [markdown]
# ## Step 7: the real distribution, at a flat step and a peaked step
#
# The nine words were a toy; the model scores all 50,257 tokens. We take the greedy continuation of the prompt
# (60 tokens; from `"ROMEO:"` it is chapter 1's text) and recompute the logits of every step in one pass over
# it. Each step's entropy
# (Step 4) says how sure the model was; the rule below picks the flattest step (largest entropy) and the
# most peaked one (smallest).

# %%
text = minigpt.generate(model, prompt, max_new_tokens=60)  # greedy: chapter 1's text
n_prompt = len(encode(prompt))
with torch.no_grad():
    # position t predicts token t + 1: the rows from the prompt's last position on are the 60 steps' logits
    step_logits = model(text.ids)[0, n_prompt - 1 : -1]  # (60, 50257)
assert torch.equal(step_logits.argmax(dim=-1), torch.tensor(text.new_tokens[0]))  # greedy took each argmax
# entropy in float64: a probability of 0.9999 in float32 keeps only 3 digits of its distance from 1,
# and at the peaked step that distance is a good part of the entropy
step_H = torch.tensor([entropy(softmax_with_temperature(z.double(), 1.0)) for z in step_logits])
flat, peaked = int(step_H.argmax()), int(step_H.argmin())
greedy_p = torch.softmax(step_logits, dim=-1).max(dim=-1).values  # the probability of each token greedy took
for name, s in (("flat", flat), ("peaked", peaked)):
    context = decode(text.ids[0, : n_prompt + s].tolist())
    print(f"{name:6} step {s:2}: entropy {step_H[s]:.3g} nats after ...{context[-24:]!r}, "
          f"greedy took {decode([text.new_tokens[0][s]])!r} (p = {greedy_p[s]:.3f})")
if default_run:
    ranked = step_H.sort().values
    # clear winners: a CPU whose arithmetic differs in the 5th digit (chapter 9) picks the same two steps
    assert ranked[-1] - ranked[-2] > 0.1 and ranked[1] - ranked[0] > 0.01
    torch.testing.assert_close(step_H[[flat, peaked]], torch.tensor([6.5663, 0.0019547]), rtol=1e-4, atol=0)
    torch.testing.assert_close(greedy_p[[flat, peaked]], torch.tensor([0.064866, 0.99987]), rtol=1e-4, atol=0)
assert greedy_p[flat] < greedy_p[peaked]  # the sentences below: unsure at the flat step, sure at the peaked one
display(Markdown(
    f"At the flat step the model hesitates between many continuations: greedy's "
    f"`{decode([text.new_tokens[0][flat]])!r}` has only {greedy_p[flat]:.3f} of the mass. At the peaked step it is "
    f"{'all but certain' if greedy_p[peaked] > 0.99 else 'much surer'} of "
    f"`{decode([text.new_tokens[0][peaked]])!r}` ({greedy_p[peaked]:.3f}). Below, both steps at three "
    f"temperatures: the 15 most likely tokens (spaces drawn as ␣), and one hatched bar for the other "
    f"{VOCAB_SIZE - 15:,} tokens together, so the bars add up to 1."))

# %%
labels = [decode([i]) for i in range(VOCAB_SIZE)]  # every token's text, for the tick labels
temps = (0.5, 1.0, 1.5)
fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
for row, (name, s) in enumerate((("flat", flat), ("peaked", peaked))):
    for col, T in enumerate(temps):
        p = softmax_with_temperature(step_logits[s], T)
        plot_kept(p, labels, title=f"{name} step, T = {T:g}: entropy {entropy(p.double()):.3g} nats",
                  top=15, ax=axes[row, col])
        axes[row, col].set_ylim(0, 1.05)  # one scale for all six panels, so heights compare
fig.suptitle("Temperature on the real distribution: the flat step (top) and the peaked step (bottom), "
             "each at three temperatures")
fig.tight_layout()
save_figure(fig, "02_real_temperature")
plt.show()
rest = [1 - softmax_with_temperature(step_logits[flat], T).topk(15).values.sum().item() for T in temps]
newline = [softmax_with_temperature(step_logits[peaked], T).max().item() for T in temps]
print("flat step, the other 50,242 tokens hold:", ", ".join(f"{r:.3f} at T = {T:g}" for r, T in zip(rest, temps)))
print("peaked step, greedy's token holds:      ", ", ".join(f"{p:.3f} at T = {T:g}" for p, T in zip(newline, temps)))
if default_run:
    torch.testing.assert_close(torch.tensor(rest + newline),
                               torch.tensor([0.12623, 0.71987, 0.92640, 1.0, 0.99987, 0.97306]), rtol=1e-4, atol=0)
rest_bars = [ax.patches[-1] for ax in axes[0]]  # the rest bar's top part: it ends at the rest's mass
assert [round(b.get_y() + b.get_height(), 5) for b in rest_bars] == [round(r, 5) for r in rest]
assert all(abs(sum(b.get_height() for b in ax.patches) - 1) < 1e-4 for ax in axes.flat)  # each panel adds up to 1

# %%
assert rest[0] < rest[1] < rest[2] and newline[0] >= newline[1] >= newline[2]  # hotter: the tail gains, the top loses
display(Markdown(
    f"At the flat step temperature decides whether we sample from a handful of words or from the whole "
    f"vocabulary: at T = {temps[0]:g} the 15 most likely tokens hold {1 - rest[0]:.3f} of the mass, at "
    f"T = {temps[-1]:g} only {1 - rest[-1]:.3f}, and the other {VOCAB_SIZE - 15:,} tokens (the long tail) the "
    f"remaining {rest[-1]:.3f}. At the peaked step greedy's token keeps {newline[-1]:.3f} even at T = {temps[-1]:g}: "
    f"temperature rescales log-odds, and these log-odds are large. One temperature for the whole text is too hot "
    f"for one step or too cold for another; chapters 3 and 4 cut the tail instead."))

# %% [markdown]
# ## The library's version
#
# `minigpt.logits.apply_temperature` divides logits by T; `generate(..., temperature=T)` applies it
# before sampling. Our hand-built softmax agrees with it, on the nine words and on Step 7's two real steps.

# %%
for T in temperatures:
    library = torch.softmax(apply_temperature(logits.unsqueeze(0), T), dim=-1)[0]
    torch.testing.assert_close(library, softmax_with_temperature(logits, T), atol=1e-6, rtol=0)
    # Step 7's two steps, in float64: torch.softmax and our exp / sum round differently, and in float32 that
    # difference reaches a few 1e-6 on a real step; in float64 it is far below what any check here needs
    real = torch.softmax(apply_temperature(step_logits[[flat, peaked]].double(), T), dim=-1)
    for got, s in zip(real, (flat, peaked)):
        torch.testing.assert_close(got, softmax_with_temperature(step_logits[s].double(), T), atol=1e-12, rtol=1e-9)
print("hand-built temperature == minigpt.logits.apply_temperature")

# %% [markdown]
# ## Try it
#
# Open the decoding explorer on this chapter's example (in Jupyter; run as a plain script, this line makes the
# widget and shows nothing). Move the temperature slider and watch the flat step's bars flatten or sharpen;
# press Greedy or Sample to go on, or click any bar to follow that token. Every number in it comes from
# `minigpt.logits.process_logits`, the functions this chapter checked.

# %%
# NBVAL_IGNORE_OUTPUT
# why: a live widget: its output is the id Jupyter gives it, new on every run
# top_k=0: the explorer starts where `minigpt generate` samples (top-k 50); here temperature acts alone
minigpt.explore(model, decode(text.ids[0, : n_prompt + flat].tolist()), temperature=1.5, top_k=0)

# %% [markdown]
# ## Recap
#
# **What we built.** Temperature by hand: divide the logits by T, then softmax. We watched it on four scores,
# on a nine-word vocabulary, in many seeded draws and on the model's real distribution over all 50,257 tokens.
# The library's match is `minigpt.logits.apply_temperature`, which agreed with our hand-built version; when
# generating, `minigpt.generate(model, prompt, do_sample=True, temperature=T)` applies it before it samples.
#
# **Check yourself.**
#
# 1. Predict: you lower the temperature from 1 to 0.5. Does the most likely token's probability go up or
#    down? Check your answer against Step 1.
#
# <details><summary>Answer</summary>
#
# Up. Dividing by a number below 1 stretches the gaps between the scores, so the largest one takes more of
# the mass: 0.515 at T = 1, 0.730 at T = 0.5 (and only 0.382 at T = 2).
#
# </details>
#
# 2. Two tokens have logits 1 and 0. How many times more likely is the first one at T = 1, and at T = 0.5?
#
# <details><summary>Answer</summary>
#
# Softmax makes the ratio $e^{1 - 0} = e \approx 2.7$ at T = 1. At T = 0.5 the logits become 2 and 0, so the
# ratio is $e^{2} \approx 7.4$. Halving T doubles the gap between the logits.
#
# </details>
#
# 3. What happens to the distribution as T → 0, and as T → ∞? Name the decoding method each limit is.
#
# <details><summary>Answer</summary>
#
# As T → 0 all the mass goes to the argmax: greedy decoding. As T → ∞ every token gets the same probability:
# uniform sampling, whose entropy for nine words is `log 9`, the 2.197 nats Step 4 printed.
#
# </details>
#
# 4. At T = 1.5 the model wrote odd words ("furnace Tarquin bleed"). Use Step 7's flat step to explain why.
#
# <details><summary>Answer</summary>
#
# At the flat step the tokens outside the top few (the other 50,242) hold 0.926 of the mass at T = 1.5,
# against 0.126 at T = 0.5. Each of them is unlikely, but there are so many that a draw lands among them most
# of the time.
#
# </details>
#
# 5. At the peaked step, greedy's token still holds 0.973 at T = 1.5. Why does temperature change so little
#    there?
#
# <details><summary>Answer</summary>
#
# Its logit is far above all the others. Dividing every logit by 1.5 shrinks that gap a little, but it stays
# large, so the top token keeps almost all the mass.
#
# </details>

# %% [markdown]
# ## Sources
#
# - **The nine-word vocabulary and its logits** after *"every effort moves you"*, the seed 123, the 1,000 draws and
#   the temperatures 1, 0.1 and 5 (Steps 2 and 3): Raschka, S. (2024). *Build a Large Language Model (From Scratch)*.
#   Manning, chapter 5. Code: <https://github.com/rasbt/LLMs-from-scratch>.
# - **Temperature**, from the Boltzmann distribution of statistical physics as used in Boltzmann machines: Ackley, D.
#   H., Hinton, G. E., & Sejnowski, T. J. (1985). *A Learning Algorithm for Boltzmann Machines*. Cognitive Science,
#   9(1), 147–169.
