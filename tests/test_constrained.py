"""minigpt.constrained: the regex compiler agrees with Python's re, the token index with the naive mask, and
constrained generation always produces text that matches its expression."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minigpt
from minigpt.constrained import (
    TokenIndex,
    allowed_tokens,
    choice_logprobs,
    compile_regex,
    regex_allowed_tokens_fn,
    token_strings,
)
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import EOT_TOKEN_ID, decode, encode

PATTERNS = [r" [0-9]+(\.[0-9]+)?", r"[0-3]?[0-9]/[01]?[0-9]/1[56][0-9][0-9]", r"(yes|no)!?", r"a*b+|c?",
            r"[A-Z][a-z]+\. [A-Z][A-Za-z ,;']+", r'\{"k": (true|false)\}', r"(ab|a)*c", r"x\ny", r"()"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny"))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATTERNS), st.text(alphabet="0123456789 ./abcxyAZyesno!{}\":tfrue\n", max_size=12))
def test_the_machine_agrees_with_re_fullmatch(pattern, text):
    assert compile_regex(pattern).matches(text) == bool(re.fullmatch(pattern, text))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_examples_python_accepts_are_accepted(pattern):
    dfa = compile_regex(pattern)
    for text in {"yes", "no!", " 3.25", "12/7/1599", "aabbb", "c", "", "Iden. Regan, father", '{"k": true}',
                 "ababac", "x\ny"}:
        assert dfa.matches(text) == bool(re.fullmatch(pattern, text))


@pytest.mark.parametrize("pattern, what", [
    ("a{2}", "repetition counts"), ("[^a]", "negated"), (".", "'.'"), ("a**", "another quantifier"),
    ("(?:a)", "'(?'"), (r"\w", r"\w"), ("(a", "not closed"), ("a)", "unbalanced"), ("[a", "not closed"),
    ("*a", "nothing to repeat"), ("[z-a]", "range"), ("^a", "'^'"),
])
def test_unsupported_syntax_is_refused_by_name(pattern, what):
    with pytest.raises(ValueError, match="pattern must use only the supported syntax") as info:
        compile_regex(pattern)
    assert what in str(info.value)


def test_a_pattern_must_be_a_string():
    with pytest.raises(TypeError, match="pattern must be a string"):
        compile_regex(3)


@pytest.mark.parametrize("pattern", PATTERNS[:6])
def test_the_index_equals_the_naive_mask_in_every_state(pattern):
    dfa, strings = compile_regex(pattern), token_strings()
    index = TokenIndex(dfa)
    for state in sorted(dfa.live):
        assert index.allowed(state).tolist() == allowed_tokens(dfa, state, strings)


def test_token_strings_cover_the_vocabulary():
    strings = token_strings()
    assert len(strings) == 50257 and strings[EOT_TOKEN_ID] is None and strings[6109] == "Every"
    assert all(s is None or decode([i]) == s for i, s in enumerate(strings[:2000]))


def test_bad_states_and_end_tokens_are_refused():
    index = TokenIndex(compile_regex("(yes|no)"))
    with pytest.raises(ValueError, match="state must be"):
        index.allowed(99)
    with pytest.raises(ValueError, match="prompt_len must be"):
        regex_allowed_tokens_fn(index, -1)
    with pytest.raises(ValueError, match="end_token_ids must not be tokens the pattern can contain"):
        regex_allowed_tokens_fn(TokenIndex(compile_regex("a+")), 1, end_token_ids=[encode("a")[0]])
    with pytest.raises(ValueError, match="end_token_ids must be"):
        regex_allowed_tokens_fn(index, 1, end_token_ids=[])
    with pytest.raises(TypeError, match="index must be a TokenIndex"):
        regex_allowed_tokens_fn("(yes|no)", 1)


BOUNDED = PATTERNS[1:3] + PATTERNS[5:6]  # every match is at most 11 characters: every row must end on its own


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([PATTERNS[0], *BOUNDED]), st.integers(0, 10_000))
def test_every_constrained_sample_matches(tiny, pattern, seed):
    prompt = "Answer:"
    index = TokenIndex(compile_regex(pattern))
    out = minigpt.generate(tiny, prompt, max_new_tokens=20, do_sample=True, num_return_sequences=3, seed=seed,
                           eos_token_id=EOT_TOKEN_ID,
                           prefix_allowed_tokens_fn=regex_allowed_tokens_fn(index, len(encode(prompt))))
    if pattern in BOUNDED:
        assert out.stopped_by == ["eos"] * 3
    for new, why in zip(out.new_tokens, out.stopped_by):
        text = decode(new[:-1] if why == "eos" else new)
        if why == "eos":
            assert re.fullmatch(pattern, text)
        else:  # cut by max_new_tokens: still a live prefix of a match
            assert index.dfa.walk(text) is not None


def test_choice_logprobs_sums_every_token_of_each_option(tiny):
    prompt, options = "Who speaks?", [" Romeo.", " Friar Laurence."]
    got = choice_logprobs(tiny, prompt, options)
    for score, option in zip(got.tolist(), options):
        ids = encode(prompt) + encode(option)
        with torch.no_grad():
            logp = torch.log_softmax(tiny(torch.tensor([ids]))[0].double(), -1)
        P = len(encode(prompt))
        assert score == pytest.approx(sum(logp[P - 1 + j, t].item() for j, t in enumerate(encode(option))), abs=1e-6)


@pytest.mark.parametrize("prompt, options, match", [
    ("", [" a"], "prompt must be"), ("x", [], "options must be"), ("x", [" a", ""], "options must be"),
    ("x", " a", "options must be"),
])
def test_choice_logprobs_refuses_bad_input(tiny, prompt, options, match):
    with pytest.raises(ValueError, match=match):
        choice_logprobs(tiny, prompt, options)
