"""minigpt.metrics: worked examples with exact values, the identity between the two n-gram counts, the model's
mean log-probability against a direct computation, and the named errors."""

import math

import pytest
import torch

import minigpt
from minigpt.metrics import distinct_n, mean_logprob, repeated_ngram_rate
from minigpt.model import GPT, GPTConfig


@pytest.mark.parametrize("tokens, n, expected", [
    ([1, 2, 3, 4], 2, 1.0),  # nothing repeats
    ([9, 9, 9, 9], 2, 1 / 3),  # (9, 9) three times
    ([1, 2, 1, 2, 1], 2, 2 / 4),  # (1, 2) (2, 1) (1, 2) (2, 1)
    ([1, 2, 3, 1, 2, 3], 3, 3 / 4),  # (1,2,3) (2,3,1) (3,1,2) (1,2,3)
    ([5], 1, 1.0),
    (torch.tensor([4, 4, 5]), 1, 2 / 3),
])
def test_distinct_n_worked_examples(tokens, n, expected):
    assert distinct_n(tokens, n) == expected


@pytest.mark.parametrize("tokens, n, expected", [
    ([1, 2, 3, 4, 5], 4, 0.0),
    ([1, 2, 3, 4, 1, 2, 3, 4], 4, 1 / 5),  # the fifth 4-gram is the first again
    ([7, 7, 7, 7, 7, 7, 7], 4, 3 / 4),  # four 4-grams, all (7, 7, 7, 7): three repeats
    ([1, 2, 1, 2, 1, 2, 1, 2], 4, 3 / 5),  # (1,2,1,2) (2,1,2,1) then three repeats
    (torch.tensor([3, 3]), 1, 1 / 2),
])
def test_repeated_ngram_rate_worked_examples(tokens, n, expected):
    assert repeated_ngram_rate(tokens, n) == expected


def test_the_defaults_are_distinct_2_and_repeated_4_grams():
    tokens = [1, 2, 1, 2, 1, 2, 1, 2]
    assert distinct_n(tokens) == distinct_n(tokens, 2) == 2 / 7
    assert repeated_ngram_rate(tokens) == repeated_ngram_rate(tokens, 4) == 3 / 5


def test_repeat_rate_is_one_minus_distinct_for_the_same_n():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 4):
        for _ in range(20):
            tokens = torch.randint(0, 4, (12,), generator=g).tolist()
            assert math.isclose(repeated_ngram_rate(tokens, n), 1 - distinct_n(tokens, n))


def test_mean_logprob_is_the_mean_of_the_continuations_log_softmax():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=12, n_layer=1, n_head=2, n_embd=8)).eval()
    prompt, continuation = [3, 1, 4], [1, 5, 9, 2]
    with torch.no_grad():
        log_probs = model(torch.tensor([prompt + continuation]))[0].log_softmax(dim=-1)
    # the token at position t is predicted by position t - 1
    by_hand = sum(log_probs[len(prompt) + i - 1, t].item() for i, t in enumerate(continuation)) / len(continuation)
    assert mean_logprob(model, prompt, continuation) == pytest.approx(by_hand, abs=1e-6)
    assert mean_logprob(model, torch.tensor(prompt), torch.tensor(continuation)) == pytest.approx(by_hand, abs=1e-6)


def test_mean_logprob_keeps_the_models_mode_and_ignores_dropout():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=12, n_layer=1, n_head=2, n_embd=8, dropout=0.5)).train()
    first = mean_logprob(model, [1, 2], [3, 4, 5])
    assert model.training
    assert mean_logprob(model, [1, 2], [3, 4, 5]) == first  # dropout was off for both


def test_mean_logprob_of_the_shipped_model_on_one_line():
    model = minigpt.load_model("shakespeare")
    prompt, line = minigpt.encode("ROMEO:\n"), minigpt.encode("But soft, what light through yonder window breaks?")
    # a famous line from a play it trained on: well above the uniform log(1 / 50257) = -10.8
    assert -6 < mean_logprob(model, prompt, line) < 0


@pytest.mark.parametrize("call, error, message", [
    (lambda: distinct_n([1, 2, 3], 0), ValueError, "n must be an integer >= 1, got 0"),
    (lambda: distinct_n([1, 2, 3], 2.0), TypeError, "n must be an integer >= 1, got 2.0"),
    (lambda: distinct_n([1, 2, 3], 4), ValueError, "tokens must hold at least n=4 tokens (one n-gram), got 3"),
    (lambda: repeated_ngram_rate([], 1), ValueError, "tokens must hold at least n=1 tokens (one n-gram), got 0"),
    (lambda: repeated_ngram_rate("abcd", 2), TypeError, "tokens must be a 1-D integer tensor or a list of ints"),
    (lambda: distinct_n([1.0, 2.0], 1), TypeError, "tokens must be a 1-D integer tensor or a list of ints"),
    (lambda: distinct_n(torch.tensor([[1, 2]]), 1), TypeError, "got a tensor of shape (1, 2)"),
    (lambda: distinct_n(torch.tensor([1.0, 2.0]), 1), TypeError, "dtype torch.float32"),
])
def test_ngram_metrics_name_what_is_wrong(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert message in str(raised.value)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8))


@pytest.mark.parametrize("prompt, continuation, error, message", [
    ([], [1], ValueError, "must each hold at least one token, got 0 and 1"),
    ([1], [], ValueError, "must each hold at least one token, got 1 and 0"),
    ([1] * 5, [2] * 4, ValueError, "must fit the model's context of 8 tokens, got 9"),
    ([1], [16], ValueError, "must be token ids in [0, 16)"),
    ([1], [-1], ValueError, "must be token ids in [0, 16)"),
    ("ab", [1], TypeError, "prompt_ids must be a 1-D integer tensor or a list of ints"),
    ([1], [[2]], TypeError, "continuation_ids must be a 1-D integer tensor or a list of ints"),
])
def test_mean_logprob_names_what_is_wrong(tiny, prompt, continuation, error, message):
    with pytest.raises(error) as raised:
        mean_logprob(tiny, prompt, continuation)
    assert message in str(raised.value)
