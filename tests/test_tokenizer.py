import hashlib
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, decode, decode_bytes, encode, gpt2_encoding


def test_rank_file_is_the_published_one():
    data = (resources.files("minigpt") / "assets" / "gpt2.tiktoken").read_bytes()
    assert len(data) == 835_554
    assert hashlib.sha256(data).hexdigest() == "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def test_checked_examples():
    assert encode("Every effort moves you") == [6109, 3626, 6100, 345]
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    assert encode(text, allow_special=True) == [
        15496, 11, 466, 345, 588, 8887, 30, 220, 50256,
        554, 262, 4252, 18250, 8812, 2114, 286, 617, 34680, 27271, 13,
    ]
    assert decode(encode(text, allow_special=True)) == text


def test_vocabulary():
    enc = gpt2_encoding()
    assert enc.n_vocab == VOCAB_SIZE == 50257
    assert enc.eot_token == EOT_TOKEN_ID == 50256
    assert decode([EOT_TOKEN_ID]) == "<|endoftext|>"


def test_special_token_needs_permission():
    with pytest.raises(ValueError, match=r"text contains the special token '<\|endoftext\|>'; pass allow_special=True"):
        encode("a <|endoftext|> b")


def test_bad_input():
    with pytest.raises(TypeError, match="text must be a str, got int"):
        encode(42)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 50257\), got 50257"):
        decode([1, 50257])


def test_a_token_can_hold_half_a_character():
    ids = encode("🦜")
    assert len(ids) > 1 and decode_bytes(ids) == "🦜".encode()
    assert decode(ids[:1]) == "\ufffd"  # the lone first token is an incomplete UTF-8 sequence


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_of_any_unicode(text):
    assert decode(encode(text.replace("<|endoftext|>", ""))) == text.replace("<|endoftext|>", "")
