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
# # Chapter 10 — Constrained decoding
#
# Every chapter so far let the model say anything. Often we need a shape instead: one of a few answers, a
# date, a number, a line of a play, a JSON object. The decoding loop can enforce it: before each pick, every
# token that would break the shape gets logit −∞. This chapter builds two such constraints by hand (a choice
# between options, and a regular expression compiled into a small machine) and checks them against
# `minigpt.constrained` and `minigpt.generate(prefix_allowed_tokens_fn=...)`.
#
# A constraint fixes the *text*; the model still sees *tokens*, and where the prompt stops and the answer
# begins is a token boundary that we choose. Steps 2 and 3 show how a prompt that stops where the corpus
# never does changes every answer, and how *token healing* (`minigpt.generate(..., token_healing=True)`)
# repairs it.

# %% tags=["parameters"]
# Try your own: change these and run the chapter again.
speech = ("Juliet.\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\n"
          "Or, if thou wilt not, be but sworn my love,\nAnd I'll no longer be a Capulet.")  # who speaks next?
options = ["Romeo.", "Nurse.", "Friar Laurence.", "Benvolio."]  # the next speaker's name, on a line of its own
number_prompt = "Falstaff.\nHow many men were there? I say"  # Steps 5 and 6: a number must follow
seed = 0  # the samples of Steps 3 and 6

# %%
# %matplotlib inline
import re
import statistics
import time

import matplotlib.pyplot as plt
import regex  # the pattern language of GPT-2's tokenizer (\p{L} is "any letter"); tiktoken depends on it
import torch
from IPython.display import Markdown, display
from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's pre-tokenizer pattern, as tiktoken ships it

import minigpt
from minigpt.constrained import (
    TokenIndex,
    allowed_tokens,
    choice_logprobs,
    compile_regex,
    regex_allowed_tokens_fn,
    token_strings,
)
from minigpt.data import load_splits
from minigpt.healing import boundary_warning, last_token_boundary
from minigpt.metrics import interleaved_times, separated, spread
from minigpt.tokenizer import EOT_TOKEN_ID, decode, decode_bytes, encode
from minigpt.viz import DROPPED, KEPT, MARKERS, OKABE_ITO, plot_kept, save_figure, token_label

torch.manual_seed(0)
torch.set_num_threads(1)
model = minigpt.load_model("shakespeare")
default_run = (speech, options, number_prompt, seed) == (
    "Juliet.\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\n"
    "Or, if thou wilt not, be but sworn my love,\nAnd I'll no longer be a Capulet.",
    ["Romeo.", "Nurse.", "Friar Laurence.", "Benvolio."], "Falstaff.\nHow many men were there? I say", 0,
)  # the checks of the default run's numbers


def show(text):
    """Text with its whitespace visible: "\\n\\nRomeo." rather than two empty lines."""
    return repr(text)[1:-1]


# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Step 1: classification by constrained choice
#
# Who speaks after Juliet's "wherefore art thou Romeo?" speech? In the corpus a speech ends, a blank line
# follows, and the next speech begins with its speaker's name on a line of its own. Instead of letting the
# model write freely and hoping it names someone, we restrict it to a few options and compare how likely
# each one is. An option is usually several tokens, so its probability is the product of its tokens'
# probabilities, each given the prompt and the option's tokens before it: a sum of log-probabilities.
#
# The blank line goes *with* the option: we score `"\n\n" + name` after the speech, so that the tokenizer
# cuts the text exactly as it cut the corpus (Step 2 shows what happens otherwise). The blank line costs
# every option the same, so we print it apart.

# %%
blank = "\n\n"  # the blank line between two speeches
choices = [blank + o for o in options]


def option_logprobs_by_hand(prompt, option):
    """log p of each of the option's tokens, given the prompt and the option's tokens before it."""
    head, tail = encode(prompt), encode(option)
    with torch.no_grad():
        logits = model(torch.tensor([head + tail]))[0]  # (T, V): position t predicts token t + 1
    logp = torch.log_softmax(logits.double(), dim=-1)
    # token j of the option is predicted at position len(head) - 1 + j
    return [logp[len(head) - 1 + j, t].item() for j, t in enumerate(tail)]


NEWLINE = encode("\n")  # [198]
assert all(encode(c)[:2] == NEWLINE * 2 for c in choices)  # "\n\n" before a letter is two tokens: 198, 198
per_token = {o: option_logprobs_by_hand(speech, c) for o, c in zip(options, choices)}
library = choice_logprobs(model, speech, choices)  # one batched pass, right-padded
torch.testing.assert_close(library, torch.tensor([sum(v) for v in per_token.values()], dtype=torch.float64),
                           rtol=0, atol=1e-4)
blank_cost = sum(per_token[options[0]][:2])  # log p("\n") + log p("\n" | "\n"): the same for every option
assert all(abs(sum(v[:2]) - blank_cost) < 1e-4 for v in per_token.values())
name_score = {o: sum(v[2:]) for o, v in per_token.items()}  # log p(name | speech, blank line)
first_score = {o: v[2] for o, v in per_token.items()}  # log p(the name's first token | speech, blank line)
print(f"the blank line {show(blank)} (tokens 198, 198): log p {blank_cost:.3g}, the same before every name")
for o in options:
    # 3 significant digits: a score of -39 moves by ~5e-4 on another CPU, enough to change a third decimal
    print(f"{o:16} {len(per_token[o]) - 2} tokens   log p(name) {name_score[o]:#6.3g}   "
          f"log p(its first token) {first_score[o]:#6.3g}")
ranked = sorted(options, key=lambda o: -name_score[o])
by_first = sorted(options, key=lambda o: -first_score[o])
if default_run:  # both rankings printed below hold on every CPU: neighbours differ by at least 1e-3
    for score in (name_score, first_score):
        values = sorted(score.values(), reverse=True)
        assert min(a - b for a, b in zip(values, values[1:])) >= 1e-3
print("ranked by the whole name:", ranked)
print("ranked by its first token:", by_first)
print("hand-built option log-probs == minigpt.constrained.choice_logprobs")

# %% [markdown]
# What does the play have, and how often does the training split have each option as a speaker's line? We
# read the training split back from its tokens (`minigpt.data.load_splits`, the text the model learned from).

# %%
train, _ = load_splits()  # the training split: one stream of token ids
train_text = decode(train.tolist())
speaker_lines = {o: train_text.count(blank + o + "\n") for o in options}  # "\n\nRomeo.\n": a speech's first line
for o in options:
    print(f"{o:16} begins {speaker_lines[o]:4} speeches of the training split")
after = train_text.split(speech + blank, 1)
in_the_play = after[1].split("\n", 1)[0] if len(after) == 2 else None  # the line after the speech, if it is there
print("in the play, the next line is:", in_the_play)
never = [o for o in options if speaker_lines[o] == 0]

# %%
lines = [f"Given the blank line, the model picks **{ranked[0]}**"]
if in_the_play is not None:
    lines[0] += (", which is what the play has." if in_the_play.startswith(ranked[0]) else
                 f"; the play has {in_the_play!r}.")
if never:
    lines.append(f"{', '.join(repr(o) for o in never)} never begins a speech in the training split, and its score "
                 "shows it: a spelling the model has never seen costs it dearly.")
if by_first != ranked:
    moved = next(o for o, p in zip(by_first, ranked) if o != p)
    lines.append(f"The first token alone ranks {moved!r} at {by_first.index(moved) + 1} of {len(options)}, "
                 f"not {ranked.index(moved) + 1}: a likely start does not make a likely option, and only the "
                 "whole option's log-prob shows it.")
display(Markdown(" ".join(lines)))
if default_run:  # the sentences above, for the default options
    assert ranked[0] == "Romeo." and in_the_play.startswith("Romeo.") and never == ["Friar Laurence."]
    assert by_first[1] == "Friar Laurence."  # "Fri" is a likely start: "Friar." begins speeches too
    assert train_text.count("Friar Lawrence") > 0 and train_text.count("Laurence") == 0 and speaker_lines
    assert train_text.count(blank + "Friar.\n") > 0

# %% [markdown]
# The corpus spells the friar "Friar Lawrence" and names him "Friar." above his speeches: an option must be
# spelled as the corpus spells it. The sum also favours short options (each extra token can only lower
# it); dividing by the number of tokens is a common correction when options differ a lot in length.
#
# ## Step 2: the token boundary, a trap
#
# Now write the prompt the obvious way: the speech *and* its blank line, then the bare names as options.
# The text of prompt + option is exactly the same as before. The tokens are not.

# %%
trap_prompt = speech + blank
print("prompt ends in: ", encode(trap_prompt)[-3:], [show(decode([t])) for t in encode(trap_prompt)[-3:]])
print("prompt + option:", encode(trap_prompt + options[0])[-6:],
      [show(decode([t])) for t in encode(trap_prompt + options[0])[-6:]])
last_line = speech.rsplit("\n", 1)[-1]
print("the tokenizer's pieces:", regex.findall(r50k_pat_str, last_line[-8:] + blank))
print("                       ", regex.findall(r50k_pat_str, last_line[-8:] + blank + options[0]))
assert encode(trap_prompt)[-1] == 628 and decode([628]) == blank

# %% [markdown]
# Before merging bytes into tokens, GPT-2's tokenizer cuts the text into pieces with a regular expression.
# Its last two rules are `\s+(?!\S)` (a run of whitespace *not followed by* a non-space) and `\s+`. Before
# a word, a run of whitespace gives up its last character: `"\n\nRomeo"` is cut as `"\n"`, `"\n"`,
# `"Romeo"`. At the end of the text nothing follows, so the whole run stays one piece, and `"\n\n"` is a
# token of its own (628). So a blank line before a name, which the corpus has at every speech, is two
# tokens, and the single token 628 appears only where more whitespace follows it (a third newline, or the
# spaces of an indented line) or where a text ends. We count both in the training split, with the helper `minigpt.healing.last_token_boundary`, which finds every place where
# the training split has the prompt's last characters after a token boundary, and how it wrote them.

# %%
pairs = int(((train[:-1] == 198) & (train[1:] == 198)).sum())
print(f"training split: {len(train):,} tokens; '\\n' (198) {int((train == 198).sum()):,} times, "
      f"'\\n\\n' (628) {int((train == 628).sum()):,} times; 198 then 198: {pairs:,} times")
boundary = last_token_boundary(trap_prompt, train)
print(f"the characters {show(blank)} after a token boundary: {boundary.at_boundary:,} times; as token 628: "
      f"{boundary.as_token:,} ({boundary.share:.1%}); most often as {boundary.usual}: {boundary.usual_count:,}")
assert boundary.as_token == int((train == 628).sum()) and boundary.usual == (198, 198)
assert boundary.usual_count == pairs and boundary.as_token < pairs / 10  # 628 is the rare way to write them
followers = train[1:][train[:-1] == 628]  # the token after each 628
counts = torch.bincount(followers, minlength=EOT_TOKEN_ID + 1)
print("after 628 the training split has:",
      [(show(decode([i])), int(counts[i])) for i in counts.argsort(descending=True)[:3].tolist()])
assert counts.argmax().item() == 198  # most often a third newline: 628 is the middle of a longer run


def next_token(ids, n=4):
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids]))[0, -1].double(), dim=-1)
    top = probs.topk(n)
    return probs, [(show(decode([i])), round(p, 3)) for p, i in zip(top.values.tolist(), top.indices.tolist())]


corpus_ids = encode(speech) + NEWLINE * 2  # the speech, then the blank line as the corpus writes it
after_628, top_628 = next_token(encode(trap_prompt))
after_198, top_198 = next_token(corpus_ids)
print("next token after ... 628:      ", top_628)
print("next token after ... 198, 198: ", top_198)
trap_score = dict(zip(options, choice_logprobs(model, trap_prompt, options).tolist()))
trap_ranked = sorted(options, key=lambda o: -trap_score[o])
print(f"{'option':16} {'after 628':>10} {'after 198, 198':>15}")
for o in options:
    print(f"{o:16} {trap_score[o]:#10.3g} {name_score[o]:#15.3g}")
print("ranked after 628:", trap_ranked)
if default_run:  # the ranking printed above holds on every CPU
    values = sorted(trap_score.values(), reverse=True)
    assert min(a - b for a, b in zip(values, values[1:])) >= 1e-3

# %%
newline_after_628 = after_628[198].item()
lost = {o: name_score[o] - trap_score[o] for o in options}  # nats each option loses after 628
text = f"After 628 the model gives `\"\\n\"` a probability of {newline_after_628:.3f}"
text += (": in the corpus, 628 is followed by more whitespace, not by a name, so the model reads the prompt as a "
         "run of blank lines that is not over yet. " if newline_after_628 > 0.5 else ". ")
if all(v > 0 for v in lost.values()):
    text += f"Every option loses probability (the least by {min(lost.values()):.3g} nats). "
else:
    text += f"{sum(v > 0 for v in lost.values())} of {len(options)} options lose probability. "
if trap_ranked[0] != ranked[0]:
    text += (f"And the answer changes: after 628 the model picks **{trap_ranked[0]}**, after `198, 198` "
             f"**{ranked[0]}**. The text was the same; the answer changed because the prompt stopped at a token "
             "boundary that the corpus hardly ever has.")
else:
    text += (f"The first choice stays **{ranked[0]}** here, but every score is measured from a place the corpus "
             "hardly ever has.")
display(Markdown(text))
if default_run:
    assert all(v > 0 for v in lost.values()) and trap_ranked[0] == "Nurse." and ranked[0] == "Romeo."
    assert newline_after_628 > 0.5

# %% [markdown]
# `minigpt.healing.boundary_warning` turns those counts into one line of warning: it fires when, of the
# places where the training split has the prompt's last characters after a token boundary, fewer than
# one in ten hold the prompt's very last token. `minigpt generate` prints it (on stderr) for such a prompt.

# %%
warning = boundary_warning(trap_prompt, train)
print(warning)
assert warning is not None and boundary_warning(corpus_ids, train) is None  # the corpus's own boundary is fine

# %% [markdown]
# Two fixes. For scoring, Step 1's: keep the whitespace with what follows it, so prompt and option are cut
# as one text would be. For generation, where nothing follows yet, the next step's: token healing.
#
# ## Step 3: token healing, by hand
#
# Token healing backs up: it removes the prompt's last token and makes the first new tokens write its text
# again, in whatever tokens the model prefers. A token is allowed while it is *consistent* with the text
# still to write: it starts with it (and may go beyond), or it is a non-empty prefix of it (the next tokens
# write the rest). After 628 is removed, `"\n"` (a prefix) and `"\n\n"` (the text itself) are both allowed;
# once a `"\n"` is written, any token that starts with `"\n"` may follow; after that, anything. It is a
# `prefix_allowed_tokens_fn` over the bytes of the tokens.

# %%
token_bytes = [decode_bytes([i]) for i in range(EOT_TOKEN_ID)]  # every text token's bytes (not <|endoftext|>)
prompt_ids = encode(trap_prompt)
kept, removed = prompt_ids[:-1], decode_bytes(prompt_ids[-1:])  # back up one token: b"\n\n"
P = len(kept)


def consistent(rest):
    return [i for i, b in enumerate(token_bytes) if b.startswith(rest) or rest.startswith(b)]


def heal_fn_by_hand(batch_row, ids):
    written = decode_bytes(ids[P:].tolist())  # what the new tokens wrote so far
    rest = removed[len(written):]  # what of the removed text is still to write
    return consistent(rest) if rest else list(range(EOT_TOKEN_ID + 1))


with torch.no_grad():
    first = torch.softmax(model(torch.tensor([kept]))[0, -1].double(), dim=-1)  # the model, one token earlier
allowed_first = consistent(removed)
mass = first[allowed_first].sum().item()
print(f"{len(allowed_first)} tokens are consistent with {show(removed.decode())}; the model gives them {mass:.3f}")
for i in sorted(allowed_first, key=lambda i: -first[i])[:3]:
    print(f"  {show(decode([i])):8} p {first[i].item():.3f}   renormalised {first[i].item() / mass:.3f}")

n_new = 8
greedy = {
    "no healing": minigpt.generate(model, trap_prompt, max_new_tokens=n_new),
    "by hand": minigpt.generate(model, torch.tensor([kept]), max_new_tokens=n_new + 1,
                                prefix_allowed_tokens_fn=heal_fn_by_hand),  # + 1: the backed-up token comes back
    "library": minigpt.generate(model, trap_prompt, max_new_tokens=n_new, token_healing=True),
}
assert torch.equal(greedy["by hand"].ids, greedy["library"].ids)
healed_text = trap_prompt + decode_bytes(greedy["library"].new_tokens[0])[len(removed):].decode()
assert greedy["library"].text == healed_text and healed_text.startswith(trap_prompt)
for name in ("no healing", "library"):
    print(f"greedy, {name:10} new tokens {greedy[name].new_tokens[0][:3]}...  ", show(greedy[name].text[len(speech):]))
print("hand-built healing == minigpt.generate(..., token_healing=True)")


def greedy_margins(ids, start, allowed_at):
    """At each greedy step from `start`, the chosen token's logit minus the best other allowed one."""
    with torch.no_grad():
        logits = model(ids[None])[0, start - 1 : -1]  # (N, V): position t predicts token t + 1
    out = []
    for step, row in enumerate(logits):
        ok = torch.tensor(allowed_at(ids[: start + step]))
        top2 = row[ok].topk(2).values
        out.append((top2[0] - top2[1]).item())
    return out


if default_run:  # the printed greedy tokens are the same on every CPU: each step wins by at least 1e-3
    every = list(range(EOT_TOKEN_ID + 1))
    assert min(greedy_margins(greedy["no healing"].ids[0], len(prompt_ids), lambda ids: every)) >= 1e-3
    assert min(greedy_margins(greedy["library"].ids[0], P, lambda ids: heal_fn_by_hand(0, ids))) >= 1e-3

# %% [markdown]
# Sampling goes through the same mask: with the same seed, the hand-built function and the library draw the
# same tokens. The names after the healed blank line, three samples:

# %%
sampled = {
    "by hand": minigpt.generate(model, torch.tensor([kept]), max_new_tokens=n_new + 1, do_sample=True,
                                num_return_sequences=3, seed=seed, prefix_allowed_tokens_fn=heal_fn_by_hand),
    "library": minigpt.generate(model, trap_prompt, max_new_tokens=n_new, do_sample=True, num_return_sequences=3,
                                seed=seed, token_healing=True),
}
assert sampled["by hand"].new_tokens == sampled["library"].new_tokens
assert all(t.startswith(trap_prompt) for t in sampled["library"].texts)
for text in sampled["library"].texts:
    print(show(text[len(speech):]))
print("hand-built healing == minigpt.generate(..., token_healing=True, do_sample=True)")

# %% [markdown]
# Healing also mends a prompt cut inside a word. Without it, the model must go on from the piece the
# prompt ends in, as if the word had been split there; with it, the model may finish the word in its own
# tokens. (The warning judges only the last token's counts, so it need not fire here.) `minigpt.generate`
# does what we did by hand for batches, several samples per prompt, stop strings and streaming too
# (`minigpt generate --token-healing`). Unlike transformers' `heal_tokens`, it does not strip the prompt's
# whitespace first: here the whitespace is exactly what needs healing.

# %%
speech_ids = encode(speech)
where = max((i for i, t in enumerate(speech_ids) if len(decode([t]).strip()) >= 3), default=len(speech_ids) - 1)
piece = decode([speech_ids[where]])  # the speech's last token of three letters or more
cut = decode(speech_ids[:where]) + piece[: len(piece) - 2]  # the speech cut two letters before that token's end
cut_plain = minigpt.generate(model, cut, max_new_tokens=2)
cut_healed = minigpt.generate(model, cut, max_new_tokens=2, token_healing=True)
print("prompt ends in:", [show(decode([t])) for t in encode(cut)[-2:]])
print("warning:", boundary_warning(cut, train))
print("no healing:  ", show(cut_plain.text[len(cut) - 12:]))
print("with healing:", show(cut_healed.text[len(cut) - 12:]))
assert cut_healed.text.startswith(cut) and cut_plain.text.startswith(cut)
if default_run:  # the printed greedy tokens hold on every CPU
    every = list(range(EOT_TOKEN_ID + 1))
    cut_kept = len(encode(cut)) - 1
    cut_removed = decode_bytes(encode(cut)[-1:])

    def cut_fn(ids):
        rest = cut_removed[len(decode_bytes(ids[cut_kept:].tolist())):]
        return consistent(rest) if rest else every

    assert min(greedy_margins(cut_plain.ids[0], len(encode(cut)), lambda ids: every)) >= 1e-3
    assert min(greedy_margins(cut_healed.ids[0], cut_kept, cut_fn)) >= 1e-3

# %% [markdown]
# ## Step 4: a regular expression as a machine, by hand
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
# The pattern starts with the space, and the prompt ends just before it: the space belongs to the number's
# first token (`" 12"` is one token), as Step 2's rule gives it. A prompt that ended in the space would end
# in the bare-space token 220, which the training split rarely ends on (its warning is below).
#
# ## Step 5: from characters to tokens: the mask of one step
#
# The model does not write characters, it writes tokens, and a GPT-2 token holds several: `" the"`,
# `"2019"`, `".5"`. A token is **allowed** in a state when reading all its characters from that state keeps
# the machine alive. Tokens that are only part of a UTF-8 character (345 of them) and `<|endoftext|>` have no
# text of their own; they are never allowed inside the pattern.

# %%
strings = token_strings()  # 50,257 token texts, None where a token is not text on its own
print(f"{sum(s is None for s in strings)} tokens are not text on their own ({len(strings):,} in all)")
print("a prompt ending in a bare space:", boundary_warning(number_prompt + " ", train))


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
# What the mask does to one step: the model's distribution after the number prompt (Falstaff's "I say": he
# is about to exaggerate a number), before and after every token outside the mask is set to −∞. The kept
# tokens are renormalised: they now hold all the mass. The y axis is logarithmic, and reaches down to the
# allowed tokens: the corpus spells its numbers out ("two rogues in buckram"), so the model gives digits
# almost nothing, and the mask overrules it.

# %%
with torch.no_grad():
    probs = torch.softmax(model(torch.tensor([encode(number_prompt)]))[0, -1].double(), dim=-1)
mask = torch.zeros(len(strings), dtype=torch.bool)
mask[start_mask] = True
kept_mass = probs[mask].sum().item()
masked = torch.where(mask, probs, 0.0) / kept_mass  # what -inf logits give after the softmax
labels = [token_label(s if s is not None else decode([i])) for i, s in enumerate(strings)]
best_dropped = torch.where(mask, 0.0, probs).topk(8).indices.tolist()  # what the model wanted
best_allowed = torch.where(mask, probs, 0.0).topk(8).indices.tolist()  # what the mask allows
print(f"mass the model put on the allowed tokens: {kept_mass:.3g}")
print("most likely before:", repr(strings[int(probs.argmax())]), "| after:", repr(strings[int(masked.argmax())]))
assert abs(masked.sum().item() - 1) < 1e-9 and not mask[int(probs.argmax())]
if default_run:
    assert abs(kept_mass - 2.86e-5) < 0.01e-5

fig, (before, after) = plt.subplots(2, 1, figsize=(11, 8))
shown = best_dropped + best_allowed  # (16,) token ids: 8 the mask removes, then 8 it keeps
heights = [probs[i].item() for i in shown]
is_kept = [bool(mask[i]) for i in shown]
bars = before.bar(range(len(shown)), heights, color=[KEPT if k else DROPPED for k in is_kept],
                  hatch=None, edgecolor="black", linewidth=0.5)
for bar, k in zip(bars, is_kept):
    bar.set_hatch("" if k else "//")
before.bar_label(bars, [f"{h:.2g}" for h in heights], fontsize=7)
before.axhline(kept_mass, color=OKABE_ITO["vermillion"], ls="--", lw=1)
before.text(len(shown) - 0.5, kept_mass * 1.6, f"all {len(start_mask):,} allowed tokens together: {kept_mass:.2g}",
            ha="right", fontsize=8, color=OKABE_ITO["vermillion"])
before.set_xticks(range(len(shown)), [labels[i] for i in shown], rotation=60, ha="right", fontsize=8)
for tick, k in zip(before.get_xticklabels(), is_kept):
    tick.set_color("black" if k else "gray")
before.set_yscale("log")
before.set_ylim(min(heights) / 5, 3)
before.set_ylabel("probability (log scale)")
before.legend(handles=[plt.Rectangle((0, 0), 1, 1, facecolor=DROPPED, hatch="//", edgecolor="black"),
                       plt.Rectangle((0, 0), 1, 1, facecolor=KEPT, edgecolor="black")],
              labels=["removed by the mask (the model's favourites)", "allowed by the mask (its best digits)"],
              fontsize=8, loc="upper right")
before.set_title(f"Before: the model's next token after {show(number_prompt[-6:])!r}, removed and allowed tokens")
plot_kept(masked, labels, top=12, log=True, ax=after,
          title="After the mask of ' [0-9]+(\\.[0-9]+)?': the allowed tokens, renormalised, hold all the mass")
fig.suptitle("One step of constrained decoding")
fig.tight_layout()
save_figure(fig, "10_masked_step")
plt.show()
low, high = before.get_ylim()
assert low < min(probs[i].item() for i in best_allowed) and max(heights) < high  # every drawn bar is inside the axis

# %% [markdown]
# ## Step 6: generating through the mask
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


settings = dict(max_new_tokens=8, do_sample=True, num_return_sequences=6, seed=seed, eos_token_id=EOT_TOKEN_ID)
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
# The same machinery for two more shapes: a date, and a line of the form `Name. Text` after the speech of
# Step 1. The date's pattern begins with its space, like the number's. The line comes after the blank line,
# which we give as the corpus writes it, `198, 198` (Step 2): the prompt is ids. A line ends at a newline, so
# there the end tokens are `"\n"` and `"\n\n"` (ids 198 and 628) instead of `<|endoftext|>`: the pattern
# cannot contain them, so they can only end it. Every output must match its expression, for every seed:
# twenty samples each are checked.


# %%
def constrained_samples(pattern, prompt_ids, *, ends, n=20, max_new_tokens=40):
    index, width = TokenIndex(compile_regex(pattern)), len(prompt_ids)
    out = minigpt.generate(model, torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=True,
                           num_return_sequences=n, seed=seed, eos_token_id=ends,
                           prefix_allowed_tokens_fn=regex_allowed_tokens_fn(index, width, end_token_ids=ends))
    assert out.stopped_by == ["eos"] * n  # every row ended on its own, so no text was cut short
    texts = [decode(new[:-1]) for new in out.new_tokens]
    assert all(re.fullmatch(pattern, t) for t in texts), texts
    return texts, out, index, width


date = r" [0-3]?[0-9]/[01]?[0-9]/1[56][0-9][0-9]"
line = r"[A-Z][a-z]+\. [A-Z][A-Za-z ,;']+"
NEWLINES = [198, 628]  # "\n", "\n\n"
assert [decode([t]) for t in NEWLINES] == ["\n", "\n\n"]
date_prompt = "Written at London, this"
dates, date_out, date_index, date_width = constrained_samples(date, encode(date_prompt), ends=[EOT_TOKEN_ID],
                                                              max_new_tokens=12)
lines, line_out, line_index, line_width = constrained_samples(line, corpus_ids, ends=NEWLINES)
print(dates[:5])
for t in lines[:4]:
    print(t)
names = [t.split(".", 1)[0] + "." for t in lines]
in_corpus = [nm for nm in names if train_text.count(blank + nm + "\n") > 0]  # names that begin speeches
print(f"{len(in_corpus)} of {len(names)} sampled names begin speeches in the training split:",
      sorted(set(names)))

# %%
days_or_months = [d for d in dates if int(d.split("/")[0]) > 31 or int(d.split("/")[1]) > 12]
display(Markdown(
    "The shape is guaranteed; the sense is not. The machine knows nothing of calendars"
    + (f" ({days_or_months[0].strip()!r} is fine by the expression)" if days_or_months else "")
    + f". After the blank line the names are the model's own: {len(in_corpus)} of {len(names)} begin speeches "
    "in the training split. The text after them is in the corpus's words, but it is the model's free "
    "sampling inside a mask, not sense."))
if default_run:
    assert days_or_months and len(in_corpus) >= len(names) // 2

# %% [markdown]
# ## Step 7: a JSON object with fixed keys
#
# The keys and punctuation are literal characters of the expression: at those steps only one path is alive
# and the model has no choice. It chooses only the values, each bounded (a name of 2 to 7 letters, an age of
# one or two digits) so that every object ends within the token budget. Here too the pattern starts with
# the space after the colon.

# %%
json_pattern = r' \{"name": "[A-Z][a-z][a-z]?[a-z]?[a-z]?[a-z]?[a-z]?", "age": [0-9][0-9]?, "alive": (true|false)\}'
json_prompt = "King.\nThe account, as the clerk wrote it:"
objects, json_out, json_index, json_width = constrained_samples(json_pattern, encode(json_prompt),
                                                                ends=[EOT_TOKEN_ID], n=8, max_new_tokens=40)
for o in objects[:4]:
    print(o)

# %% [markdown]
# ## Step 8: what a step costs: the naive mask against a precomputed index
#
# The hand-built function of Step 6 walks all 50,257 token strings at every step. But the mask depends only
# on the machine's state, and a machine has few states: compute each state's mask once, and a step becomes a
# lookup. `TokenIndex` builds it by walking a trie of the token strings from each state, leaving a branch as
# soon as the machine dies (every token starting with `"a"` is rejected at once in a number). We time one
# step of each in turns, five times, in the state where the JSON object's name begins.

# %%
# NBVAL_IGNORE_OUTPUT
# why: timings depend on the machine and on what else it is running
json_dfa = json_index.dfa
t0 = time.perf_counter()
TokenIndex(json_dfa)
build = time.perf_counter() - t0
states = sorted(json_dfa.live)
assert [json_index.allowed(s).tolist() for s in states] == [allowed_tokens(json_dfa, s, strings) for s in states]
in_name = json_dfa.walk(' {"name": "')  # the state where the model chooses the name's first letter
times = interleaved_times({"naive mask": lambda: allowed_tokens(json_dfa, in_name, strings),
                           "index lookup": lambda: json_index.allowed(in_name)}, repeats=5)
print(f"JSON machine: {len(states)} states; index built in {build * 1e3:.0f} ms")
for name, t in times.items():
    print(f"one step, {name:12}: {t.mean * 1e6:10.1f} µs ± {t.stderr * 1e6:.1f} (min {t.low * 1e6:.1f}, "
          f"max {t.high * 1e6:.1f}, {t.n} runs)")
assert separated(times["naive mask"], times["index lookup"]) and times["index lookup"].mean < times["naive mask"].mean
display(Markdown("The lookup is faster here: the two intervals (mean ± 2 standard errors) do not overlap."))

# %% [markdown]
# The index is built once per expression (its time is printed above); after that, every step of every row
# is a lookup.
#
# ## Step 9: what the constraint costs the model
#
# At each step, how much probability did the unconstrained model put on the tokens the mask allowed? Near 1,
# the constraint agrees with the model; near 0, it forces the model far from what it would have written. One
# forward pass over each finished sequence gives every step's distribution. The figure follows one sample of
# each shape, every point labelled with the token that was written; below it, the median step of every
# sample.


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


shapes = {  # name: (generation, index, prompt width, end tokens)
    "date": (date_out, date_index, date_width, [EOT_TOKEN_ID]),
    "play line": (line_out, line_index, line_width, NEWLINES),
    "JSON": (json_out, json_index, json_width, [EOT_TOKEN_ID]),
}
curves = {name: [allowed_mass(out, row, index, width, ends) for row in range(len(out.new_tokens))]
          for name, (out, index, width, ends) in shapes.items()}  # name: one list of masses per sample
medians = {name: [statistics.median(m) for m in rows] for name, rows in curves.items()}
assert all(0 < m <= 1 + 1e-9 for rows in curves.values() for masses in rows for m in masses)

fig, axes = plt.subplots(3, 1, figsize=(12, 10), sharey=True)
for (name, (out, *_)), ax, colour, marker in zip(shapes.items(), axes, OKABE_ITO.values(), MARKERS):
    masses = curves[name][0]
    tokens = [decode([t]) if t != EOT_TOKEN_ID else "<end>" for t in out.new_tokens[0]]
    ax.plot(range(1, len(masses) + 1), masses, marker=marker, color=colour)
    for step, (m, tok) in enumerate(zip(masses, tokens), start=1):
        ax.annotate(token_label(tok), (step, m), textcoords="offset points", xytext=(0, 6), ha="center",
                    fontsize=7, rotation=60)
    ax.axhline(statistics.median(masses), color="gray", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_ylim(1e-11, 30)
    ax.set_xlim(0.3, len(masses) + 0.7)
    ax.set_title(f"{name}: {show(decode(out.new_tokens[0][:-1]))!r}   (dotted: its median step, "
                 f"{statistics.median(masses):.2g})", fontsize=10, loc="left")
    ax.set_ylabel("mass on the allowed")
axes[-1].set_xlabel("generation step (label: the token written)")
fig.suptitle("What the constraint costs: the model's probability on the allowed tokens, step by step (one sample each)")
fig.tight_layout()
save_figure(fig, "10_allowed_mass")
plt.show()
for name, rows in curves.items():
    s = spread(medians[name])
    print(f"{name:10} {len(rows):2} samples   median step, per sample: mean {s.mean:.3g} ± {s.stderr:.3g} "
          f"(min {s.low:.3g}, max {s.high:.3g})   lowest step of all {min(min(m) for m in rows):.3g}")
for name, rows in curves.items():  # every point of the first sample is inside its panel
    assert all(1e-11 < m < 30 for m in rows[0])
familiar = spread(medians["play line"])
alien = {name: spread(medians[name]) for name in ("date", "JSON")}
apart = all(separated(familiar, s) and s.mean < familiar.mean and s.high < familiar.low for s in alien.values())
print("every play-line sample's median step above every date and JSON sample's:", apart)

# %%
line_low = [min(range(len(m)), key=m.__getitem__) for m in curves["play line"]]  # each sample's lowest step
after_name = [new.index(13) + 1 if 13 in new else None for new in line_out.new_tokens]  # the step after the "."
low_at_space = sum(a == b for a, b in zip(line_low, after_name))
forced = {"date": "/", "JSON": "{"}  # a character the corpus almost never writes, forced by the pattern
forced_mass = {name: [m for row, masses in zip(shapes[name][0].new_tokens, curves[name])
                      for t, m in zip(row, masses) if ch in decode([t])] for name, ch in forced.items()}
print("highest mass at a step that writes '/' (dates), '{' (JSON):",
      {name: f"{max(v):.3g}" for name, v in forced_mass.items()})
if apart:
    display(Markdown(
        "Where the shape is familiar to the model (a speaker's name and a line, after the blank line the corpus "
        f"puts before them), the median step keeps {familiar.mean:.3g} of its mass on average over {familiar.n} "
        f"samples, and its lowest point is, in {low_at_space} of {familiar.n} samples, the word after the name, "
        "which must begin with a space where the corpus starts a new line instead. Dates and JSON are alien to "
        f"Shakespeare: at the median step the model puts {alien['date'].mean:.3g} (dates) and "
        f"{alien['JSON'].mean:.3g} (JSON) of its mass on what the mask allows, and at the steps that write `/` or "
        f"`{{` it puts at most {max(max(v) for v in forced_mass.values()):.3g}. A constraint guarantees the form; "
        "the lower this curve, the less the content inside it is the model's own."))
else:
    display(Markdown("With these samples the shapes do not separate: some play-line sample's median step is as low "
                     "as a date's or a JSON object's. A constraint guarantees the form, whatever it costs."))
if default_run:
    assert apart and low_at_space >= familiar.n // 2 and familiar.mean > 0.5
    assert max(s.mean for s in alien.values()) < 0.01 and max(max(v) for v in forced_mass.values()) < 1e-3

# %% [markdown]
# An earlier version of this chapter ended the date and JSON prompts in a bare space (`"this "`), so the
# pattern's first token had to begin without one, and the model's favourite next token after a bare space
# is another space. The comparison above has every prompt end where the corpus would put a boundary, so
# what is left is the shape itself, not the tokenization.

# %% [markdown]
# ## Recap
#
# **What we built.** Two constraints by hand: a choice between options, scored as the sum of each option's
# token log-probs, and a regular expression compiled into a small machine (a DFA) whose state decides which
# tokens may come next, used as a `prefix_allowed_tokens_fn` to generate numbers, dates, lines of a play and
# JSON. Along the way, token healing for a prompt that ends on an odd token boundary, and a precomputed index
# that turns each step's mask into a lookup. The library's matches are
# `minigpt.constrained.choice_logprobs`, `minigpt.constrained.compile_regex`,
# `minigpt.constrained.regex_allowed_tokens_fn` and `minigpt.constrained.TokenIndex`, used through
# `minigpt.generate(model, prompt, prefix_allowed_tokens_fn=..., eos_token_id=...)`; token healing is
# `minigpt.generate(..., token_healing=True)`, and `minigpt.healing.boundary_warning` warns about such a
# prompt.
#
# **Check yourself.**
#
# 1. "Friar Laurence." ranks second by its first token (log p -2.19) but last by the whole name (-39.1).
#    Explain why, and what the option should have been.
#
# <details><summary>Answer</summary>
#
# "Friar" is a likely start, but the corpus spells him "Friar Lawrence" and names him "Friar." above his
# speeches, so the later tokens of "Laurence." are very unlikely. An option must be spelled as the corpus
# spells it, and it must be scored as a whole, not by its first token.
#
# </details>
#
# 2. The prompt that ends in the blank line as one token (628) ranks `Nurse.` first, not `Romeo.`. Why does
#    where the prompt stops change the answer?
#
# <details><summary>Answer</summary>
#
# Before a name the corpus writes a blank line as two `'\n'` tokens (198, 198); 628 appears mostly where
# more whitespace follows. After 628 the model expects another `'\n'` (0.892), so every name becomes
# unlikely and their order is distorted. The text is the same, the tokens are not.
#
# </details>
#
# 3. What does token healing do to such a prompt?
#
# <details><summary>Answer</summary>
#
# It removes the prompt's last token and makes the first new tokens write its text again, allowing only
# tokens consistent with that text. The model then writes the blank line in the tokens it prefers (198, 198)
# and goes on as the corpus would.
#
# </details>
#
# 4. For the pattern ` [0-9]+(\.[0-9]+)?`, is `' 3.'` a match, and may the next token be `' 7'`? Is
#    `'7'` (no space) allowed at the start?
#
# <details><summary>Answer</summary>
#
# `' 3.'` is not a match: the machine is alive but in a state that needs a digit. `' 7'` is not allowed
# there (a space cannot follow the point), only digits. `'7'` is not allowed at the start either, because
# the pattern begins with a space; `' 7'` is.
#
# </details>
#
# 5. Step 9 measured how much probability the model put on the allowed tokens at each step. What does a
#    median near 1 (the play lines, 0.949) mean, against a tiny one (the dates, 3.08e-05)?
#
# <details><summary>Answer</summary>
#
# Near 1 the constraint agrees with what the model would have written anyway. Near 0 it forces the model far
# from its own choices: the corpus spells its numbers out, so digits get almost nothing, and the mask
# overrules the model at every step.
#
# </details>

# %% [markdown]
# ## Sources
#
# - **Token healing** (Steps 2 and 3): Lundberg, S. (2023). *The Art of Prompt Design: Prompt Boundaries and
#   Token Healing*. Towards Data Science; implemented in the `guidance` library. transformers has a variant,
#   `generate(..., token_healing=True)`, which strips the prompt's whitespace and biases the extensions of
#   the last token instead of masking.
# - **Constrained decoding with a finite-state machine over the vocabulary** (the precomputed index of Step 8):
#   Willard, B. T., & Louf, R. (2023). *Efficient Guided Generation for Large Language Models*.
#   arXiv:2307.09702 (the `outlines` library).
# - **Regular expressions to automata** (Step 4: Thompson's construction, then the subset construction):
#   Thompson, K. (1968). *Programming Techniques: Regular expression search algorithm*. Communications of the
#   ACM, 11(6), 419–422; Rabin, M. O., & Scott, D. (1959). *Finite Automata and Their Decision Problems*. IBM
#   Journal of Research and Development, 3(2), 114–125.
# - **`prefix_allowed_tokens_fn`** (Step 6) is transformers' name for the hook, introduced for constrained
#   entity generation: De Cao, N., Izacard, G., Riedel, S., & Petroni, F. (2021). *Autoregressive Entity
#   Retrieval*. ICLR 2021. arXiv:2010.00904.
# - The prompts quote Shakespeare: Juliet's balcony speech (*Romeo and Juliet*, Act 2, Scene 2), and Falstaff's
#   men in buckram (*Henry IV, Part 1*, Act 2, Scene 4) inspired the number prompt.
