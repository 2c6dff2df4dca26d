"""The shared argument checks of minigpt.checks: one message format, the type in the message."""

import pytest
import torch

from minigpt.checks import check_model, check_type
from minigpt.model import GPT, GPTConfig


def test_check_type_names_the_value_and_its_type():
    with pytest.raises(TypeError, match=r"^prompt must be a str, got b'Hi' \(bytes\)$"):
        check_type("prompt", b"Hi", str, "a str")
    with pytest.raises(TypeError, match=r"^x must be a str, got None$"):
        check_type("x", None, str, "a str")
    check_type("x", "fine", (str, bytes), "a str or bytes")


def test_check_type_clips_a_long_value():
    with pytest.raises(TypeError) as error:
        check_type("prompt", b"a" * 10_000, str, "a str")
    assert str(error.value) == f"prompt must be a str, got {repr(b'a' * 10_000)[:77]}... (bytes)"


@pytest.mark.parametrize("bad, shown", [(torch.nn.Linear(2, 2), r"Linear\(in_features=2, out_features=2, bias=True\) "
                                                               r"\(Linear\)"),
                                        ("gpt2", r"'gpt2' \(str\)"), (None, "None")])
def test_check_model_wants_a_minigpt_gpt(bad, shown):
    message = (r"^model must be a minigpt GPT \(minigpt.model.GPT; load one by name or path with "
               rf"minigpt.load_model\), got {shown}$")
    with pytest.raises(TypeError, match=message):
        check_model("model", bad)
    check_model("model", GPT(GPTConfig.from_preset("tiny")))


@pytest.fixture(scope="module")
def tiny():
    return GPT(GPTConfig.from_preset("tiny"))


def test_a_missing_required_setting_is_named_not_the_settings_class(tiny):
    from minigpt.search import beam_search

    with pytest.raises(TypeError) as error:
        beam_search(tiny, "Hi", num_beams=2)
    assert str(error.value) == "max_new_tokens is required (it has no default), got only num_beams"


def test_an_unknown_setting_lists_the_settings(tiny):
    from minigpt.generate import generate
    from minigpt.search import beam_search

    with pytest.raises(TypeError) as error:
        generate(tiny, "Hi", max_new_tokens=2, top_kk=5)
    assert str(error.value) == (
        "unknown setting 'top_kk': the settings are allow_special, do_sample, eos_token_id, logits, "
        "max_new_tokens, num_return_sequences, stop, use_cache and LogitsSettings' fields"
    )
    with pytest.raises(TypeError, match=r"^unknown setting 'topk': the settings are allow_special, diversity_penalty"):
        beam_search(tiny, "Hi", num_beams=2, max_new_tokens=2, topk=1)
