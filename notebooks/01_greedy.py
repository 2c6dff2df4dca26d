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
# # Chapter 1 — Greedy decoding
#
# The simplest way to generate: at every step take the single most likely next token (the argmax),
# append it, and ask again. We write that loop by hand, look at the distributions it picks from, watch
# it fall into a loop, multiply its step probabilities into the probability of a whole line (the chain
# rule), and see on a small tree why "most likely at each step" is not "most likely overall".

# %% tags=["parameters"]
# Try your own: change the prompt and run the chapter again.
prompt = "ROMEO:"  # greedy continues it (Steps 1-4 and the library's version)

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

import minigpt
from minigpt.tokenizer import VOCAB_SIZE, decode, encode
from minigpt.viz import DROPPED, KEPT, OKABE_ITO, plot_distribution, plot_token_tree, save_figure

torch.manual_seed(0)
torch.set_num_threads(1)
default_run = prompt == "ROMEO:"  # the checks of the default run's numbers

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


prompt_ids = torch.tensor([encode(prompt)])  # (1, P)
ids = greedy(model, prompt_ids, max_new_tokens=40)
print(ids[0, prompt_ids.size(1):].tolist())
print(decode(ids[0].tolist()))

# %% [markdown]
# ## Step 2: the distribution behind each argmax
#
# At every step the model gives a probability to each of the 50,257 tokens, and greedy keeps only the
# largest. How sure was it? We recompute the distribution each step chose from (the model run on the
# prompt plus the tokens chosen so far, exactly the loop's input) and look at a few steps.

# %%
P = prompt_ids.size(1)  # prompt length: new token s sits at column P + s
chosen = ids[0, P:]  # (40,) the tokens the loop took
with torch.no_grad():  # step s's distribution: one pass over the first P + s tokens, as in the loop
    step_probs = torch.stack([torch.softmax(model(ids[:, :t])[0, -1], dim=-1) for t in range(P, ids.size(1))])
assert torch.equal(step_probs.argmax(dim=-1), chosen)  # each token the loop took is its step's argmax
chosen_p = step_probs[torch.arange(len(chosen)), chosen]  # (40,) the probability of each pick

lead = chosen_p - step_probs.topk(2).values[:, 1]  # (40,) how far each pick beat the runner-up
step_H = -(step_probs * step_probs.clamp_min(1e-30).log()).sum(dim=-1)  # (40,) each step's entropy (nats)


def first_not_shown(order, shown):
    return next(s for s in order.tolist() if s not in shown)


# four steps, chosen by rule: the first, the nearest tie, the flattest distribution, the surest pick
shown = [0]
for order in (lead.argsort(), step_H.argsort(descending=True), chosen_p.argsort(descending=True)):
    shown.append(first_not_shown(order, shown))
first, tie, flattest, surest = shown
for s in shown:
    print(f"step {s:2}: picks {decode([chosen[s].item()])!r:7} p = {chosen_p[s]:.3f}  "
          f"(lead over the runner-up {lead[s]:.3f})")
below_half = int((chosen_p < 0.5).sum())
print(f"the pick had less than half the probability at {below_half} of {len(chosen)} steps; "
      f"median p of a pick {chosen_p.median():.3f}")
# the same probabilities as the library's own record of each pick (the log-prob of the chosen token)
scored = minigpt.generate(model, prompt, max_new_tokens=40, return_scores=True)
assert scored.new_tokens[0] == chosen.tolist()
torch.testing.assert_close(chosen_p, torch.tensor(scored.token_logprobs[0]).exp(), rtol=1e-4, atol=0)
if default_run:
    assert shown == [0, 1, 7, 39] and below_half == 37 and chosen_p.max() < 0.81 and lead[1] < 0.005

# %%
# per step: the ten most likely tokens (greedy's pick in vermillion, outlined) and one grey bar for the rest
fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharey=True)
for ax, s in zip(axes.flat, shown):
    top = step_probs[s].topk(10)
    rest = 1 - top.values.sum()
    labels = [decode([i]) for i in top.indices.tolist()]
    context = decode(ids[0, : P + s].tolist())
    tail = context if len(context) <= 16 else "…" + context[-15:]
    plot_distribution(torch.cat([top.values, rest.reshape(1)]), [*labels, "(others)"], ax=ax,
                      title=f"step {s}: after {tail!r}", highlight=range(10), xlabel="next token",
                      show_spaces=True)
    ax.patches[0].set(facecolor=OKABE_ITO["vermillion"], edgecolor="black", linewidth=1.5)  # the argmax: first
    ax.bar_label(ax.containers[0], [f"{top.values[0]:.3f}"] + [""] * 10, fontsize=8)
    ax.patches[-1].set(facecolor=DROPPED, hatch="//", edgecolor="white")
ax.set_ylim(0, 1)  # shared by all four: the same height means the same probability
handles = [plt.Rectangle((0, 0), 1, 1, fc=OKABE_ITO["vermillion"], ec="black", lw=1.5),
           plt.Rectangle((0, 0), 1, 1, color=KEPT), plt.Rectangle((0, 0), 1, 1, fc=DROPPED, hatch="//", ec="white")]
fig.legend(handles, ["greedy's pick (the argmax)", "the next 9 most likely",
                    f"(others): the other {VOCAB_SIZE - 10:,} tokens together"],
           loc="lower center", ncol=3)
fig.suptitle(f"The distribution greedy picks from at four steps of its continuation of {prompt!r}")
fig.tight_layout(rect=(0, 0.05, 1, 1))  # leave the bottom strip to the legend
save_figure(fig, "01_argmax_steps")
plt.show()
heights = [[bar.get_height() for bar in ax.patches] for ax in axes.flat]
assert all(abs(sum(h) - 1) < 1e-4 for h in heights)  # each panel's bars add up to 1
assert all(h[0] == max(h[:10]) for h in heights)  # the outlined bar (the pick) is the tallest of the ten
print([ax.get_title() for ax in axes.flat])

# %%
# what the four panels show, in words chosen by the numbers (true for any prompt)
runner_up = decode([int(step_probs[tie].topk(2).indices[1])])
display(Markdown(
    f"Greedy's choices are {'rarely' if below_half > len(chosen) / 2 else 'not always'} confident: at "
    f"{below_half} of its {len(chosen)} steps the pick held less than half of the probability, and half of its "
    f"picks hold at most {chosen_p.median():.3f}. At step {tie} {decode([chosen[tie].item()])!r} beats "
    f"{runner_up!r} by only {lead[tie]:.3f}, yet greedy drops {runner_up!r} for good. And it writes every token "
    f"with the same finality: {decode([chosen[flattest].item()])!r} at step {flattest}, where the distribution "
    f"is flattest, with {chosen_p[flattest]:.3f}, as surely as {decode([chosen[surest].item()])!r} at step "
    f"{surest}, its surest pick, with {chosen_p[surest]:.3f}."))
assert lead[tie] == lead.min() and chosen_p[surest] == chosen_p.max()  # the steps the sentences name

# %% [markdown]
# ## Step 3: the repetition loop
#
# Greedy decoding is deterministic: once it produces a stretch of text it has produced before, the
# context looks the same and it picks the same tokens again. Let us find the first repeated 4-gram.

# %%
long = greedy(model, prompt_ids, max_new_tokens=80)[0, P:].tolist()


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
# ## Step 4: the probability of a whole continuation (the chain rule)
#
# The model only ever gives the probability of *one* next token. The probability of a whole
# continuation $w_1 \dots w_T$ (after the prompt) is the product of its steps, each conditioned on
# everything before it:
#
# $$P(w_1 \dots w_T) = \prod_{t=1}^{T} P(w_t \mid w_{<t}), \qquad
#   \log P(w_1 \dots w_T) = \sum_{t=1}^{T} \log P(w_t \mid w_{<t}).$$
#
# We can get the factors two ways: from the loop, one pass per step (Step 2's `chosen_p`), or from **one**
# pass over the finished sequence, because a causal model's position $t$ sees only the tokens up to $t$:
# its output there *is* $P(w_{t+1} \mid w_{\le t})$. Both give the same number for the first line greedy wrote.

# %%
# the first line greedy wrote: its tokens up to the next newline (the first token may be the prompt's newline)
line = next((i for i, t in enumerate(chosen.tolist()) if i > 0 and "\n" in decode([t])), len(chosen))
product = math.prod(chosen_p[:line].tolist())  # the chain rule, one factor per step of the loop
with torch.no_grad():
    log_probs = torch.log_softmax(model(ids[:, : P + line])[0], dim=-1)  # (P + line, V), one pass
# position t predicts token t + 1: the new tokens P … P+line-1 are read at positions P-1 … P+line-2
log_sum = log_probs[P - 1 : -1].gather(1, chosen[:line, None]).sum().item()
print(f"line: {decode(chosen[:line].tolist())!r}")
print(f"product of the {line} step probabilities: {product:.3g}")
print(f"exp(sum of log-probs), one pass:      {math.exp(log_sum):.3g}   (sum of log-probs {log_sum:.3g})")
assert math.isclose(product, math.exp(log_sum), rel_tol=1e-4)
if default_run:  # the sentence below: one short line is already improbable
    assert line == 9 and math.isclose(log_sum, -18.33, abs_tol=0.01) and product < 1e-3

# %% [markdown]
# One short line already has a probability far below one in a thousand (printed above): any particular
# long text is improbable, so decoders compare **sums of log-probs** (which do not underflow) rather
# than products. Greedy maximises each factor in turn; nothing in it looks at the product. The next
# step shows that the two are not the same.
#
# ## Step 5: greedy is short-sighted
#
# A two-step toy tree whose edges are the chain rule's factors. After "The", greedy takes "nice" (0.5)
# and then "woman" (0.4), so $P(\text{nice woman} \mid \text{The}) = P(\text{nice} \mid \text{The})
# \cdot P(\text{woman} \mid \text{The nice}) = 0.5 \times 0.4 = $ **0.20**. But "The dog has" has
# probability 0.4 × 0.9 = **0.36**. Greedy never looks at it, because "dog" lost the first factor.

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
greedy_text, best_text = (f"'The {' '.join(words)}' ({p:.2f})" for words, p in (g, b))
fig = plot_token_tree(tree, root="The", title=f"Greedy picks {greedy_text}, not {best_text}",
                      highlight=[g[0], b[0]], labels=[f"greedy: {greedy_text}", f"best path: {best_text}"])
save_figure(fig, "01_greedy_tree")
plt.show()
print([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
assert (g[0], b[0]) == (["nice", "woman"], ["dog", "has"])

# %% [markdown]
# ## The library's version
#
# `minigpt.generate` with its defaults is greedy decoding (and uses a KV cache, chapter 7, so it does not
# recompute the whole sequence each step). Same tokens as our loop:

# %%
library = minigpt.generate(model, prompt, max_new_tokens=40)
assert library.ids[0].tolist() == ids[0].tolist()
print("hand-built greedy == minigpt.generate (greedy):", library.new_tokens[0][:10], "...")

# %% [markdown]
# ## Recap
#
# **What we built.** A greedy decoder by hand: run the model on the sequence so far, take the argmax of the
# last position's logits, append it, repeat. We also multiplied the step probabilities into the probability
# of a whole line (the chain rule), once from the loop and once from a single pass. The library's match is
# `minigpt.generate(model, prompt, max_new_tokens=40)`: with its defaults it is greedy decoding, and it gave
# the same tokens as our loop (it also keeps a KV cache, chapter 7, so it does not recompute the whole
# sequence each step).
#
# **Check yourself.**
#
# 1. After `'ROMEO:'` greedy writes "And I am a man, and a man," again and again. Why can greedy not get out
#    of such a loop once it starts?
#
# <details><summary>Answer</summary>
#
# Greedy is deterministic: it has no randomness, so when the recent context looks the same as before, it
# picks the same tokens as before, which makes the context look the same again.
#
# </details>
#
# 2. The pick had less than half the probability at 37 of 40 steps, and the median pick had 0.135. What does
#    that tell you about the text greedy writes?
#
# <details><summary>Answer</summary>
#
# The model was far from sure at most steps: many other tokens were possible. Greedy keeps only the top one
# each time and writes as if it were sure, so it always writes the same, most "average" continuation.
#
# </details>
#
# 3. On the toy tree, greedy goes "The nice woman" with probability 0.20. Compute the probability of
#    "The dog has" and say why greedy never finds it.
#
# <details><summary>Answer</summary>
#
# $0.4 \times 0.9 = 0.36$, higher than 0.20. Greedy compares only the first step, where "dog" ($0.4$) loses
# to "nice" ($0.5$), so it never looks at the better second step behind "dog".
#
# </details>
#
# 4. The first line greedy wrote (9 tokens) has probability 1.09e-08. Why do decoders add log-probs instead
#    of multiplying probabilities?
#
# <details><summary>Answer</summary>
#
# A product of many probabilities below 1 gets tiny very fast and, for long texts, underflows to 0 in
# floating point. The sum of the log-probs (here -18.3) stays a normal-sized number and orders sequences
# the same way.
#
# </details>
#
# 5. Why does one pass over the finished sequence give the same step probabilities as running the loop?
#
# <details><summary>Answer</summary>
#
# The model is causal: position t sees only the tokens up to t. So its output at t is the same distribution
# the loop saw when t was the last position, and one pass gives all the factors at once.
#
# </details>

# %% [markdown]
# ## Sources
#
# - **The "nice woman" / "dog has" tree** (Step 5): von Platen, P. (2020). *How to generate text: using different
#   decoding methods for language generation with Transformers*. Hugging Face blog,
#   <https://huggingface.co/blog/how-to-generate>.
# - **Why the most likely text repeats itself** (Step 3): Holtzman, A., Buys, J., Du, L., Forbes, M., & Choi, Y.
#   (2020). *The Curious Case of Neural Text Degeneration*. ICLR 2020. arXiv:1904.09751.
