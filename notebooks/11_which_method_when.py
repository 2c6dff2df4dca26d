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
# # Chapter 11 — Which method when, measured
#
# Ten chapters built decoding methods one at a time. This one puts them side by side on text the model has
# never seen — three plays held out of its training — and measures what each does: how often it repeats
# itself, how varied its words are, and how likely the model finds what it wrote. The real continuation from
# the play is measured the same way, as the human reference. The chapter ends with a table, "which method
# when", whose every line cites the numbers behind it.
#
# **Small on purpose.** So that the whole chapter runs in well under a minute on 2 CPU cores, it uses 6
# prompts of 16 tokens, 40 new tokens per continuation and 2 samples per prompt for the sampled methods.
# The averages below are therefore rough (the spread is printed next to each); the method to get firmer
# numbers is the same with more prompts, longer continuations and more samples.

# %%
# %matplotlib inline
import math
import re
import statistics

import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.data import HELDOUT_WORKS, load_splits
from minigpt.metrics import distinct_n, mean_logprob, repeated_ngram_rate
from minigpt.tokenizer import EOT_TOKEN_ID, decode, encode
from minigpt.viz import save_figure

torch.manual_seed(0)
torch.set_num_threads(1)
model = minigpt.load_model("shakespeare")

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: three measures, by hand
#
# - **Repeated 4-gram rate**: of the continuation's 4-grams (runs of 4 tokens), the share that repeat one
#   seen earlier in it. A loop such as "I will, I will, I will" drives it up; human text rarely repeats four
#   tokens in a row within 40.
# - **Distinct-2**: the share of its token pairs that are different. Over the same n the two are the same
#   count seen from two sides (rate = 1 − distinct); we read repetition at n = 4 (whole phrases) and variety
#   at n = 2 (word pairs).
# - **Mean log-probability**: the model's average log p of each token of the continuation given everything
#   before it, in nats per token. It measures how *likely* the model finds the text, whatever method wrote
#   it: always under the raw distribution, no temperature, no filter.

# %%
toy = [10, 11, 12, 13, 10, 11, 12, 13, 10, 14]  # a 4-token loop, then a way out
fours = [tuple(toy[i : i + 4]) for i in range(len(toy) - 3)]
repeats = sum(gram in fours[:i] for i, gram in enumerate(fours))  # seen earlier in the sequence?
pairs = [tuple(toy[i : i + 2]) for i in range(len(toy) - 1)]
print(f"{len(fours)} 4-grams, {repeats} repeat an earlier one: rate {repeats / len(fours):.3f}")
print(f"{len(pairs)} pairs, {len(set(pairs))} different: distinct-2 {len(set(pairs)) / len(pairs):.3f}")
assert repeated_ngram_rate(toy, 4) == repeats / len(fours) == 1 - distinct_n(toy, 4)
assert distinct_n(toy, 2) == len(set(pairs)) / len(pairs)

# %%
prompt_ids, line = encode("ROMEO:\n"), encode("But soft, what light through yonder window breaks?")
with torch.no_grad():
    log_probs = model(torch.tensor([prompt_ids + line]))[0].log_softmax(dim=-1)  # (T, V)
# the token at position t is scored by position t - 1
by_hand = [log_probs[len(prompt_ids) + i - 1, t].item() for i, t in enumerate(line)]
print(f"{len(line)} tokens, mean log p = {statistics.mean(by_hand):.3f} nats/token "
      f"(uniform over 50,257 tokens: {-math.log(50257):.3f})")
assert abs(statistics.mean(by_hand) - mean_logprob(model, prompt_ids, line)) < 1e-5
assert abs(statistics.mean(by_hand) - (-5.401)) < 2e-3

# %% [markdown]
# ## Step 2: prompts from plays the model never read
#
# `load_splits()` returns the training tokens and the held-out ones: the three works in `HELDOUT_WORKS`,
# never trained on. Six prompts are cut from them at evenly spaced places: from each place we walk forward to
# the next speech (a speaker's name on its own line after a blank line, then words), take its first 16 tokens
# as the prompt, and the 40 tokens after them as the human continuation.
#
# One more rule, from chapter 9: every greedy, beam and contrastive decode this chapter measures must win each
# step by at least 1e-3, or another CPU could pick another token and print other numbers
# (`tests/test_notebook_margins.py` checks it). At two of the six places the first speeches failed that test
# (a beam ranking or a contrastive step decided by less than 1e-3), so there we pass over two speeches.

# %%
PROMPT_TOKENS, NEW_TOKENS, NUM_PROMPTS = 16, 40, 6
NEWLINE = encode("\n")[0]
_, heldout = load_splits()
heldout = heldout.tolist()


def speech_start(i):
    """Does a speech start at token i, with a prompt and its continuation inside one work?"""
    window = heldout[i : i + PROMPT_TOKENS + NEW_TOKENS]
    prompt = heldout[i : i + PROMPT_TOKENS]
    return (heldout[i - 2 : i] == [NEWLINE, NEWLINE] and EOT_TOKEN_ID not in window
            and re.match(r"[A-Z][A-Z ]+\.\n[A-Za-z]", decode(prompt)) is not None  # "NAME.\nWords"
            and encode(decode(prompt)) == prompt)  # the text prompt tokenizes back to the same ids


PASSED_OVER = {2: 2, 3: 2}  # place k: speeches skipped there (a decode too close to call, see above)
prompts, humans = [], []
for k in range(NUM_PROMPTS):
    i = int(len(heldout) * (k + 0.5) / NUM_PROMPTS)  # evenly spaced, then on to the next speech
    for _ in range(1 + PASSED_OVER.get(k, 0)):
        i += 1
        while not speech_start(i):
            i += 1
    prompts.append(decode(heldout[i : i + PROMPT_TOKENS]))
    humans.append(heldout[i + PROMPT_TOKENS : i + PROMPT_TOKENS + NEW_TOKENS])
print("held-out works:", ", ".join(HELDOUT_WORKS))
for p, h in zip(prompts, humans):
    print(f"{p!r:48} -> {decode(h)[:40]!r}…")
# the same six prompts, written out: tests/test_notebook_margins.py checks the deterministic decodes of each
assert prompts == [
    "SIR ANDREW.\nFaith, so they say; but I think",
    "CLOWN.\nWell-a-day,--that you were, sir",
    "JULIA.\nA true-devoted pilgrim is not weary\n",
    "HERMIONE.\nWas not my lord the verier wag o",
    "PAULINA.\nI say she's dead: I'll swear't.",
    "AUTOLYCUS.\nIf I had a mind to be honest, I",
]

# %% [markdown]
# ## Step 3: every method writes
#
# Eleven methods, the same prompts, the same length, no end-of-text stop. Greedy, beam search and
# contrastive search are deterministic (one continuation per prompt); the eight sampled methods draw two
# continuations per prompt from one generator seeded with 0, so all of them use the *same* random numbers
# (that matters in Step 6). Each prompt list runs as one batch.

# %%
METHODS = {  # name: (function, settings)
    "greedy": (minigpt.generate, {}),
    "beam 4": (minigpt.beam_search, dict(num_beams=4)),
    "contrastive": (minigpt.contrastive_search, dict(penalty_alpha=0.6, top_k=4)),
    "T 0.7": (minigpt.generate, dict(do_sample=True, temperature=0.7)),
    "T 1.0": (minigpt.generate, dict(do_sample=True)),
    "T 1.3": (minigpt.generate, dict(do_sample=True, temperature=1.3)),
    "top-k 40": (minigpt.generate, dict(do_sample=True, top_k=40)),
    "top-p 0.9": (minigpt.generate, dict(do_sample=True, top_p=0.9)),
    "top-p 0.95": (minigpt.generate, dict(do_sample=True, top_p=0.95)),
    "min-p 0.1": (minigpt.generate, dict(do_sample=True, min_p=0.1)),
    "typical 0.9": (minigpt.generate, dict(do_sample=True, typical_p=0.9)),
}
SAMPLES = 2
written = {}  # name: [(prompt index, new tokens)]
for name, (method, settings) in METHODS.items():
    if settings.get("do_sample"):
        out = method(model, prompts, max_new_tokens=NEW_TOKENS, num_return_sequences=SAMPLES, seed=0, **settings)
        written[name] = [(row // SAMPLES, tokens) for row, tokens in enumerate(out.new_tokens)]  # rows i*2, i*2+1
    else:
        out = method(model, prompts, max_new_tokens=NEW_TOKENS, **settings)
        written[name] = list(enumerate(out.new_tokens))
written["human"] = list(enumerate(humans))
assert all(len(tokens) == NEW_TOKENS for rows in written.values() for _, tokens in rows)
print(f"prompt 0: {prompts[0]!r}")
for name, rows in written.items():
    print(f"  {name:>11}: {decode(rows[0][1])[:72]!r}")

# %% [markdown]
# Greedy and beam search settle into the most likely phrases and repeat them; temperature 1.3 drifts into
# words that no longer belong together; the others sit in between. Now the same, counted.

# %% [markdown]
# ## Step 4: the measurements
#
# For every continuation: its repeated 4-gram rate, its distinct-2, and its mean log-probability given its
# prompt. Each line shows the mean and, after ±, the standard deviation over the 6 prompts (× 2 samples for
# the sampled methods): the spread is large, because some prompts are much easier to continue than others.

# %%
scores = {name: [(repeated_ngram_rate(t, 4), distinct_n(t, 2), mean_logprob(model, encode(prompts[i]), t))
                 for i, t in rows] for name, rows in written.items()}
MEASURES = ("repeat-4", "distinct-2", "log p")
summary = {name: {m: (statistics.mean(v), statistics.stdev(v), len(v)) for m, v in zip(MEASURES, zip(*rows))}
           for name, rows in scores.items()}


def shown(x, noisy):
    """x at 2 decimals. A model's log-probability moves by ~1e-5 from one CPU to the next (chapter 9): such a
    `noisy` x is checked to be 1e-4 away from a rounding boundary, so every CPU prints the same. The n-gram
    measures count tokens and are exact."""
    scaled = abs(x) * 100
    assert not noisy or abs(scaled - math.floor(scaled) - 0.5) > 1e-2, f"{x} is too close to a rounding boundary"
    return f"{x:5.2f}"


print(f"{'method':>11} {'n':>3}  " + "  ".join(f"{m:>13}" for m in MEASURES))
for name, stats in summary.items():
    cells = [f"{shown(mean, m == 'log p')} ± {shown(sd, m == 'log p').strip():4}"
             for m, (mean, sd, _) in stats.items()]
    print(f"{name:>11} {stats['log p'][2]:>3}  " + "  ".join(f"{c:>13}" for c in cells))
EXPECTED_LOG_P = {"greedy": -1.167, "beam 4": -0.798, "contrastive": -1.719, "T 0.7": -2.080, "T 1.0": -3.074,
                  "T 1.3": -6.232, "top-k 40": -2.490, "top-p 0.9": -2.544, "top-p 0.95": -2.681,
                  "min-p 0.1": -1.684, "typical 0.9": -2.557, "human": -5.095}
assert all(abs(summary[name]["log p"][0] - lp) < 2e-3 for name, lp in EXPECTED_LOG_P.items())

# %% [markdown]
# Holtzman et al.'s point, on our model: the human continuation is far *less* likely under the model
# (about −5 nats per token) than anything greedy, beam or the usual sampling settings write (−0.8 to −2.5),
# and still varied and rarely repetitive. Maximising likelihood does not produce human-like text; only
# temperature 1.3 gets as unlikely as the human text, by choosing words at random rather than as a writer
# does.

# %% [markdown]
# ## Step 5: diversity against likelihood
#
# Every method is one point: to the right, text the model finds likely; up, text with varied word pairs. The
# bars are ± one standard error of the mean (the spread divided by √n), to show which differences the 6
# prompts can resolve. The human continuation is the star.

# %%
FAMILY = {"greedy": "search (deterministic)", "beam 4": "search (deterministic)",
          "contrastive": "search (deterministic)", "T 0.7": "temperature", "T 1.0": "temperature",
          "T 1.3": "temperature", "top-k 40": "truncation (T = 1)", "top-p 0.9": "truncation (T = 1)",
          "top-p 0.95": "truncation (T = 1)", "min-p 0.1": "truncation (T = 1)",
          "typical 0.9": "truncation (T = 1)", "human": "human continuation"}
COLOURS = {"search (deterministic)": "tab:blue", "temperature": "tab:orange", "truncation (T = 1)": "tab:green",
           "human continuation": "black"}
LABEL_AT = {  # where each name goes (offset in points), clear of the crowded middle
    "top-p 0.9": (-30, 40, "right"), "typical 0.9": (-40, -45, "right"), "top-p 0.95": (20, -50, "left"),
    "top-k 40": (10, 8, "left"), "T 1.0": (-10, 10, "right"), "min-p 0.1": (10, 6, "left"),
    "contrastive": (-8, 6, "right"), "greedy": (-8, -14, "right"),
}


def mean_and_error(name, measure):
    mean, sd, n = summary[name][measure]
    return mean, sd / math.sqrt(n)


fig, ax = plt.subplots(figsize=(8.5, 5.5))
for name in summary:
    (x, dx), (y, dy) = mean_and_error(name, "log p"), mean_and_error(name, "distinct-2")
    family = FAMILY[name]
    ax.errorbar(x, y, xerr=dx, yerr=dy, fmt="*" if name == "human" else "o", ms=14 if name == "human" else 6,
                color=COLOURS[family], capsize=3, label=family)
    dx_pt, dy_pt, ha = LABEL_AT.get(name, (8, 4, "left"))
    far = abs(dx_pt) > 15 or abs(dy_pt) > 15  # a name placed away from its point gets a line to it
    ax.annotate(name, (x, y), xytext=(dx_pt, dy_pt), textcoords="offset points", ha=ha, fontsize=9,
                arrowprops=dict(arrowstyle="-", color="grey", lw=0.6) if far else None)
handles, labels = ax.get_legend_handles_labels()
unique = dict(zip(labels, handles))  # one legend entry per family
ax.legend(unique.values(), unique.keys(), loc="lower left")
ax.set_xlabel("mean log-probability under the model (nats per token) → more likely")
ax.set_ylabel("distinct-2 (share of different token pairs) → more varied")
ax.set_title("Eleven decoding methods and the human continuation\n"
             "6 held-out prompts, 40 new tokens; bars: ± 1 standard error")
ax.grid(alpha=0.3)
fig.tight_layout()
save_figure(fig, "11_diversity_vs_likelihood")
plt.show()

# what the figure shows, checked: search methods are the most likely and the least varied, the human star is
# further left than every method but T 1.3, and more varied than greedy and beam
lp = {name: s["log p"][0] for name, s in summary.items()}
d2 = {name: s["distinct-2"][0] for name, s in summary.items()}
assert max(lp, key=lp.get) == "beam 4" and min(d2, key=d2.get) in ("greedy", "beam 4")
assert sorted(lp, key=lp.get)[:2] == ["T 1.3", "human"]
assert d2["human"] > max(d2["greedy"], d2["beam 4"]) + 0.2

# %% [markdown]
# ## Step 6: why typical 0.9 sits on top of top-p 0.9
#
# The two points nearly coincide, and not by chance. Both methods drew from a generator seeded with 0, so at
# every step they used the same uniform random number. The token drawn is where that number falls in the
# cumulative distribution, and both filters keep the same likely head and differ only in which improbable
# tail tokens they drop: after renormalising, the running sums shift a little and the draw almost always lands
# on the same token. Using the same random numbers for every method is what makes the comparison fair
# ("common random numbers"); it also shows how little these two filters differ on this model.

# %%
same = sum(a == b for (_, a), (_, b) in zip(written["typical 0.9"], written["top-p 0.9"]))
differ_t = sum(a == b for (_, a), (_, b) in zip(written["T 0.7"], written["T 1.0"]))
print(f"typical 0.9 and top-p 0.9 wrote {same} of {len(written['top-p 0.9'])} continuations token for token alike")
print(f"T 0.7 and T 1.0 (different distributions, same numbers): {differ_t} of {len(written['T 1.0'])}")
assert same > len(written["top-p 0.9"]) // 2 and differ_t <= 2

# %% [markdown]
# ## Step 7: which method when
#
# Each line below is written from the measurements above (the numbers are computed, not typed), and the
# claim it makes is asserted, so a retrained model that changed the picture would stop the chapter here.

# %%
rep = {name: s["repeat-4"][0] for name, s in summary.items()}
sampled = [name for name in METHODS if METHODS[name][1].get("do_sample")]
plausible = [name for name in sampled if lp[name] > lp["human"]]  # T 1.3 is out: less likely than the human text
closest = min(plausible, key=lambda name: abs(d2[name] - d2["human"]))  # the most human-like variety of the rest
safest = max(sampled, key=lp.get)  # the most likely sampled text
assert rep["beam 4"] > rep["human"] and rep["greedy"] > rep["human"] and lp["beam 4"] > lp["greedy"]
assert rep["contrastive"] < rep["greedy"] and lp["contrastive"] > lp[closest]
assert lp["T 1.3"] < lp["human"] and d2["T 1.3"] > d2["human"]
lines = [
    ("one short, best answer (a label, a name, a fact)", "greedy or beam 4",
     f"most likely text: log p {lp['beam 4']:.1f} (beam), {lp['greedy']:.1f} (greedy); but over 40 tokens they "
     f"repeat {rep['beam 4']:.0%} / {rep['greedy']:.0%} of their 4-grams (human {rep['human']:.0%})"),
    ("long text, one fixed output, no loops", "contrastive search",
     f"repeats {rep['contrastive']:.0%} of 4-grams, distinct-2 {d2['contrastive']:.2f}, log p "
     f"{lp['contrastive']:.1f}: more likely than free sampling, far less repetitive than greedy"),
    ("varied text that should read like the source", closest,
     f"distinct-2 {d2[closest]:.2f}, the closest to the human {d2['human']:.2f}; "
     f"log p {lp[closest]:.1f} vs {lp['greedy']:.1f} greedy"),
    ("sampling, but cautious (fewer odd words)", safest,
     f"the most likely sampled text (log p {lp[safest]:.1f} vs {lp['T 1.0']:.1f} at T 1.0), "
     f"at the price of more repeats ({rep[safest]:.0%} vs {rep['T 1.0']:.0%})"),
    ("not on its own", "T 1.3 without truncation",
     f"log p {lp['T 1.3']:.1f}, below even the human {lp['human']:.1f}: variety (distinct-2 {d2['T 1.3']:.2f}) "
     "bought with words that do not belong together; add top-p or min-p to cut the tail"),
]
for need, method, why in lines:
    print(f"{need}\n    → {method}: {why}")

# %% [markdown]
# The table answers for *this* model and these settings: a larger model has a sharper distribution, on which
# greedy text repeats less and high temperatures hurt less; a task with one right answer rewards likelihood,
# a story rewards variety. What carries over is the method: fix the prompts and the seeds, measure repetition,
# variety and likelihood, and put the human text on the same axes.

# %% [markdown]
# ## Sources
#
# - **Human text is not the most likely text** (Steps 4, 5), **top-p sampling**: Holtzman, A., Buys, J., Du, L.,
#   Forbes, M., & Choi, Y. (2020). *The Curious Case of Neural Text Degeneration*. ICLR 2020. arXiv:1904.09751.
# - **Top-k sampling**: Fan, A., Lewis, M., & Dauphin, Y. (2018). *Hierarchical Neural Story Generation*.
#   ACL 2018. arXiv:1805.04833.
# - **Typical sampling**: Meister, C., Pimentel, T., Wiher, G., & Cotterell, R. (2023). *Locally Typical
#   Sampling*. TACL 11, 102–121. arXiv:2202.00666.
# - **Epsilon and eta sampling** (the truncation view behind min-p and typical): Hewitt, J., Manning, C. D., &
#   Liang, P. (2022). *Truncation Sampling as Language Model Desmoothing*. Findings of EMNLP 2022.
#   arXiv:2210.15191.
# - **Min-p sampling**: Nguyen, M. N., Baker, A., Neo, C., Roush, A., Kirsch, A., & Shwartz-Ziv, R. (2024).
#   *Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs*. arXiv:2407.01082 (ICLR 2025).
# - **Contrastive search**: Su, Y., Lan, T., Wang, Y., Yogatama, D., Kong, L., & Collier, N. (2022). *A
#   Contrastive Framework for Neural Text Generation*. NeurIPS 2022. arXiv:2202.06417.
# - **Repeated n-gram rate** (seq-rep-n): Welleck, S., Kulikov, I., Roller, S., Dinan, E., Cho, K., & Weston, J.
#   (2020). *Neural Text Generation with Unlikelihood Training*. ICLR 2020. arXiv:1908.04319.
# - **Distinct-n**: Li, J., Galley, M., Brockett, C., Gao, J., & Dolan, B. (2016). *A Diversity-Promoting
#   Objective Function for Neural Conversation Models*. NAACL 2016. arXiv:1510.03055.
