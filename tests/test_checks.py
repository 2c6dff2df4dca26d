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
