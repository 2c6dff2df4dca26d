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
# # Chapter 10 — Constrained decoding
#
# Every chapter so far let the model say anything. Often we need a shape instead: one of a few answers, a
# date, a number, a line of a play, a JSON object. The decoding loop can enforce it: before each pick, every
# token that would break the shape gets logit −∞. This chapter builds two such constraints by hand (a choice
# between options, and a regular expression compiled into a small machine) and checks them against
# `minigpt.constrained` and `minigpt.generate(prefix_allowed_tokens_fn=...)`.

# %%
# %matplotlib inline
import re
import statistics
import time

import matplotlib.pyplot as plt
import torch

import minigpt
from minigpt.constrained import (
    TokenIndex,
    allowed_tokens,
    choice_logprobs,
    compile_regex,
    regex_allowed_tokens_fn,
    token_strings,
)
from minigpt.tokenizer import EOT_TOKEN_ID, decode, encode
from minigpt.viz import plot_kept, save_figure, token_label

torch.manual_seed(0)
torch.set_num_threads(1)
model = minigpt.load_model("shakespeare")

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: classification by constrained choice
#
# Who speaks after Juliet's "wherefore art thou Romeo?" speech? In the corpus each speech begins with the
# speaker's name on a line of its own. Instead of letting the model write freely and hoping it names someone,
# we restrict it to four options and compare how likely each one is. An option is usually several tokens
# ("Friar Laurence." is five), so its probability is the product of its tokens' probabilities, each given
# the prompt and the option's tokens before it: a sum of log-probabilities. Comparing only the first token
# would score "Fri", which begins many words besides "Friar Laurence.".

# %%
prompt = ("Juliet.\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\n"
          "Or, if thou wilt not, be but sworn my love,\nAnd I'll no longer be a Capulet.\n\n")
options = ["Romeo.", "Nurse.", "Friar Laurence.", "Benvolio."]


def option_logprob_by_hand(prompt, option):
    head, tail = encode(prompt), encode(option)
    with torch.no_grad():
        logits = model(torch.tensor([head + tail]))[0]  # (T, V): position t predicts token t + 1
    logp = torch.log_softmax(logits.double(), dim=-1)
    # token j of the option is predicted at position len(head) - 1 + j
    return sum(logp[len(head) - 1 + j, t].item() for j, t in enumerate(tail)), logp[len(head) - 1, tail[0]].item()


by_hand = {o: option_logprob_by_hand(prompt, o) for o in options}
for o, (whole, first) in by_hand.items():
    # 3 significant digits: a score of -48 moves by ~5e-4 on another CPU, enough to change a third decimal
    print(f"{o:15} {len(encode(o))} tokens   log p(option) {whole:6.3g}   log p(first token) {first:6.3g}")
library = choice_logprobs(model, prompt, options)  # one batched pass, right-padded
torch.testing.assert_close(library, torch.tensor([w for w, _ in by_hand.values()], dtype=torch.float64),
                           rtol=0, atol=1e-4)
for k in (0, 1):  # both rankings printed below hold on every CPU: neighbours differ by at least 1e-3
    ranked = sorted((v[k] for v in by_hand.values()), reverse=True)
    assert min(a - b for a, b in zip(ranked, ranked[1:])) >= 1e-3
print("ranked by the whole option:", sorted(options, key=lambda o: -by_hand[o][0]))
print("ranked by its first token: ", sorted(options, key=lambda o: -by_hand[o][1]))
print("hand-built option log-probs == minigpt.constrained.choice_logprobs")

# %% [markdown]
# The model picks the Nurse (in the play, Romeo answers, aside). The first token alone ranks "Friar
# Laurence." third, ahead of Benvolio: "Fri" is a likely start, but " Laure" after it is not, and only the
# whole option's log-prob shows it. The sum also favours short options (each extra token can only lower it);
# dividing by the number of tokens is a common correction when options differ a lot in length.
#
# ## Step 2: a regular expression as a machine, by hand
#
# A number such as ` 12` or ` 3.5` (GPT-2's words carry their leading space) matches ` [0-9]+(\.[0-9]+)?`.
# Read it one character at a time and only five situations can arise, the **states** of a deterministic
# finite automaton (DFA): at the start (0), after the space (1), in the whole part (2), just after the
# point (3), in the decimals (4). States 2 and 4 are **accepting** (the text so far is a whole number); a
# character with no arrow kills the machine: no continuation can match.

# %%
DIGITS = "0123456789"
hand_dfa = {
    0: {" ": 1},
    1: {d: 2 for d in DIGITS},
    2: {**{d: 2 for d in DIGITS}, ".": 3},
    3: {d: 4 for d in DIGITS},
    4: {d: 4 for d in DIGITS},
}
hand_accepting = {2, 4}


def walk_by_hand(text, state=0):
    for ch in text:
        state = hand_dfa[state].get(ch)
        if state is None:
            return None  # dead: no continuation can match
    return state


dfa = compile_regex(r" [0-9]+(\.[0-9]+)?")  # Thompson's construction, then the subset construction
print("states:", len(dfa.transitions), "accepting:", sorted(dfa.accepting))
for text in [" 12", " 3.5", " 3.", " 3.5.1", "12", " x"]:
    state = walk_by_hand(text)
    same = dfa.matches(text) == (state in hand_accepting) == bool(re.fullmatch(r" [0-9]+(\.[0-9]+)?", text))
    assert same and (state is None) == (dfa.walk(text) is None)
    print(f"{text!r:9} state {state}  match {state in hand_accepting}")
print("hand-built machine == minigpt.constrained.compile_regex == re.fullmatch")

# %% [markdown]
# ## Step 3: from characters to tokens: the mask of one step
#
# The model does not write characters, it writes tokens, and a GPT-2 token holds several: `" the"`,
# `"2019"`, `".5"`. A token is **allowed** in a state when reading all its characters from that state keeps
# the machine alive. Tokens that are only part of a UTF-8 character (345 of them) and `<|endoftext|>` have no
# text of their own; they are never allowed inside the pattern.

# %%
strings = token_strings()  # 50,257 token texts, None where a token is not text on its own


def allowed_by_hand(state, strings):
    return [i for i, s in enumerate(strings) if s and walk_by_hand(s, state) is not None]


start_mask = allowed_by_hand(0, strings)
assert start_mask == allowed_tokens(dfa, 0, strings) == TokenIndex(dfa).allowed(0).tolist()
print(f"allowed at the start: {len(start_mask)} of {len(strings)} tokens, e.g.",
      [strings[i] for i in start_mask[:3]], [strings[i] for i in start_mask[-3:]])
print("allowed after ' 3.':", len(allowed_by_hand(3, strings)), "tokens (digits only: no space, no second point)")
for s in [" 7", " 2019", " 3", "7", " x"]:
    print(f"token {s!r:7} allowed at the start: {strings.index(s) in start_mask}")

# %% [markdown]
# What the mask does to one step: the model's distribution after Falstaff's "I say" (he is about to
# exaggerate a number), before and after every token outside the mask is set to −∞. The kept tokens are
# renormalised: they now hold all the mass. The y axis is logarithmic: the corpus spells its numbers out
# ("two rogues in buckram"), so the model gives digits almost nothing, and the mask overrules it.

# %%
number_prompt = "Falstaff.\nHow many men were there? I say"
with torch.no_grad():
    probs = torch.softmax(model(torch.tensor([encode(number_prompt)]))[0, -1].double(), dim=-1)
mask = torch.zeros(len(strings), dtype=torch.bool)
mask[start_mask] = True
kept_mass = probs[mask].sum().item()
masked = torch.where(mask, probs, 0.0) / kept_mass  # what -inf logits give after the softmax
labels = [token_label(s if s is not None else decode([i])) for i, s in enumerate(strings)]
print(f"mass the model put on the allowed tokens: {kept_mass:.3g}")
print("most likely before:", repr(strings[int(probs.argmax())]), "| after:", repr(strings[int(masked.argmax())]))
assert abs(kept_mass - 2.86e-5) < 0.01e-5 and abs(masked.sum().item() - 1) < 1e-9
fig, axes = plt.subplots(2, 1, figsize=(10, 7))
plot_kept(probs, labels, kept=mask, top=15, log=True, ax=axes[0],
          title="Before: the model's next token after 'I say' (the allowed tokens hold 2.9e-5: too little to see)")
plot_kept(masked, labels, top=15, log=True, ax=axes[1],
          title="After the mask of ' [0-9]+(\\.[0-9]+)?': renormalised over the allowed tokens")
fig.suptitle("One step of constrained decoding")
fig.tight_layout()
save_figure(fig, "10_masked_step")
plt.show()

# %% [markdown]
# ## Step 4: generating through the mask
#
# `minigpt.generate` takes a `prefix_allowed_tokens_fn(batch_row, ids)`: at every step it asks, for each row,
# which tokens may come next, and sets the others to −∞ before sampling. Our function walks the machine over
# the tokens generated so far (everything after the prompt) and returns the allowed ones. To end, it also
# allows `<|endoftext|>` when the machine is in an accepting state, and we pass the same id as `eos_token_id`,
# so a row stops exactly when its text is a full match. A number needs a bound, or the model could write
# digits forever: three digits and one decimal here.

# %%
number = r" [0-9][0-9]?[0-9]?(\.[0-9])?"
number_dfa = compile_regex(number)
P = len(encode(number_prompt))


def number_fn_by_hand(batch_row, ids):
    state = number_dfa.walk(decode(ids[P:].tolist()))  # the characters generated so far
    allowed = allowed_tokens(number_dfa, state, strings)  # the naive mask: every token string, every step
    return allowed + [EOT_TOKEN_ID] if state in number_dfa.accepting else allowed


settings = dict(max_new_tokens=8, do_sample=True, num_return_sequences=6, seed=0, eos_token_id=EOT_TOKEN_ID)
by_hand = minigpt.generate(model, number_prompt, prefix_allowed_tokens_fn=number_fn_by_hand, **settings)
number_index = TokenIndex(number_dfa)  # the mask of every state, computed once
library = minigpt.generate(model, number_prompt, prefix_allowed_tokens_fn=regex_allowed_tokens_fn(number_index, P),
                           **settings)
assert by_hand.new_tokens == library.new_tokens
numbers = [decode(new[:-1]) for new in library.new_tokens]
assert library.stopped_by == ["eos"] * 6 and all(re.fullmatch(number, n) for n in numbers)
print(numbers)
print("hand-built prefix_allowed_tokens_fn == minigpt.constrained.regex_allowed_tokens_fn")

# %% [markdown]
# The same machinery for two more shapes: a date, and a line of the form `Name. Text`. A line ends at a
# newline, so there the end tokens are `"\n"` and `"\n\n"` (ids 198 and 628) instead of `<|endoftext|>`: the
# pattern cannot contain them, so they can only end it. Every output must match its expression, for every
# seed: twenty samples each are checked.


# %%
def constrained_samples(pattern, prompt, *, ends, n=20, max_new_tokens=40, seed=0):
    index, width = TokenIndex(compile_regex(pattern)), len(encode(prompt))
    out = minigpt.generate(model, prompt, max_new_tokens=max_new_tokens, do_sample=True, num_return_sequences=n,
                           seed=seed, eos_token_id=ends,
                           prefix_allowed_tokens_fn=regex_allowed_tokens_fn(index, width, end_token_ids=ends))
    assert out.stopped_by == ["eos"] * n  # every row ended on its own, so no text was cut short
    texts = [decode(new[:-1]) for new in out.new_tokens]
    assert all(re.fullmatch(pattern, t) for t in texts), texts
    return texts, out


date = r"[0-3]?[0-9]/[01]?[0-9]/1[56][0-9][0-9]"
line = r"[A-Z][a-z]+\. [A-Z][A-Za-z ,;']+"
NEWLINES = [198, 628]  # "\n", "\n\n"
assert [decode([t]) for t in NEWLINES] == ["\n", "\n\n"]
dates, date_out = constrained_samples(date, "Written at London, this ", ends=[EOT_TOKEN_ID], max_new_tokens=12)
line_prompt = "Juliet.\nO Romeo, Romeo! wherefore art thou Romeo?\n\n"
lines, line_out = constrained_samples(line, line_prompt, ends=NEWLINES)
print(dates[:5])
for t in lines[:4]:
    print(t)

# %% [markdown]
# The shape is guaranteed; the sense is not. The machine knows nothing of calendars (a month 19 is fine by
# the expression) and the lines are well-formed nonsense as often as not: the model is pushed off its own
# preferences at every step where the mask removes what it wanted.
#
# ## Step 5: a JSON object with fixed keys
#
# The keys and punctuation are literal characters of the expression: at those steps only one path is alive
# and the model has no choice. It chooses only the values, each bounded (a name of 2 to 7 letters, an age of
# one or two digits) so that every object ends within the token budget.

# %%
json_pattern = r'\{"name": "[A-Z][a-z][a-z]?[a-z]?[a-z]?[a-z]?[a-z]?", "age": [0-9][0-9]?, "alive": (true|false)\}'
json_prompt = "King.\nThe account, as the clerk wrote it: "
objects, json_out = constrained_samples(json_pattern, json_prompt, ends=[EOT_TOKEN_ID], n=8, max_new_tokens=40)
for o in objects[:4]:
    print(o)

# %% [markdown]
# ## Step 6: what a step costs: the naive mask against a precomputed index
#
# The hand-built function of step 4 walks all 50,257 token strings at every step. But the mask depends only
# on the machine's state, and a machine has few states: compute each state's mask once, and a step becomes a
# lookup. `TokenIndex` builds it by walking a trie of the token strings from each state, leaving a branch as
# soon as the machine dies (every token starting with `"a"` is rejected at once in a number).

# %%
# NBVAL_IGNORE_OUTPUT
# why: timings depend on the machine and on what else it is running
json_dfa = compile_regex(json_pattern)
t0 = time.perf_counter()
json_index = TokenIndex(json_dfa)
build = time.perf_counter() - t0
states = sorted(json_dfa.live)
t0 = time.perf_counter()
naive = [allowed_tokens(json_dfa, s, strings) for s in states]
naive_step = (time.perf_counter() - t0) / len(states)
t0 = time.perf_counter()
for _ in range(100):
    indexed = [json_index.allowed(s) for s in states]
lookup_step = (time.perf_counter() - t0) / (100 * len(states))
assert [x.tolist() for x in indexed] == naive  # the same masks
assert lookup_step * 100 < naive_step  # a lookup is (far more than) a hundred times cheaper
print(f"JSON machine: {len(states)} states; index built in {build * 1e3:.0f} ms")
print(f"per step: naive mask {naive_step * 1e3:.1f} ms, index lookup {lookup_step * 1e6:.1f} µs")

# %% [markdown]
# The index costs about as much as a few dozen naive steps, once per expression; a long generation, or many
# rows, pays it back quickly. (The model's forward pass is still the larger cost per step here.)
#
# ## Step 7: what the constraint costs the model
#
# At each step, how much probability did the unconstrained model put on the tokens the mask allowed? Near 1,
# the constraint agrees with the model; near 0, it forces the model far from what it would have written. One
# forward pass over each finished sequence gives every step's distribution.


# %%
def allowed_mass(out, row, pattern_index, width, ends):
    new = out.new_tokens[row]
    ids = out.ids[row, : width + len(new)]  # prompt + continuation (its end token last)
    with torch.no_grad():  # position width - 1 + step predicts new token `step`, before any mask
        probs = torch.softmax(model(ids.unsqueeze(0))[0, width - 1 : width - 1 + len(new)].double(), dim=-1)
    masses, state = [], pattern_index.dfa.start
    for step, token in enumerate(new):
        allowed = pattern_index.allowed(state).tolist()
        allowed += ends if state in pattern_index.dfa.accepting else []
        masses.append(probs[step, allowed].sum().item())
        if token not in ends:
            state = pattern_index.next_state[state][token]
    assert ids[-1].item() in ends
    return masses


curves = {
    "date": allowed_mass(date_out, 0, TokenIndex(compile_regex(date)), len(encode("Written at London, this ")),
                         [EOT_TOKEN_ID]),
    "play line": allowed_mass(line_out, 0, TokenIndex(compile_regex(line)), len(encode(line_prompt)), NEWLINES),
    "JSON": allowed_mass(json_out, 0, json_index, len(encode(json_prompt)), [EOT_TOKEN_ID]),
}
fig, ax = plt.subplots(figsize=(9, 4))
for name, masses in curves.items():
    ax.plot(range(1, len(masses) + 1), masses, marker="o", label=name)
ax.set_yscale("log")
ax.set_xlabel("generation step")
ax.set_ylabel("probability the model put on the allowed tokens")
ax.set_title("What the constraint costs: the model's mass on the allowed tokens, step by step")
ax.legend()
save_figure(fig, "10_allowed_mass")
plt.show()
for name, masses in curves.items():
    print(f"{name:10} steps {len(masses):2}   median mass {statistics.median(masses):.3g}   lowest {min(masses):.3g}")
assert all(0 < m <= 1 + 1e-9 for masses in curves.values() for m in masses)
EXPECTED = {"date": (11, 7.84e-5, 1.11e-7), "play line": (13, 0.526, 6.82e-3), "JSON": (32, 5.66e-4, 1.09e-7)}
for name, (steps, median, lowest) in EXPECTED.items():  # the printed values, to 1% (another CPU: ~1e-5)
    assert len(curves[name]) == steps
    assert abs(statistics.median(curves[name]) / median - 1) < 0.01 and abs(min(curves[name]) / lowest - 1) < 0.01

# %% [markdown]
# Where the shape is familiar to the model (the play line: the corpus is made of lines of text), the median
# step keeps about half of its mass. Dates and JSON are alien to Shakespeare: the model puts a ten-thousandth
# of its mass or less on what the mask allows at the median step, and every forced character (`{"`, `/`)
# is one it would almost never have written. A constraint guarantees the form; the lower this curve, the
# less the content inside it is the model's own.
#
# ## Sources
#
# - **Constrained decoding with a finite-state machine over the vocabulary** (the precomputed index of Step 6):
#   Willard, B. T., & Louf, R. (2023). *Efficient Guided Generation for Large Language Models*.
#   arXiv:2307.09702 (the `outlines` library).
# - **Regular expressions to automata** (Step 2: Thompson's construction, then the subset construction):
#   Thompson, K. (1968). *Programming Techniques: Regular expression search algorithm*. Communications of the
#   ACM, 11(6), 419–422; Rabin, M. O., & Scott, D. (1959). *Finite Automata and Their Decision Problems*. IBM
#   Journal of Research and Development, 3(2), 114–125.
# - **`prefix_allowed_tokens_fn`** (Step 4) is transformers' name for the hook, introduced for constrained
#   entity generation: De Cao, N., Izacard, G., Riedel, S., & Petroni, F. (2021). *Autoregressive Entity
#   Retrieval*. ICLR 2021. arXiv:2010.00904.
# - The prompts quote Shakespeare: Juliet's balcony speech (*Romeo and Juliet*, Act 2, Scene 2), and Falstaff's
#   men in buckram (*Henry IV, Part 1*, Act 2, Scene 4) inspired the number prompt.
