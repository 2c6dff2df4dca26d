"""minigpt.logits against Hugging Face transformers 4.55, plus the worked numbers the chapters quote."""

import dataclasses
import functools

import pytest
import torch
import transformers
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers.generation import logits_process as hf

from minigpt.logits import (
    ORDERS,
    LogitsSettings,
    apply_temperature,
    min_p_filter,
    no_repeat_ngram,
    process_logits,
    repetition_penalty,
    split_settings,
    suppress_eos,
    top_k_filter,
    top_p_filter,
)

transformers.logging.set_verbosity_error()  # "Setting pad_token_id to eos_token_id" etc.

INF = float("inf")
PROPERTY = settings(max_examples=60, deadline=None)
SEED_VOCAB = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
SEED_LOGITS = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])


def assert_same(ours, theirs):
    # assert_close only calls infinities close when they are equal, so the -inf (removed) positions must match
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0, equal_nan=True)


def compare(ours_fn, reference, logits, input_ids=None):
    """Run ours and the transformers processor on the same (B, V) logits; ours must not touch its input."""
    if input_ids is None:
        input_ids = torch.zeros(logits.size(0), 1, dtype=torch.long)
    before = logits.clone()
    ours = ours_fn(logits)
    assert_same(logits, before)
    assert_same(ours, reference(input_ids, logits.clone()))


@st.composite
def logits_batches(draw):
    """(B, V) float logits, B in 1-4, V in 2-50; sometimes small integers (many ties), sometimes with -inf."""
    b, v = draw(st.integers(1, 4)), draw(st.integers(2, 50))
    if draw(st.booleans()):
        values = st.integers(-3, 3).map(float)  # ties everywhere, the top-k boundary included
    else:
        values = st.floats(-20, 20, width=32)  # wide enough for one token to hold nearly all the mass
    logits = torch.tensor(draw(st.lists(values, min_size=b * v, max_size=b * v))).view(b, v)
    removed = draw(st.lists(st.integers(0, b * v - 1), max_size=b * v // 2))
    logits.view(-1)[removed] = -INF  # as if an earlier filter had removed them
    return logits


@st.composite
def logits_and_ids(draw, max_id=None):
    """Logits plus (B, T) input_ids; ``max_id`` narrows the ids so that n-grams repeat."""
    logits = draw(logits_batches())
    b, v = logits.shape
    high = v - 1 if max_id is None else min(v - 1, max_id)
    t = draw(st.integers(0, 12))
    ids = draw(st.lists(st.integers(0, high), min_size=b * t, max_size=b * t))
    return logits, torch.tensor(ids, dtype=torch.long).view(b, t)


keep = st.integers(1, 5)  # min_tokens_to_keep, sometimes more than V
# quarters: the cumulative mass of tied tokens can land exactly on 1 - p, where < and <= differ
fraction = st.floats(0, 1, exclude_min=True) | st.sampled_from([0.25, 0.5, 0.75, 1.0])


# --- each transform equals its transformers processor -----------------------------------------------------------


@PROPERTY
@given(logits_batches(), st.floats(0.05, 5))
def test_temperature_matches_transformers(logits, t):
    compare(lambda x: apply_temperature(x, t), hf.TemperatureLogitsWarper(t), logits)


@PROPERTY
@given(logits_batches(), st.integers(1, 60), keep)
@example(logits=torch.tensor([[3.0, 2.0, 1.0, 0.0]]), k=1, m=3)  # min_tokens_to_keep raises k
def test_top_k_matches_transformers(logits, k, m):
    warper = hf.TopKLogitsWarper(top_k=k, min_tokens_to_keep=m)
    compare(lambda x: top_k_filter(x, k, min_tokens_to_keep=m), warper, logits)


@PROPERTY
@given(logits_batches(), fraction, keep)
@example(logits=torch.zeros(2, 4), p=0.75, m=1)  # the first cumulative sum equals 1 - p exactly: removed
def test_top_p_matches_transformers(logits, p, m):
    warper = hf.TopPLogitsWarper(top_p=p, min_tokens_to_keep=m)
    compare(lambda x: top_p_filter(x, p, min_tokens_to_keep=m), warper, logits)


@PROPERTY
@given(logits_batches(), fraction, keep)
@example(logits=torch.tensor([[4.0, 0.0, 0.0, -INF]]), min_p=0.5, m=2)  # keeps one of two tied tokens
def test_min_p_matches_transformers(logits, min_p, m):
    warper = hf.MinPLogitsWarper(min_p=min_p, min_tokens_to_keep=m)
    compare(lambda x: min_p_filter(x, min_p, min_tokens_to_keep=m), warper, logits)


@PROPERTY
@given(logits_and_ids(), st.floats(0.1, 5))
def test_repetition_penalty_matches_transformers(batch, penalty):
    logits, ids = batch
    reference = hf.RepetitionPenaltyLogitsProcessor(penalty=penalty)
    compare(lambda x: repetition_penalty(x, ids, penalty), reference, logits, ids)


@PROPERTY
@given(logits_and_ids(max_id=3), st.integers(1, 4))
def test_no_repeat_ngram_matches_transformers(batch, n):
    logits, ids = batch
    compare(lambda x: no_repeat_ngram(x, ids, n), hf.NoRepeatNGramLogitsProcessor(n), logits, ids)


@PROPERTY
@given(logits_batches(), st.data())
def test_suppress_eos_matches_min_new_tokens(logits, data):
    eos = data.draw(st.lists(st.integers(0, logits.size(1) - 1), min_size=1, max_size=3, unique=True))
    ids = torch.zeros(logits.size(0), 3, dtype=torch.long)  # a 3-token prompt, nothing generated yet
    reference = hf.MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=3, min_new_tokens=1, eos_token_id=eos)
    compare(lambda x: suppress_eos(x, eos), reference, logits, ids)


def test_top_k_keeps_every_tie_at_the_boundary():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 2.0]])
    compare(lambda x: top_k_filter(x, 2), hf.TopKLogitsWarper(2), logits)
    assert top_k_filter(logits, 2).isfinite().tolist() == [[True, False, True, True, True]]


def test_top_p_keeps_a_token_that_alone_exceeds_p():
    logits = torch.tensor([[8.0, 1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])  # row 0: p(token 0) > 0.99
    compare(lambda x: top_p_filter(x, 0.9), hf.TopPLogitsWarper(0.9), logits)
    assert top_p_filter(logits, 0.9).isfinite().tolist() == [[True, False, False, False], [True] * 4]


# --- the whole pipeline equals generate()'s processor list ------------------------------------------------------


@functools.cache
def tiny_hf_model():
    # generate() builds its processors with this model method; the weights never run
    config = transformers.GPT2Config(vocab_size=8, n_positions=8, n_embd=4, n_layer=1, n_head=1)
    return transformers.GPT2LMHeadModel(config)


def transformers_processors(prompt_length, eos_token_ids, **settings):
    """The LogitsProcessorList that generate(**settings) would apply, from _get_logits_processor itself."""
    model = tiny_hf_model()
    config = transformers.GenerationConfig(eos_token_id=list(eos_token_ids) or None, **settings)
    model._prepare_special_tokens(config, kwargs_has_attention_mask=True, device="cpu")
    return model._get_logits_processor(generation_config=config, input_ids_seq_length=prompt_length, device="cpu")


@PROPERTY
@given(logits_and_ids(max_id=3), st.data())
def test_process_logits_matches_transformers_pipeline(batch, data):
    logits, ids = batch
    draw = data.draw
    options = {
        "do_sample": draw(st.booleans()),
        "temperature": draw(st.sampled_from([1.0, 0.5, 1.7]) | st.floats(0.05, 5)),
        "top_k": draw(st.none() | st.just(0) | st.integers(1, 60)),
        "top_p": draw(st.none() | st.just(1.0) | fraction),
        "min_p": draw(st.none() | st.just(0.0) | fraction),
        "repetition_penalty": draw(st.none() | st.just(1.0) | st.floats(0.1, 5)),
        "no_repeat_ngram_size": draw(st.none() | st.just(0) | st.integers(1, 4)),
        "min_new_tokens": draw(st.integers(0, 5)),
    }
    eos = draw(st.lists(st.integers(0, logits.size(1) - 1), max_size=2, unique=True))
    new_tokens = draw(st.integers(0, ids.size(1)))
    reference = transformers_processors(ids.size(1) - new_tokens, eos, **options)
    ours = functools.partial(process_logits, input_ids=ids, new_tokens=new_tokens, eos_token_ids=eos, **options)
    compare(ours, reference, logits, ids)


@pytest.mark.parametrize("new_tokens", [0, 1, 2, 3])
def test_process_logits_suppresses_eos_until_min_new_tokens(new_tokens):
    logits, ids = torch.zeros(2, 5), torch.ones(2, 4, dtype=torch.long)
    reference = transformers_processors(4 - new_tokens, [1, 3], do_sample=False, min_new_tokens=2)
    ours = functools.partial(
        process_logits, input_ids=ids, new_tokens=new_tokens, do_sample=False, min_new_tokens=2, eos_token_ids=[1, 3]
    )
    compare(ours, reference, logits, ids)
    assert ours(logits)[:, [1, 3]].isinf().all() == (new_tokens < 2)


def test_pipeline_order_penalty_before_temperature_before_top_k():
    # penalty 2 turns [4, 3.5] into [2, 3.5]; top-k 1 must then keep token 1, and temperature 0.5 doubles it
    out = process_logits(
        torch.tensor([[4.0, 3.5]]),
        torch.tensor([[0]]),
        new_tokens=0,
        do_sample=True,
        temperature=0.5,
        top_k=1,
        repetition_penalty=2.0,
    )
    assert out.tolist() == [[-INF, 7.0]]


# --- worked numbers quoted in the chapters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (1.0, [0.2559, 0.5154, 0.0571, 0.1716]),
        (0.5, [0.1800, 0.7301, 0.0090, 0.0809]),
        (2.0, [0.2695, 0.3825, 0.1273, 0.2207]),
    ],
)
def test_temperature_worked_numbers(t, expected):
    probs = apply_temperature(torch.tensor([[0.5, 1.2, -1.0, 0.1]]), t).softmax(dim=-1)
    assert [round(p, 4) for p in probs[0].tolist()] == expected


def test_nine_word_vocabulary_greedy_and_top_k():
    assert SEED_VOCAB[int(SEED_LOGITS.argmax())] == "forward"
    assert torch.topk(SEED_LOGITS, 3).indices.tolist() == [3, 7, 0]
    kept = top_k_filter(SEED_LOGITS[None], 3)[0]
    assert kept.isfinite().nonzero().flatten().tolist() == [0, 3, 7]
    assert kept[[3, 7, 0]].tolist() == SEED_LOGITS[[3, 7, 0]].tolist()


def test_nine_word_vocabulary_thousand_draws():
    # as in LLMs-from-scratch ch05 print_sampled_tokens: one draw per call, not one call for 1,000 draws
    # (multinomial(probs, 1000, replacement=True) consumes the generator differently and gives other counts)
    probs = SEED_LOGITS.softmax(dim=0)
    torch.manual_seed(123)
    sample = [torch.multinomial(probs, num_samples=1).item() for _ in range(1_000)]
    counts = torch.bincount(torch.tensor(sample), minlength=len(SEED_VOCAB)).tolist()
    drawn = {word: count for word, count in zip(SEED_VOCAB, counts, strict=True) if count}
    assert drawn == {"closer": 73, "forward": 582, "inches": 2, "toward": 343}


# --- error messages -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "error", "message"),
    [
        ("temperature", -1.0, ValueError, "temperature must be a finite number >= 0, got -1.0"),
        ("temperature", float("nan"), ValueError, "temperature must be a finite number >= 0, got nan"),
        ("temperature", INF, ValueError, "temperature must be a finite number >= 0, got inf"),
        ("temperature", "hot", TypeError, "temperature must be a finite number >= 0, got 'hot'"),
        ("top_k", 0, ValueError, "top_k must be an integer >= 1, got 0"),
        ("top_k", 2.5, TypeError, "top_k must be an integer >= 1, got 2.5"),
        ("top_k", True, TypeError, "top_k must be an integer >= 1, got True"),
        ("top_p", 1.5, ValueError, r"top_p must be in \(0, 1\], got 1.5"),
        ("top_p", 0.0, ValueError, r"top_p must be in \(0, 1\], got 0.0"),
        ("min_p", 0.0, ValueError, r"min_p must be in \(0, 1\], got 0.0"),
        ("min_p", float("nan"), ValueError, r"min_p must be in \(0, 1\], got nan"),
        ("repetition_penalty", 0.0, ValueError, "repetition_penalty must be > 0, got 0.0"),
        ("repetition_penalty", -1.5, ValueError, "repetition_penalty must be > 0, got -1.5"),
        ("no_repeat_ngram_size", 0, ValueError, "no_repeat_ngram_size must be an integer >= 1, got 0"),
        ("no_repeat_ngram_size", False, TypeError, "no_repeat_ngram_size must be an integer >= 1, got False"),
        ("min_new_tokens", -1, ValueError, "min_new_tokens must be an integer >= 0, got -1"),
        ("min_new_tokens", 1.0, TypeError, "min_new_tokens must be an integer >= 0, got 1.0"),
    ],
)
def test_logits_settings_rejects(setting, value, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        LogitsSettings(**{setting: value})


def test_logits_settings_accepts_greedy_and_off_values():
    LogitsSettings(temperature=0)  # greedy
    LogitsSettings(
        temperature=0.7,
        top_k=50,
        top_p=1.0,
        min_p=0.05,
        repetition_penalty=1.0,
        no_repeat_ngram_size=3,
        min_new_tokens=0,
    )


LOGITS = torch.zeros(1, 4)
IDS = torch.tensor([[0, 1]])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: apply_temperature(LOGITS, 0.0),
            ValueError,
            "temperature must be a finite number > 0, got 0.0",
        ),
        (
            lambda: apply_temperature(LOGITS, -INF),
            ValueError,
            "temperature must be a finite number > 0, got -inf",
        ),
        (lambda: top_k_filter(LOGITS, 0), ValueError, "top_k must be an integer >= 1, got 0"),
        (lambda: top_k_filter(LOGITS, 2, 0), ValueError, "min_tokens_to_keep must be an integer >= 1, got 0"),
        (lambda: top_p_filter(LOGITS, 1.5), ValueError, r"top_p must be in \(0, 1\], got 1.5"),
        (
            lambda: top_p_filter(LOGITS, 0.5, 2.0),
            TypeError,
            "min_tokens_to_keep must be an integer >= 1, got 2.0",
        ),
        (lambda: min_p_filter(LOGITS, 0.0), ValueError, r"min_p must be in \(0, 1\], got 0.0"),
        (
            lambda: min_p_filter(LOGITS, 0.1, -1),
            ValueError,
            "min_tokens_to_keep must be an integer >= 1, got -1",
        ),
        (lambda: repetition_penalty(LOGITS, IDS, 0.0), ValueError, "repetition_penalty must be > 0, got 0.0"),
        (
            lambda: no_repeat_ngram(LOGITS, IDS, 0),
            ValueError,
            "no_repeat_ngram_size must be an integer >= 1, got 0",
        ),
        (
            lambda: process_logits(LOGITS, IDS, new_tokens=0, do_sample=True, top_p=2.0),
            ValueError,
            r"top_p must be in \(0, 1\], got 2.0",
        ),
    ],
)
def test_transforms_reject_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --- the settings and their chain ------------------------------------------------------------------------------


def test_the_chain_prints_its_steps_in_transformers_order_and_llama_cpps():
    settings = LogitsSettings(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.3, min_new_tokens=2)
    assert repr(settings.chain(sample=True, eos_token_ids=[50256])) == (
        "Chain, transformers order:\n"
        "  1. repetition_penalty    _repetition_penalty(logits, input_ids, 1.3)\n"
        "  2. min_new_tokens        _suppress_eos_before(logits, new_tokens, (2, (50256,)))\n"
        "  3. temperature           _apply_temperature(logits, 0.7)\n"
        "  4. top_k                 _top_k_filter(logits, 50, min_tokens_to_keep=1)\n"
        "  5. top_p                 _top_p_filter(logits, 0.9, min_tokens_to_keep=1)"
    )
    llama = dataclasses.replace(settings, order="llama.cpp").chain(sample=True)  # no EOS: nothing for min_new_tokens
    assert [step.name for step in llama.steps] == ["repetition_penalty", "top_k", "top_p", "temperature"]
    assert [step.name for step in settings.chain(sample=False).steps] == ["repetition_penalty"]
    assert repr(LogitsSettings().chain(sample=True)) == (
        "Chain, transformers order:\n  (no step: the logits pass unchanged)"
    )


def test_every_order_names_every_transform_once():
    settings = {f.name for f in dataclasses.fields(LogitsSettings)} - {"order"}
    for order in ORDERS.values():
        assert sorted(order) == sorted(settings)
    assert ORDERS["llama.cpp"][-1] == "temperature"


def test_the_orders_differ_where_temperature_meets_a_cut():
    # p = softmax([2, 1, 0]) = 0.665, 0.245, 0.090: top-p 0.8 keeps two tokens; at temperature 3 the
    # distribution flattens (0.448, 0.321, 0.230) and top-p 0.8 needs all three. llama.cpp cuts first: two
    logits, ids = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[0]])
    kept = {}
    for order in ORDERS:
        chain = LogitsSettings(temperature=3.0, top_p=0.8, order=order).chain(sample=True)
        kept[order] = int(torch.isfinite(chain(logits, ids, new_tokens=0)).sum())
    assert kept == {"transformers": 3, "llama.cpp": 2}


def test_the_chain_does_not_check_its_arguments_again(monkeypatch):
    import minigpt.logits as L

    chain = LogitsSettings(temperature=0.7, top_k=2, top_p=0.9, min_p=0.1).chain(sample=True)
    monkeypatch.setattr(L, "check_real", lambda *a, **kw: pytest.fail("checked again"))
    monkeypatch.setattr(L, "check_int", lambda *a, **kw: pytest.fail("checked again"))
    chain(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[0]]), new_tokens=0)


def test_settings_refuse_an_unknown_order_and_temperature_0_when_sampling():
    with pytest.raises(ValueError, match=r"^order must be one of transformers, llama.cpp, got 'vllm'$"):
        LogitsSettings(order="vllm")
    with pytest.raises(ValueError, match=r"^temperature must be a finite number > 0, got 0$"):
        LogitsSettings(temperature=0).chain(sample=True)
    assert LogitsSettings(temperature=0).chain(sample=False).steps == ()  # greedy


def test_split_settings_takes_the_fields_or_the_object_not_both():
    assert split_settings({"top_k": 5, "max_new_tokens": 3}) == (LogitsSettings(top_k=5), {"max_new_tokens": 3})
    with pytest.raises(TypeError, match="not both"):
        split_settings({"top_k": 5}, LogitsSettings(top_p=0.9))


def test_the_decoders_take_the_settings_object_or_its_fields(tiny_model):
    from minigpt.generate import generate
    from minigpt.search import beam_search

    settings = LogitsSettings(temperature=0.7, top_k=20, repetition_penalty=1.3)
    by_object = generate(tiny_model, "Hi", max_new_tokens=6, do_sample=True, seed=2, logits=settings)
    by_fields = generate(tiny_model, "Hi", max_new_tokens=6, do_sample=True, seed=2, temperature=0.7, top_k=20,
                         repetition_penalty=1.3)
    assert by_object.new_tokens == by_fields.new_tokens
    beams = beam_search(tiny_model, "Hi", num_beams=3, max_new_tokens=4, logits=LogitsSettings(repetition_penalty=1.3))
    assert beams.new_tokens == beam_search(tiny_model, "Hi", num_beams=3, max_new_tokens=4,
                                           repetition_penalty=1.3).new_tokens


# ---- the temperature floor (issue 29): logits / temperature must stay finite ----


@pytest.mark.parametrize("temperature", [1e-45, 5e-324, 9.99e-5])
def test_a_temperature_below_the_floor_is_refused(temperature):
    from minigpt.logits import MIN_TEMPERATURE, apply_temperature

    message = (r"^temperature must be 0 \(greedy decoding\) or at least 0.0001 \(below it, logits / temperature can "
               rf"overflow float32, and sampling is greedy decoding anyway\), got {temperature!r}$")
    assert MIN_TEMPERATURE == 1e-4
    with pytest.raises(ValueError, match=message):
        LogitsSettings(temperature=temperature)
    with pytest.raises(ValueError, match=message):
        apply_temperature(torch.zeros(1, 3), temperature)


def test_at_the_floor_large_logits_stay_finite_and_sampling_works(tiny_model):
    from minigpt.generate import generate
    from minigpt.logits import MIN_TEMPERATURE, apply_temperature

    logits = torch.tensor([[1e4, -1e4, float("-inf")]])
    assert torch.isfinite(apply_temperature(logits, MIN_TEMPERATURE)[:, :2]).all()
    out = generate(tiny_model, "Hi", max_new_tokens=3, do_sample=True, temperature=MIN_TEMPERATURE, seed=0)
    assert out.new_tokens == generate(tiny_model, "Hi", max_new_tokens=3).new_tokens  # as sharp as greedy


def test_ban_and_bias_flags_refuse_endoftext_with_the_reason():
    import argparse

    from minigpt.logits import _ban_flag, _bias_flag

    reason = r"^TEXT must be plain text without the special token '<\|endoftext\|>' \(it is the end-of-text token 50256"
    with pytest.raises(argparse.ArgumentTypeError, match=reason + r".*, got '<\|endoftext\|>'$"):
        _ban_flag("<|endoftext|>")
    with pytest.raises(argparse.ArgumentTypeError, match=reason + r".*, got ' x<\|endoftext\|>=2'$"):
        _bias_flag(" x<|endoftext|>=2")
    assert _ban_flag(" thou") == [14210] and _bias_flag(" a=b=2") == ((257, 28, 65), 2.0)
