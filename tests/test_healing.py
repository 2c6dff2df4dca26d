"""Token healing (``generate(..., token_healing=True)``) and the warning about a rare last token."""

import pytest
import torch

from minigpt.checkpoint import load_model
from minigpt.generate import generate, stream
from minigpt.healing import (
    back_up,
    back_up_rows,
    boundary_warning,
    consistent_tokens,
    healing_allowed_tokens_fn,
    last_token_boundary,
    token_bytes,
    training_tokens,
)
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import EOT_TOKEN_ID, decode, encode

SPEECH = ("Juliet.\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\n"
          "Or, if thou wilt not, be but sworn my love,\nAnd I'll no longer be a Capulet.\n\n")
CLEAN = ["ROMEO:", "JULIET:\n", "HAMLET:\nTo be, or not to be", "FALSTAFF:\nI", "Juliet.\nO Romeo, Romeo!"]


@pytest.fixture(scope="module")
def shakespeare():
    return load_model("shakespeare")


def test_the_speech_ends_in_the_rare_token():
    assert encode(SPEECH)[-1] == 628 and encode(SPEECH + "Romeo.")[-7:-4] == [13, 198, 198]


@pytest.mark.parametrize("prompt", CLEAN)
def test_a_clean_boundary_changes_nothing_greedy(shakespeare, prompt):
    plain = generate(shakespeare, prompt, max_new_tokens=12)
    healed = generate(shakespeare, prompt, max_new_tokens=12, token_healing=True)
    assert torch.equal(healed.ids, plain.ids) and healed.texts == plain.texts
    assert healed.new_tokens[0] == [encode(prompt)[-1]] + plain.new_tokens[0]  # the removed token, taken back


def test_a_clean_boundary_changes_nothing_in_a_batch(shakespeare):
    plain = generate(shakespeare, CLEAN, max_new_tokens=8)
    healed = generate(shakespeare, CLEAN, max_new_tokens=8, token_healing=True)
    assert torch.equal(healed.ids, plain.ids) and torch.equal(healed.attention_mask, plain.attention_mask)
    assert healed.texts == plain.texts


def test_it_heals_a_blank_line_token(shakespeare):
    healed = generate(shakespeare, SPEECH, max_new_tokens=10, token_healing=True)
    assert healed.new_tokens[0][:2] == [198, 198]  # "\n\n" written as the corpus writes it
    corpus_ids = torch.tensor([encode(SPEECH)[:-1] + [198, 198]])
    as_corpus = generate(shakespeare, corpus_ids, max_new_tokens=9)
    assert healed.new_tokens[0][2:] == as_corpus.new_tokens[0]
    assert healed.text == SPEECH + decode(as_corpus.new_tokens[0])
    plain = generate(shakespeare, SPEECH, max_new_tokens=10)
    assert plain.new_tokens[0][0] == 198 and healed.text != plain.text  # unhealed: a third newline first


def test_healing_by_hand_equals_the_library_greedy_and_sampled(shakespeare):
    kept, removed = back_up(encode(SPEECH))
    fn = healing_allowed_tokens_fn([removed], len(kept))
    for settings in (dict(), dict(do_sample=True, seed=3, top_k=50, temperature=0.9)):
        by_hand = generate(shakespeare, torch.tensor([kept]), max_new_tokens=13, prefix_allowed_tokens_fn=fn,
                           **settings)
        library = generate(shakespeare, SPEECH, max_new_tokens=12, token_healing=True, **settings)
        assert by_hand.new_tokens == library.new_tokens and torch.equal(by_hand.ids, library.ids)


def test_sampling_is_seeded_and_every_row_keeps_its_prompt(shakespeare):
    prompts = [SPEECH, "ROMEO:\nBut soft, what light through yonder window"]
    kwargs = dict(max_new_tokens=8, do_sample=True, seed=1, num_return_sequences=3, token_healing=True)
    first, again = generate(shakespeare, prompts, **kwargs), generate(shakespeare, prompts, **kwargs)
    assert first.new_tokens == again.new_tokens
    for row, text in enumerate(first.texts):
        prompt = prompts[row // 3]
        assert text.startswith(prompt)
        assert decode(first.new_tokens[row]).startswith("\n\n" if row < 3 else " window")


def test_id_prompts_with_a_mask_heal_like_text_prompts(shakespeare):
    prompts = [SPEECH, "JULIET:\n"]
    text = generate(shakespeare, prompts, max_new_tokens=6, token_healing=True)
    rows = [encode(p) for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[EOT_TOKEN_ID] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    out = generate(shakespeare, ids, attention_mask=mask, max_new_tokens=6, token_healing=True)
    assert out.new_tokens == text.new_tokens and out.texts is None


def test_stream_skips_the_rewritten_text(shakespeare):
    kwargs = dict(max_new_tokens=12, do_sample=True, seed=5, token_healing=True)
    pieces = list(stream(shakespeare, SPEECH, **kwargs))
    out = generate(shakespeare, SPEECH, **kwargs)
    assert [t for t, _ in pieces] == out.new_tokens[0]
    assert pieces[0][1] == "" and SPEECH + "".join(p for _, p in pieces) == out.text


def test_stop_strings_look_only_after_the_rewritten_text(shakespeare):
    out = generate(shakespeare, SPEECH, max_new_tokens=30, token_healing=True, stop="\n")
    assert out.stopped_by == ["stop"] and out.new_tokens[0][:2] == [198, 198]  # the healing "\n"s did not stop it
    name = out.text[len(SPEECH):]
    assert name and "\n" not in name
    streamed = "".join(p for _, p in stream(shakespeare, SPEECH, max_new_tokens=30, token_healing=True, stop="\n"))
    assert streamed == name


def test_backing_up_several_tokens_heals_a_word_cut_short(shakespeare):
    prompt = "Juliet.\nO Romeo, Romeo! wherefo"
    assert [decode([t]) for t in encode(prompt)[-2:]] == [" where", "fo"]
    out = generate(shakespeare, prompt, max_new_tokens=4, token_healing=2)
    assert out.text.startswith(prompt) and decode(out.new_tokens[0]).startswith(" wherefo")


def test_the_budget_gives_back_the_backed_up_tokens(tiny_model):
    out = generate(tiny_model, "Hi there", max_new_tokens=0, token_healing=True)
    assert len(out.new_tokens[0]) == 1  # max_new_tokens=0, plus the one token backed up
    # that token writes " there" again, all of it (and maybe more), or only its start: then the text ends there
    assert out.text.startswith("Hi there") or "Hi there".startswith(out.text)


def test_consistent_tokens_start_with_the_text_or_are_its_prefix():
    allowed = consistent_tokens(b" wherefo").tolist()
    texts = [token_bytes()[t] for t in allowed]
    assert all(b.startswith(b" wherefo") or b" wherefo".startswith(b) for b in texts)
    assert {b" ", b" w", b" where"} <= set(texts) and EOT_TOKEN_ID not in allowed
    assert b" where" in {token_bytes()[t] for t in consistent_tokens(b" wh").tolist()}  # a token that goes on
    every = [i for i, b in enumerate(token_bytes()) if b.startswith(b" wherefo") or b" wherefo".startswith(b)]
    assert allowed == every


def test_back_up_rows_repads_each_row():
    ids = torch.tensor([[EOT_TOKEN_ID, EOT_TOKEN_ID, 13, 628], [15610, 25132, 13, 198]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    new, new_mask, removed = back_up_rows(ids, mask, 1)
    assert new.tolist() == [[EOT_TOKEN_ID, EOT_TOKEN_ID, 13], [15610, 25132, 13]]
    assert new_mask.tolist() == [[0, 0, 1], [1, 1, 1]] and removed == [b"\n\n", b"\n"]


@pytest.mark.parametrize("value, error, message", [
    ("yes", TypeError, "token_healing must be True, False or a number of tokens >= 1, got 'yes'"),
    (1.5, TypeError, "token_healing must be True, False or a number of tokens >= 1, got 1.5"),
    (0, ValueError, "token_healing must be True, False or a number of tokens >= 1, got 0"),
    (-2, ValueError, "token_healing must be True, False or a number of tokens >= 1, got -2"),
])
def test_bad_token_healing_is_a_clear_error(tiny_model, value, error, message):
    with pytest.raises(error) as info:
        generate(tiny_model, "Hi", max_new_tokens=2, token_healing=value)
    assert str(info.value) == message


def test_a_prompt_too_short_to_back_up_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"token_healing must be fewer than the prompt's 1 token\(s\) \(at least one "
                                         r"must stay\), got 1"):
        generate(tiny_model, "Hi", max_new_tokens=2, token_healing=True)
    with pytest.raises(ValueError, match=r"fewer than the prompt's 2 token\(s\).*got 2"):
        generate(tiny_model, ["Hello world", "Hi"], max_new_tokens=2, token_healing=2)


def test_end_of_text_cannot_be_backed_up(tiny_model):
    with pytest.raises(ValueError, match=r"token_healing must back up text tokens, got <\|endoftext\|>"):
        generate(tiny_model, "Hi<|endoftext|>", max_new_tokens=2, token_healing=True, allow_special=True)


def test_healing_refuses_prefix_allowed_tokens_fn(tiny_model):
    with pytest.raises(ValueError, match=r"^prefix_allowed_tokens_fn must be None with token_healing=True"):
        generate(tiny_model, "Hi there", max_new_tokens=2, token_healing=True,
                 prefix_allowed_tokens_fn=lambda row, ids: [13])


def test_healing_refuses_an_eos_that_could_rewrite_the_prompt(tiny_model):
    with pytest.raises(ValueError, match=r"^eos_token_id must not hold a token that token_healing may use .*"
                                         r"got \[198\] in \[198, 50256\]"):
        generate(tiny_model, "Hi.\n\n", max_new_tokens=2, token_healing=True, eos_token_id=[198, 50256])
    generate(tiny_model, "Hi.\n\n", max_new_tokens=2, token_healing=True, eos_token_id=EOT_TOKEN_ID)  # fine


# ---- the warning ----


def test_boundary_counts_come_from_the_training_split():
    train = training_tokens()
    b = last_token_boundary(SPEECH)
    pairs = int(((train[:-1] == 198) & (train[1:] == 198)).sum())
    assert b.token == 628 and b.as_token == int((train == 628).sum())
    assert b.usual == (198, 198) and b.usual_count == pairs and b.as_token < b.usual_count / 10
    assert b.at_boundary >= b.as_token + b.usual_count and b.share < 0.1


def test_the_warning_fires_on_a_blank_line_token_and_not_on_a_clean_end():
    warning = boundary_warning(SPEECH)
    assert warning.startswith("the prompt ends in token 628 '\\n\\n': of the ") and "\n" not in warning
    assert "most often they are 198, 198 ('\\n' '\\n'" in warning and warning.endswith(
        "try token_healing=True, or end the prompt before these characters")
    for clean in CLEAN + [SPEECH[:-1], encode(SPEECH)[:-1] + [198, 198]]:
        assert boundary_warning(clean) is None
    assert boundary_warning("Written at London, this ") is not None  # a bare space: the next word's


def test_the_warning_on_a_small_stream():
    split = torch.tensor([13, 198, 198, 49, 13, 198, 198, 49, 13, 628, 198, 13])
    b = last_token_boundary([13, 628], split)
    assert (b.as_token, b.at_boundary, b.usual, b.usual_count) == (1, 3, (198, 198), 2)
    assert boundary_warning([13, 628], split, threshold=0.5) is not None
    assert boundary_warning([13, 628], split, threshold=0.3) is None  # 1 in 3 is not rare enough
    assert last_token_boundary([13, EOT_TOKEN_ID], split) is None


@pytest.mark.parametrize("threshold", [0, 1.5, float("nan")])
def test_a_bad_threshold_is_a_clear_error(threshold):
    with pytest.raises(ValueError, match=r"^threshold must be a number in \(0, 1\], got"):
        boundary_warning([13], torch.tensor([13]), threshold=threshold)


@pytest.mark.parametrize("do_sample", [False, True])
def test_constraints_that_forbid_every_token_are_an_error_not_a_guess(do_sample):
    """Healing "\n\n" allows only newline tokens; suppressing both leaves nothing: say so, do not pick token 0."""
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    with pytest.raises(ValueError) as error:
        generate(model, "Capulet.\n\n", max_new_tokens=3, token_healing=True, suppress_tokens=[198, 628],
                 do_sample=do_sample, seed=0)
    assert str(error.value) == (
        "the settings forbid every token at new token 1 of row 0: the allowed tokens (prefix_allowed_tokens_fn or "
        "token_healing) are all removed by bad_words_ids, suppress_tokens or the other filters; loosen one of them")
