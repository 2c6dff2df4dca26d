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
# # Chapter 8 — Speculative decoding
#
# A model spends one full forward pass per token. For a big model on a GPU that pass is mostly spent
# reading its weights, so scoring k tokens in one pass costs little more than scoring one; here, a small
# model on a CPU, it costs more, but less than k passes (Step 6 measures it). So let a small **draft**
# model guess k tokens, and let the **target** check all of them in one pass: keep the guesses it agrees
# with, fix the first one it does not. The output is exactly what the target alone would have produced,
# greedy (Steps 1–7) or sampled (Steps 8–9). Step 10 drops the draft model: it copies its guesses from the
# text itself.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
prompt = "ROMEO:\nI"  # Steps 1-7: greedy speculative decoding continues it
residual_prompt = "KING:\nI"  # Step 8: one real step of speculative sampling, taken apart
sampling_prompt = "JULIET:\nO"  # Step 9: speculative sampling run many times from it
seed = 0  # Step 9: the first of its seeds
repeated_text = "FIRST WITCH.\nDouble, double toil and trouble;\n\nSECOND WITCH.\nDouble, double toil and trouble;\n\nTHIRD WITCH.\n"  # Step 10

# %%
# %matplotlib inline
import dataclasses
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

import minigpt
from minigpt.kv_cache import KVCache
from minigpt.metrics import interleaved_times, separated
from minigpt.speculative import lookup_draft, prompt_lookup_generate, speculative_generate
from minigpt.tokenizer import decode, encode
from minigpt.viz import DROPPED, MARKERS, OKABE_ITO, save_figure, token_label

torch.manual_seed(0)
torch.set_num_threads(1)
# the numbers this chapter pins (asserts under `if default_run:`) are those of its default inputs
default_run = (prompt, residual_prompt, sampling_prompt, seed, repeated_text) == (
    "ROMEO:\nI", "KING:\nI", "JULIET:\nO", 0,
    "FIRST WITCH.\nDouble, double toil and trouble;\n\nSECOND WITCH.\nDouble, double toil and trouble;\n\nTHIRD WITCH.\n")
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


prompt_ids = torch.tensor([encode(prompt)])  # (1, T)
ids, rate, passes = speculative_by_hand(target, draft, prompt_ids, k=4, new_tokens=30)
print(repr(decode(ids[0].tolist())))
print(f"acceptance rate {rate:.2f}; {passes} target passes for 30 tokens (greedy needs 30)")

# %% [markdown]
# ## Step 2: exactly the target's output

# %%
plain = minigpt.generate(target, prompt_ids, max_new_tokens=30)
assert ids.tolist() == plain.ids.tolist()
print("speculative (greedy) == the target's greedy output")

# %% [markdown]
# ## Step 3: the library's version
#
# `minigpt.speculative_generate` runs the same loop, with a KV cache in each model. It counts the acceptance
# rate as we did: draft tokens kept over draft tokens proposed, leaving out the target's own token at the end
# of each round. And like our loop, its last round drafts only as many tokens as can still be used: a full k
# there would count guesses past the 30th token, and give another rate.

# %%
library = speculative_generate(target, draft, prompt_ids, k=4, max_new_tokens=30)
assert library.ids.tolist() == ids.tolist()
assert library.acceptance_rate == rate and library.num_target_passes == passes
print(f"minigpt.speculative_generate: same tokens, acceptance {library.acceptance_rate:.2f}, "
      f"{library.num_target_passes} target passes")

# %% [markdown]
# ## Step 4: acceptance rate against k
#
# Longer guesses save more passes when they are right, and waste more draft work when they are not. Decode
# 60 tokens with k = 1 … 8 and count. Each decode (and plain decoding's) is run six times, in turns: the
# first run gives the tokens and counts below, the other five are timed for Step 7.

# %%
N = 60
ks = list(range(1, 9))
results = {}


def decode_with(k):
    """One decode of N tokens (k = 0: plain decoding); the first run's result is kept for the tables."""

    def run():
        if k == 0:
            out = minigpt.generate(target, prompt_ids, max_new_tokens=N)
        else:
            out = speculative_generate(target, draft, prompt_ids, k=k, max_new_tokens=N)
        results.setdefault(k, out)

    return run


# in turns: plain, k = 1, ..., k = 8, plain, k = 1, ...; each run once untimed first (its result is kept)
seconds = interleaved_times({k: decode_with(k) for k in [0, *ks]}, repeats=5)  # {k: Spread of seconds}
plain = results.pop(0)
for k in ks:
    assert results[k].ids.tolist() == plain.ids.tolist()  # every k gives the target's greedy tokens
print(f"k  accepted / proposed  acceptance  target passes for {N} tokens (plain decoding: {N})")
for k, r in results.items():
    print(f"{k}  {r.num_accepted:8d} / {r.num_proposed:<8d}  {r.acceptance_rate:10.2f}  {r.num_target_passes:13d}")
passes_at = {k: r.num_target_passes for k, r in results.items()}
fewest = min(passes_at.values())
first_fewest = min(k for k in ks if passes_at[k] == fewest)
print(f"fewest passes: {fewest}, from k = {first_fewest} on" if all(passes_at[k] == fewest for k in ks
      if k >= first_fewest) else f"fewest passes: {fewest}, at k = {[k for k in ks if passes_at[k] == fewest]}")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(ks, list(passes_at.values()), marker="o", label="speculative decoding")
ax.axhline(N, ls="--", color="gray", label=f"plain decoding: {N} passes")
ax.set_xlabel("draft length k")
ax.set_ylim(0, N * 1.05)  # from 0, so that the heights compare
ax.set_ylabel(f"target forward passes for {N} tokens")
ax.set_title("Speculative decoding: fewer passes of the big model")
ax.legend()
fig.tight_layout()
save_figure(fig, "08_passes_vs_k")
plt.show()
rates = [r.acceptance_rate for r in results.values()]
if default_run:  # what the next paragraph says of the default prompt
    assert first_fewest == 6 and all(passes_at[k] == fewest for k in (6, 7, 8))
    assert all(passes_at[k] > passes_at[k + 1] for k in range(1, 6)) and rates[0] > rates[-1]

# %% [markdown]
# The passes keep falling up to the k printed above, and then stop: k = 6, 7 and 8 all take the same number
# of target passes. Yet the acceptance rate falls almost from the start. It is not that longer drafts are
# worse guesses: a round stops judging at the first rejected guess, and the guesses after it are counted as
# proposed though the target never looked at them. The acceptance rate mixes how good the draft is with how
# long its guesses are.
#
# ## Step 5: how many tokens does a pass give?
#
# Leviathan et al. count it with one number: α, the chance that the target accepts a guess (here, that the
# draft's greedy token is the target's). If each guess is accepted with chance α, independently, a round keeps
# its first guess with chance α, the first two with α², … and always adds one token of the target's, so the
# expected number of tokens per target pass is
#
# $$1 + \alpha + \alpha^2 + \dots + \alpha^k = \frac{1 - \alpha^{k+1}}{1 - \alpha},$$
#
# which grows with k towards 1 / (1 − α). At k = 1 every guess the draft makes is judged, so the acceptance
# rate of the k = 1 run measures α. The measured tokens per pass is N over the number of passes. How far
# may it fall from the formula by chance? If guesses were coin flips, a round's count would scatter around
# its mean, and the mean over a run's rounds by one standard error (SE). We allow two.

# %%
alpha = results[1].acceptance_rate  # at k = 1 each round judges its one guess


def tokens_per_pass(alpha, k):
    """Mean and spread of the tokens a round yields: n ≤ k with chance α^(n-1) (1 - α), k + 1 with α^k."""
    probs = [alpha ** (n - 1) * (1 - alpha) for n in range(1, k + 1)] + [alpha**k]
    mean = sum(n * pr for n, pr in enumerate(probs, start=1))
    variance = sum(n * n * pr for n, pr in enumerate(probs, start=1)) - mean**2
    return mean, math.sqrt(variance)


print(f"alpha = {alpha:.3f} ({results[1].num_accepted} of {results[1].num_proposed} guesses kept at k = 1)")
print("k  measured  formula  2 SE")
expected, two_se, within = {}, {}, {}
for k, r in results.items():
    mean, sd = tokens_per_pass(alpha, k)
    assert math.isclose(mean, (1 - alpha ** (k + 1)) / (1 - alpha))  # the sum is the closed formula
    expected[k], two_se[k] = mean, 2 * sd / math.sqrt(r.num_target_passes)
    measured = N / r.num_target_passes
    within[k] = abs(measured - mean) <= two_se[k]
    print(f"{k}  {measured:8.2f}  {mean:7.2f}  {two_se[k]:4.2f}" + ("" if within[k] else "  (outside 2 SE)"))
better = 0.9  # a better draft's α
print(f"with α = {better}, a pass could give up to 1 / (1 - α) = {1 / (1 - better):.0f} tokens")
if default_run:
    assert all(within.values())  # the next paragraph: the formula follows the measurements
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(ks, list(expected.values()), color=OKABE_ITO["blue"],
        label=rf"formula $(1 - \alpha^{{k+1}}) / (1 - \alpha)$, $\alpha$ = {alpha:.2f}")
ax.errorbar(ks, [N / r.num_target_passes for r in results.values()], yerr=list(two_se.values()), fmt="o",
            color="black", capsize=3, label=f"measured: {N} tokens / passes, ± 2 SE")
ax.axhline(1 / (1 - alpha), ls=":", color=OKABE_ITO["blue"], label=r"ceiling $1 / (1 - \alpha)$, as k grows")
ax.axhline(1, ls="--", color="gray", label="plain decoding: 1 token per pass")
ax.set_xlabel("draft length k")
ax.set_ylabel("tokens per target pass")
ax.set_ylim(0, 1.05 * max(1 / (1 - alpha), *(N / r.num_target_passes + two_se[k] for k, r in results.items())))
ax.set_title("Tokens per target pass: measured against the formula")
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
save_figure(fig, "08_tokens_per_pass")
plt.show()

# %% [markdown]
# The formula follows the measurements (each within 2 SE), although real guesses are not independent coin
# flips (the draft is right for whole stretches of easy text, and wrong for whole stretches of hard text). It
# also tells what a better draft would buy, printed on the last line above.
#
# ## Step 6: what one pass over k positions costs
#
# Fewer passes help only if a pass over k positions is cheap. Time the target's forward pass over 1 to 8
# new positions after a cached prompt, as in one verification round: ten runs of each, in turns. We keep
# the fastest run of each (other programs on the machine only ever slow a run down) and show the slowest
# beside it.

# %%
# NBVAL_IGNORE_OUTPUT
# why: timings depend on the machine and its load; the asserts check what the next paragraph says of them
context = torch.tensor([encode(prompt)])
positions = torch.tensor([encode(" will not be moved by thee, for I am constant")])[:, :8]
assert positions.size(1) == 8
cache = KVCache.for_model(target, batch_size=1, max_len=context.size(1) + 8)


def pass_over(n):
    """One verification pass over n new positions, after the cached prompt."""

    def run():
        cache.crop(context.size(1))  # forget the previous run's positions
        with torch.no_grad():
            target(positions[:, :n], kv_cache=cache)

    return run


with torch.no_grad():
    target(context, kv_cache=cache)  # the prompt, cached once
pass_seconds = interleaved_times({n: pass_over(n) for n in range(1, 9)}, repeats=10)  # {n: Spread}
one = pass_seconds[1].low
print("positions  fastest (ms)  slowest (ms)  fastest, × one position")
for n, t in pass_seconds.items():
    print(f"{n:9d}  {1000 * t.low:12.2f}  {1000 * t.high:12.2f}  {t.low / one:23.2f}")
print(f"the output layer multiplies each position by {target.config.vocab_size:,} × {target.config.n_embd} weights")
cheaper = [n for n in range(2, 9) if pass_seconds[n].low < n * one]
print(f"one pass over n positions costs less than n passes over one at n = {cheaper}")
assert pass_seconds[8].low > one  # more positions take longer
assert 8 in cheaper  # but 8 positions cost less than 8 passes over one

# %% [markdown]
# Compare the last column with the first, which is what n separate passes would cost. The time grows with
# the number of positions, by how much depends on the CPU: a model this small, on a CPU, spends much of a
# pass on arithmetic (the output layer alone multiplies each position by the weights printed above), not only
# on reading its weights. Nor need it grow smoothly: how a CPU's matrix kernels handle a few rows at a time
# varies, and a pass over 2 or 3 positions can cost nearly as much as separate passes. But
# over the longer passes it grows more slowly than the count (the cell prints where, and checks it at 8
# positions), so one pass over k positions costs less than the k passes plain decoding would spend on them.
# Speculative decoding therefore saves less time here than the pass counts of Step 4 suggest; on a GPU with a
# big target, where a pass is bound by reading the weights, the saving comes closer to them.
#
# ## Step 7: wall time per token
#
# So what does it buy on this machine? Step 4 timed each decode of 60 tokens five times, in turns. A round
# costs k steps of the draft and one pass of the target over k + 1 positions, and yields the tokens per pass
# of Step 5. Below, each time is the mean of the five runs ± its standard error; a k counts as the fastest
# only if its interval (mean ± 2 SE) is clear of every other k's, otherwise the fastest ones tie here.

# %%
# NBVAL_IGNORE_OUTPUT
# why: wall times depend on the machine and its load; the asserts check that the sentence below says what
# the intervals show
per_token = {k: dataclasses.replace(s, mean=1000 * s.mean / N, stderr=1000 * s.stderr / N,
                                    low=1000 * s.low / N, high=1000 * s.high / N) for k, s in seconds.items()}
plain_ms = per_token[0]
best_k = min(ks, key=lambda k: per_token[k].mean)
tied = [k for k in ks if k == best_k or not separated(per_token[k], per_token[best_k])]
print(f"plain decoding: {plain_ms.mean:.2f} ± {plain_ms.stderr:.2f} ms per token (mean ± SE of {plain_ms.n} runs)")
print("k  ms per token (mean ± SE)  speed-up")
for k in ks:
    print(f"{k}  {per_token[k].mean:14.2f} ± {per_token[k].stderr:4.2f}  {plain_ms.mean / per_token[k].mean:8.2f}")
if tied == [best_k]:
    verdict = f"The fastest here is k = {best_k}, clear of every other k"
else:
    verdict = (f"k = {', '.join(map(str, tied))} tie here for the fastest: their intervals overlap (the lowest "
               f"mean is k = {best_k}'s)")
speed_up = plain_ms.mean / per_token[best_k].mean
if not separated(per_token[best_k], plain_ms):
    versus = f"and k = {best_k} is not clear of plain decoding either: on this machine they tie"
elif speed_up > 1:
    versus = f"k = {best_k} runs at {speed_up:.2f}× the speed of plain decoding, clear of it"
else:
    versus = f"even k = {best_k} is slower than plain decoding ({speed_up:.2f}× its speed), clear of it"
display(Markdown(f"{verdict}; {versus}."))
assert all(not separated(per_token[k], per_token[best_k]) for k in tied if k != best_k)
assert all(separated(per_token[k], per_token[best_k]) for k in ks if k not in tied)
fig, ax = plt.subplots(figsize=(6, 3.5))
means = [per_token[k].mean for k in ks]
ax.axhspan(*plain_ms.interval(), color=DROPPED, alpha=0.5, lw=0)
ax.axhline(plain_ms.mean, ls="--", color="gray", label="plain decoding (band: ± 2 SE)")
ax.errorbar(ks, means, yerr=[2 * per_token[k].stderr for k in ks], marker="o", capsize=3,
            color=OKABE_ITO["blue"], label="speculative decoding, ± 2 SE")
if len(tied) < len(ks):  # mark the fastest, or the k that tie for it (all tied: nothing to mark)
    ax.plot(tied, [per_token[k].mean for k in tied], marker="*", markersize=14, color=OKABE_ITO["vermillion"],
            ls="none", label=f"fastest: k = {best_k}" if tied == [best_k] else "tied for the fastest")
ax.set_xlabel("draft length k")
ax.set_ylabel("milliseconds per token")
ax.set_ylim(0, 1.4 * max(plain_ms.interval()[1], *(per_token[k].interval()[1] for k in ks)))
ax.set_title(f"Wall time per token ({N} tokens, one CPU thread, {plain_ms.n} runs each)"
             + ("" if len(tied) < len(ks) else "\nevery k ties for the fastest here"))
ax.legend(fontsize=8, loc="upper right", ncols=2)
fig.tight_layout()
save_figure(fig, "08_speedup_vs_k")
plt.show()

# %% [markdown]
# The fastest k is where the extra tokens per pass (Step 5, flattening towards its ceiling) stop paying for
# the longer passes (Step 6) and the extra draft steps. Past the k where the passes stop falling (Step 4), a
# longer draft only adds draft steps. On a CPU the gain is small at best and changes from machine to machine
# (the sentence above is this run's); on a GPU, where a pass over k + 1 positions costs about as much as a pass
# over one, it comes close to the tokens per pass.
#
# ## Step 8: why sampling stays exact
#
# With sampling, the target accepts a draft token x with probability min(1, p(x) / q(x)), where p is the
# target's and q the draft's distribution. On rejection it draws from the leftover max(0, p − q),
# renormalised. Together the two cases give every token probability exactly p(x) (Leviathan et al.; Chen
# et al.: see Sources). Checked on a three-token example:

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
# Now at one real step: the first token after the prompt `residual_prompt` (`"KING:\nI"` unless you changed
# it), with both shipped models at temperature 1. A token x comes out as an accepted draft with probability
# q(x) · min(1, p(x) / q(x)) = min(p(x), q(x)), and a rejection happens with probability 1 − Σ min(p, q). The
# residual puts the missing mass back: zero where the draft proposes a token at least as often as the target
# would pick it, most where the draft neglects one.

# %%
context = torch.tensor([encode(residual_prompt)])
with torch.no_grad():
    p = target(context)[0, -1].softmax(dim=-1)  # (V,) the target's next-token distribution
    q = draft(context)[0, -1].softmax(dim=-1)  # (V,) the draft's
for model, ours in ((target, p), (draft, q)):  # the distributions generate samples from at temperature 1
    theirs = minigpt.generate(model, context, max_new_tokens=1, do_sample=True, seed=0, return_distributions=True)
    assert torch.allclose(ours, theirs.distributions[0][0], atol=1e-6)
# the algebra in float64, on p and q renormalised there: a float32 softmax over 50,257 tokens sums to 1 only
# within ~1e-5, enough to spoil the identities below at that level
p, q = p.double() / p.double().sum(), q.double() / q.double().sum()
accepted_part = torch.minimum(p, q)  # the draft proposes x and the target keeps it
rejection = 1 - accepted_part.sum()
residual = (p - q).clamp(min=0) / (p - q).clamp(min=0).sum()
assert torch.allclose(accepted_part + rejection * residual, p, atol=1e-6)  # every token: exactly p
assert math.isclose(rejection, (p - q).clamp(min=0).sum(), abs_tol=1e-12)  # the same mass, seen twice
print(f"P(rejection) = 1 - sum min(p, q) = {rejection:.2f}")
top = p.topk(15).indices
keep = torch.minimum(torch.ones_like(p), p / q)  # (V,) the chance the target keeps a drafted token
print("token     p (target)  q (draft)  accept min(1, p/q)  residual")
printed = []
for i in top[:8].tolist():
    row = (p[i], q[i], keep[i], residual[i])
    printed += [float(v) for v in row]
    print(f"{token_label(decode([i])):8}  {row[0]:10.2f}  {row[1]:9.2f}  {row[2]:18.2f}  {row[3]:8.2f}")
if default_run:
    assert abs(rejection - 0.24006) < 1e-4
    assert abs(p[top[0]] - 0.12828) < 1e-4 and abs(residual[top[0]] - 0.11070) < 1e-4
    # every CPU prints the same 2 decimals: no printed number is within 4e-4 of a rounding boundary
    assert all(abs(100 * v - math.floor(100 * v) - 0.5) > 4e-2 for v in [*printed, float(rejection)])
fig, ax = plt.subplots(figsize=(9, 4))
x = torch.arange(len(top))
for shift, dist, name, color, hatch in (
        (-0.27, p, "target p", OKABE_ITO["blue"], ""),
        (0, q, "draft q", OKABE_ITO["orange"], "//"),
        (0.27, residual, "residual max(0, p − q), normalised", OKABE_ITO["bluish green"], "..")):
    ax.bar(x + shift, dist[top].tolist(), width=0.27, label=name, color=color, hatch=hatch, edgecolor="white")
ax.set_xticks(x.tolist(), [token_label(decode([i])) for i in top.tolist()], rotation=45, ha="right")
ax.set_xlabel(f"next token after {residual_prompt!r} (the target's 15 most likely)")
ax.set_ylabel("probability")
ax.set_title("One real step: the residual is what a rejected draft is replaced with")
ax.text(0.98, 0.6, f"P(rejection) = 1 − Σ min(p, q) = {rejection:.2f}\nthen the token is drawn from the dotted bars",
        transform=ax.transAxes, ha="right", fontsize=9)
ax.legend(fontsize=9)
fig.tight_layout()
save_figure(fig, "08_residual")
plt.show()
# the two tokens the next paragraph points at, among the 8 printed: the one the draft over-proposes most,
# and the one the residual gives the largest share
shown_ids = top[:8].tolist()
over = min(shown_ids, key=lambda i: keep[i].item())
neglected = max(shown_ids, key=lambda i: residual[i].item())
over_text = (f"The draft proposes `{token_label(decode([over]))}` {q[over] / p[over]:.1f} times as often as the "
             f"target would pick it: the target keeps it only {keep[over]:.0%} of the time, and the residual has "
             f"{'nothing' if residual[over] == 0 else f'{residual[over]:.2f}'} for it.")
neglected_text = (f"The draft proposes `{token_label(decode([neglected]))}` with probability {q[neglected]:.2f}, "
                  f"where the target gives it {p[neglected]:.2f}: it comes out mostly after a rejection, from the "
                  f"residual, which gives it {residual[neglected]:.2f}, the largest share of the tokens above.")
display(Markdown(f"{over_text} {neglected_text}" if keep[over] < 1 else neglected_text))
assert residual[neglected] == residual[top[:8]].max()

# %% [markdown]
# (Printed at 2 decimals: these come from both models' logits, which move in the 6th digit from one CPU
# to another; the cell checks that no printed number of the default run is near a rounding boundary.)
#
# ## Step 9: the check on the shipped models
#
# The algebra holds; does `speculative_generate` do it? Run it 400 times, with seeds counting up from
# `seed`, and compare the first token's frequencies with p, at the first token after `sampling_prompt`
# (`"JULIET:\nO"` unless you changed it): a step where the residual is far from p (the draft and the target
# disagree on the likeliest tokens), so that 400 runs are enough to tell the correct sampler from the bug
# below; at the step above they are not. With k = 1 and 2 new tokens, the first round drafts one token (a
# round adds up to one more than it drafts), so the first token goes through accept-or-resample; the
# second is ignored. The test is the one `tests/test_speculative.py` uses: Pearson's chi-square, with
# rare tokens pooled until each bin expects at least 5 draws. A correct sampler fails it (p-value below
# 1e-4) with probability 1e-4. The same counts must *fail* it against q (what keeping every draft would
# give) and against "after a rejection, draw from p" (a common bug): otherwise the test could not tell.

# %%
def chi_square_p_value(counts, probs):
    """P-value of Pearson's chi-square test that ``counts`` (V,) were drawn from ``probs`` (V,).

    Rare tokens are pooled, least likely first, until each bin expects at least 5 draws; a token of
    probability 0 that was drawn at all gives 0.
    """
    n = counts.sum().item()
    if (counts[probs == 0] > 0).any():
        return 0.0
    order = torch.argsort(probs)
    observed, expected, o, e = [], [], 0, 0.0  # o, e: the bin being filled
    for count, prob in zip(counts[order].tolist(), probs[order].tolist()):
        o, e = o + count, e + n * prob
        if e >= 5:
            observed, expected, o, e = observed + [o], expected + [e], 0, 0.0
    observed[-1], expected[-1] = observed[-1] + o, expected[-1] + e  # what is left joins the last bin
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    df = torch.tensor((len(expected) - 1) / 2, dtype=torch.float64)  # the chi² survival function:
    return torch.special.gammaincc(df, torch.tensor(statistic / 2, dtype=torch.float64)).item()


with torch.no_grad():
    ids = torch.tensor([encode(sampling_prompt)])
    p, q = target(ids)[0, -1].softmax(dim=-1), draft(ids)[0, -1].softmax(dim=-1)  # (V,) each
top = p.topk(10).indices
n_runs = 400
seeds = range(seed, seed + n_runs)
print(f"seeds {seeds[0]} … {seeds[-1]}")
firsts = [speculative_generate(target, draft, sampling_prompt, k=1, max_new_tokens=2, do_sample=True, seed=s)
          .new_tokens[0][0] for s in seeds]
counts = torch.bincount(torch.tensor(firsts), minlength=p.numel())
p64, q64 = p.double(), q.double()
resample_from_p = torch.minimum(p64, q64) + (1 - torch.minimum(p64, q64).sum()) * p64  # the bug's output
print(f"token     p (target)  q (draft)  speculative ({n_runs} runs)")
for i in top[:8].tolist():
    print(f"{token_label(decode([i])):8}  {p[i]:10.2f}  {q[i]:9.2f}  {counts[i] / n_runs:11.3f}")
rest = torch.ones_like(p, dtype=torch.bool)
rest[top[:8]] = False
print(f"the rest  {p[rest].sum():10.2f}  {q[rest].sum():9.2f}  {counts[rest].sum() / n_runs:11.3f}")
assert counts.sum() == n_runs
p_value = chi_square_p_value(counts, p64)
print(f"chi-square p-value against the target's p: {p_value:.2f} (> 1e-4: consistent with p)")
assert p_value > 1e-4  # a correct sampler fails this with probability 1e-4
wrong_p_values = {name: chi_square_p_value(counts, wrong)
                  for name, wrong in (("the draft's q", q64), ("resampling from p", resample_from_p))}
for name, value in wrong_p_values.items():
    print(f"chi-square p-value against {name}: " + ("< 1e-4 (rejected)" if value < 1e-4 else
                                                     f"{value:.2g} (not rejected: {n_runs} runs cannot tell here)"))
if default_run:  # at this step, both wrong samplers are rejected (the prose above chose it for that)
    assert abs(p[rest].sum() - 0.23600) < 1e-4
    assert all(value < 1e-4 for value in wrong_p_values.values())

# %%
shown = top[:10]
rest = torch.ones_like(p, dtype=torch.bool)
rest[shown] = False
labels = [token_label(decode([i])) for i in shown.tolist()] + [f"the other {int(rest.sum()):,}"]
target_p = p[shown].tolist() + [p[rest].sum().item()]
draft_q = q[shown].tolist() + [q[rest].sum().item()]
bug = resample_from_p[shown].tolist() + [resample_from_p[rest].sum().item()]
observed = (counts[shown] / n_runs).tolist() + [(counts[rest].sum() / n_runs).item()]
two_se = [2 * math.sqrt(pr * (1 - pr) / n_runs) for pr in target_p]  # where 95% of frequencies should land
fig, ax = plt.subplots(figsize=(9, 4.5))
x = list(range(len(labels)))
ax.bar([i - 0.2 for i in x], target_p, width=0.4, color=OKABE_ITO["blue"], yerr=two_se, capsize=3,
       label=f"target p (exact), ± 2 SE of a {n_runs}-run frequency")
ax.bar([i + 0.2 for i in x], observed, width=0.4, color=OKABE_ITO["sky blue"], hatch="//", edgecolor="white",
       label=f"speculative sampling: frequency in {n_runs} runs")
ax.plot(x, bug, ls="none", marker=MARKERS[3], markersize=8, markerfacecolor="none", markeredgewidth=2,
        color=OKABE_ITO["vermillion"], label="the bug: after a rejection, draw from p instead of the residual")
ax.plot(x, draft_q, ls="none", marker="x", markersize=8, color="black",
        label="draft q: what keeping every draft would give")
ax.set_xticks(x, labels, rotation=45, ha="right")
ax.set_xlabel(f"first new token after {sampling_prompt!r}")
ax.set_ylabel("probability / frequency")
rejected = [name for name, value in wrong_p_values.items() if value < 1e-4]
ax.set_title(f"Speculative sampling on the shipped models: {n_runs} seeded runs follow p;\n"
             + ("the bug and the draft would not" if len(rejected) == 2 else
                f"of the wrong samplers, {n_runs} runs tell apart here: {', '.join(rejected) or 'none'}"))
ax.legend(fontsize=8)
fig.tight_layout()
save_figure(fig, "08_empirical")
plt.show()
inside = sum(abs(o - t) <= s for o, t, s in zip(observed, target_p, two_se))
bug_outside = [label for label, b, t, s in zip(labels, bug, target_p, two_se) if abs(b - t) > s]
q_outside = [label for label, d, t, s in zip(labels, draft_q, target_p, two_se) if abs(d - t) > s]
print(f"{inside} of {len(labels)} frequencies lie within ± 2 SE of p; outside: the bug at {bug_outside}, "
      f"q at {q_outside}")
if default_run:  # what the next paragraph says
    assert inside == len(labels) and bug_outside and q_outside

# %% [markdown]
# The frequencies stay within the error bars of p: the output follows the target, not the draft (the
# crosses), even for tokens the draft almost never proposes. The bug's diamonds leave the error bars where the
# draft and the target disagree most (printed above): a rejection happens when the draft over-proposed a
# token, and drawing from p then hands that token out once more, where the residual would hand out only what
# the draft neglected. 400 runs keep this chapter quick; they are enough here because q and the residual both
# differ a lot from p at this step, so both wrong samplers are rejected.
#
# ## Step 10: prompt lookup, a draft without a draft model
#
# Summaries, code edits and answers that quote their question repeat their input. Prompt lookup decoding
# (Saxena; see Sources) guesses from the text itself: find the last few tokens (an n-gram) earlier in the
# sequence, and propose what followed them there. No second model, and a guess costs nothing. When the
# last 3 tokens never occurred before, try the last 2, then the last 1. By hand:

# %%
def lookup_by_hand(seq, ngram_size, num_pred_tokens):
    for n in range(min(ngram_size, len(seq) - 1), 0, -1):  # the longest n-gram first
        tail = seq[-n:]
        # the latest earlier occurrence (the tail itself does not count): its copy of the text is the freshest
        for start in range(len(seq) - n - 1, -1, -1):
            if seq[start : start + n] == tail:
                return seq[start + n : start + n + num_pred_tokens]  # what followed it
    return []  # nothing matched: no guesses, the round is plain decoding


witch_ids = encode(repeated_text)
guess = lookup_by_hand(witch_ids, ngram_size=3, num_pred_tokens=10)
print("the last 3 tokens", [decode([i]) for i in witch_ids[-3:]], f"occurred before, followed by {decode(guess)!r}")
assert guess == lookup_draft(witch_ids, ngram_size=3, num_pred_tokens=10)
for end in range(2, len(witch_ids) + 1):  # every prefix of the prompt, and a few draft lengths
    for n_pred in (1, 4, 10):
        assert lookup_by_hand(witch_ids[:end], 3, n_pred) == lookup_draft(witch_ids[:end], 3, n_pred)
print("lookup_by_hand == minigpt.speculative.lookup_draft on every prefix")

# %% [markdown]
# The guesses are checked exactly as the draft model's were, so the output is still the target's greedy
# one. A copied token is a certain guess (a q with all its mass on one token), so with sampling the rule of
# Step 8 keeps it exact too.

# %%
lookup = prompt_lookup_generate(target, repeated_text, max_new_tokens=40)
assert lookup.ids.tolist() == minigpt.generate(target, repeated_text, max_new_tokens=40).ids.tolist()
print(repr(decode(lookup.new_tokens[0])))
print(f"{lookup.num_accepted} of {lookup.num_proposed} copied guesses kept: {lookup.num_target_passes} target "
      f"passes for 40 tokens (greedy needs 40)")
print(f"what it would copy next: {decode(lookup_draft(lookup.ids[0].tolist(), 3, 10))!r}")
if default_run:  # the next paragraph: no quote of the witches, yet fewer passes than tokens
    assert not decode(lookup.new_tokens[0]).startswith(decode(guess)) and lookup.num_target_passes < 40

# %% [markdown]
# Our small target does not quote the witches: the first guess, the quote, is rejected at once (it has not
# learnt to copy a passage it has seen). But it repeats its own new line, as greedy decoding does
# (chapter 1), and each repetition is copied and accepted in a single pass. A larger model that does copy
# from its prompt gains the same way on the quoted text.

# %% [markdown]
# ## Recap
#
# **What we built.** Speculative decoding by hand: a small draft model guesses k tokens, the target checks
# them all in one pass, keeps the guesses it agrees with and puts its own token at the first one it does not,
# so the output is exactly the target's greedy output. Then the sampling rule (accept with min(1, p / q),
# else draw from the leftover max(0, p − q)), checked on the shipped models, and prompt lookup, which copies
# its guesses from the text itself. The library's matches are
# `minigpt.speculative.speculative_generate(target, draft, prompt_ids, k=k)` (with `do_sample=True` for the
# sampling rule), `minigpt.speculative.lookup_draft` and `minigpt.speculative.prompt_lookup_generate`.
#
# **Check yourself.**
#
# 1. In Step 4 the acceptance rate falls from k = 1 on, yet the number of target passes keeps falling up to
#    k = 6. Are longer drafts worse guesses?
#
# <details><summary>Answer</summary>
#
# Not necessarily. A round stops judging at the first rejected guess, but the guesses after it still count
# as proposed, so longer drafts lower the rate even when each guess is as good. The acceptance rate mixes
# how good the draft is with how long its guesses are.
#
# </details>
#
# 2. Each guess is accepted with chance α, independently. Compute the expected tokens per target pass for
#    α = 0.5 and k = 2, and the most any k could give.
#
# <details><summary>Answer</summary>
#
# $1 + 0.5 + 0.5^2 = 1.75$ tokens per pass (the target always adds one token of its own). As k grows it
# approaches $1 / (1 - \alpha) = 2$.
#
# </details>
#
# 3. With k = 6 the target needed 16 passes for 60 tokens. Why did that not make decoding on this CPU
#    nearly four times faster?
#
# <details><summary>Answer</summary>
#
# Here a pass over several positions costs more than a pass over one (Step 6), and each round also pays k
# steps of the draft. So the time saved is much smaller than the passes saved; on a GPU with a big target,
# where a pass costs about the same for a few positions, it comes closer.
#
# </details>
#
# 4. At the real step of Step 8, the target gives `'ll` 0.10 and the draft 0.18. How often is a drafted
#    `'ll` accepted, and what about `␣am` (0.13 against 0.10)?
#
# <details><summary>Answer</summary>
#
# `'ll` is accepted with $\min(1, 0.10 / 0.18) \approx 0.56$: the draft proposes it too often, so some of
# those proposals are turned down. `␣am` has $p \ge q$, so it is always accepted (1.00), and the residual
# gives it more after rejections, because the draft proposes it too rarely.
#
# </details>
#
# 5. A common bug draws from p after a rejection, instead of from the residual. Why is that no longer the
#    target's distribution?
#
# <details><summary>Answer</summary>
#
# Rejections happen when the draft over-proposed a token. Drawing from p then can hand that same token out
# once more, on top of its accepted drafts, so it comes out too often. The residual hands out only what the
# draft neglected; the chi-square test rejected the bug and accepted the correct sampler.
#
# </details>

# %% [markdown]
# ## Sources
#
# - **Speculative decoding, the sampling rule of Step 8 and the tokens-per-pass formula of Step 5**: Leviathan,
#   Y., Kalman, M., & Matias, Y. (2023). *Fast Inference from Transformers via Speculative Decoding*. ICML 2023.
#   arXiv:2211.17192.
# - **The same, found independently (speculative sampling)**: Chen, C., Borgeaud, S., Irving, G., Lespiau, J.-B.,
#   Sifre, L., & Jumper, J. (2023). *Accelerating Large Language Model Decoding with Speculative Sampling*.
#   arXiv:2302.01318.
# - **Prompt lookup decoding** (Step 10), which drafts from the text itself instead of a draft model: Saxena, A.
#   (2023). *Prompt Lookup Decoding*. GitHub, <https://github.com/apoorvumang/prompt-lookup-decoding>.
