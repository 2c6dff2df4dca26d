"""The rest of the sampling family in minigpt.logits against transformers 4.55, and the OpenAI penalties against
their formula. Same hypothesis inputs as test_logits.py: ties, -inf, min_tokens_to_keep above V."""

import functools
import math

import pytest
import torch
import transformers
from hypothesis import assume, example, given
from hypothesis import strategies as st
from test_logits import (
    INF,
    PROPERTY,
    assert_same,
    compare,
    fraction,
    keep,
    logits_and_ids,
    logits_batches,
    tiny_hf_model,
)
from transformers.generation import logits_process as hf

from minigpt.logits import (
    LogitsSettings,
    allowed_tokens_filter,
    apply_frequency_penalty,
    apply_presence_penalty,
    apply_sequence_bias,
    ban_bad_words,
    epsilon_filter,
    eta_filter,
    process_logits,
    repetition_penalty,
    suppress_tokens,
    typical_filter,
)

below_one = fraction.filter(lambda p: p < 1)  # transformers' typical, epsilon and eta warpers refuse 1
cutoff = below_one | st.sampled_from([1e-4, 3e-4, 2e-3, 0.02])  # the papers' values, as well as large ones


@st.composite
def token_sequences(draw, vocab, max_len=3, max_count=4, high=3):
    """A few token-id tuples over ids 0..min(vocab - 1, high): small ids, so that they occur in the context."""
    ids = st.integers(0, min(vocab - 1, high))
    return draw(st.lists(st.lists(ids, min_size=1, max_size=max_len).map(tuple), min_size=1, max_size=max_count))


def every_row_has_a_finite_logit(logits):
    return bool(logits.isfinite().any(dim=-1).all())


# --- the sampling filters ------------------------------------------------------------------------------------------


@PROPERTY
@given(logits_batches(), below_one, keep)
@example(logits=torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0]]), mass=0.5, m=1)  # the most likely token goes
@example(logits=torch.zeros(2, 4), mass=0.5, m=1)  # every token equally typical: all tied, all kept
def test_typical_matches_transformers(logits, mass, m):
    warper = hf.TypicalLogitsWarper(mass=mass, min_tokens_to_keep=m)
    compare(lambda x: typical_filter(x, mass, min_tokens_to_keep=m), warper, logits)


@PROPERTY
@given(logits_batches(), cutoff, keep)
@example(logits=torch.tensor([[math.log(2), 0.0, 0.0]]), epsilon=0.25, m=1)  # p = 0.5, 0.25, 0.25: p = epsilon kept
@example(logits=torch.tensor([[0.0, 0.0, 0.0, 5.0]]), epsilon=0.5, m=3)  # min_tokens_to_keep keeps both ties
def test_epsilon_matches_transformers(logits, epsilon, m):
    warper = hf.EpsilonLogitsWarper(epsilon=epsilon, min_tokens_to_keep=m)
    compare(lambda x: epsilon_filter(x, epsilon, min_tokens_to_keep=m), warper, logits)


@PROPERTY
@given(logits_batches(), cutoff, keep)
@example(logits=torch.tensor([[1.0, 0.0, 0.0, 0.0, -1.0]]), epsilon=0.2, m=1)  # eta below epsilon: more kept
def test_eta_matches_transformers(logits, epsilon, m):
    assume(every_row_has_a_finite_logit(logits))  # transformers' Categorical raises on a row of -inf
    warper = hf.EtaLogitsWarper(epsilon=epsilon, min_tokens_to_keep=m)
    compare(lambda x: eta_filter(x, epsilon, min_tokens_to_keep=m), warper, logits)


def test_filters_leave_a_row_with_nothing_left_alone():
    logits = torch.tensor([[-INF, -INF, -INF], [1.0, 2.0, -INF]])
    for out in (typical_filter(logits, 0.5), epsilon_filter(logits, 0.3), eta_filter(logits, 0.3)):
        assert out[0].isneginf().all() and out[1].tolist() == [-INF, 2.0, -INF]


def test_typical_can_drop_the_most_likely_token_where_top_p_cannot():
    logits = torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0]])  # p = 0.40, then 0.15 four times; entropy 1.50 nats
    assert typical_filter(logits, 0.5).isfinite().tolist() == [[False, True, True, True, True]]


def test_eta_cut_falls_with_entropy_epsilon_does_not():
    flat = torch.tensor([[1.0, 0.0, 0.0, 0.0, -1.0]])  # entropy 1.42 nats: eta = sqrt(0.2) * exp(-1.42) = 0.108
    assert epsilon_filter(flat, 0.2).isfinite().sum() == 1
    assert eta_filter(flat, 0.2).isfinite().sum() == 4


# --- biases, bans and constraints --------------------------------------------------------------------------------


@PROPERTY
@given(logits_and_ids(max_id=3), st.data())
def test_sequence_bias_matches_transformers(batch, data):
    logits, ids = batch
    sequences = data.draw(token_sequences(logits.size(1)))
    values = st.floats(-10, 10, width=32) | st.just(-INF) | st.integers(-3, 3).map(float)
    bias = {seq: data.draw(values) for seq in sequences}
    reference = hf.SequenceBiasLogitsProcessor(sequence_bias=bias)
    compare(lambda x: apply_sequence_bias(x, ids, bias), reference, logits, ids)


def test_sequence_bias_adds_up_and_is_found_at_the_end_of_the_context_only():
    ids = torch.tensor([[1, 2, 3], [3, 1, 2], [2, 1, 1]])
    bias = {(2, 3): 1.0, (1, 2, 3): 2.0, (3,): -0.5, (1, 1): 4.0}
    out = apply_sequence_bias(torch.zeros(3, 5), ids, bias)
    assert out.tolist() == [[0, 0, 0, -0.5, 0], [0, 0, 0, 2.5, 0], [0, 4.0, 0, -0.5, 0]]
    compare(lambda x: apply_sequence_bias(x, ids, bias), hf.SequenceBiasLogitsProcessor(bias), torch.zeros(3, 5), ids)
    # the list-of-pairs form is the same setting
    assert torch.equal(apply_sequence_bias(torch.zeros(3, 5), ids, [(list(k), v) for k, v in bias.items()]), out)


def test_sequence_as_long_as_the_context_plus_one_is_not_looked_for_as_in_transformers():
    ids = torch.tensor([[1]])  # (1, 2) would complete the context [1], but it is longer than the context
    out = apply_sequence_bias(torch.zeros(1, 3), ids, {(1, 2): -INF})
    assert out.tolist() == [[0.0, 0.0, 0.0]]
    compare(lambda x: apply_sequence_bias(x, ids, {(1, 2): -INF}), hf.SequenceBiasLogitsProcessor({(1, 2): -INF}),
            torch.zeros(1, 3), ids)


@PROPERTY
@given(logits_and_ids(max_id=3), st.data())
def test_bad_words_match_transformers(batch, data):
    logits, ids = batch
    words = [list(w) for w in data.draw(token_sequences(logits.size(1)))]
    eos = data.draw(st.lists(st.integers(0, min(logits.size(1) - 1, 3)), max_size=2, unique=True))
    if all(len(w) == 1 and w[0] in eos for w in words):  # transformers raises: nothing left to ban
        assert_same(ban_bad_words(logits, ids, words, eos), logits)
        return
    reference = hf.NoBadWordsLogitsProcessor(words, eos_token_id=eos or None)
    compare(lambda x: ban_bad_words(x, ids, words, eos), reference, logits, ids)


def test_bad_words_never_ban_an_eos_id_alone():
    ids = torch.tensor([[1, 2]])
    out = ban_bad_words(torch.zeros(1, 4), ids, [[3], [2, 0], [1]], eos_token_ids=[3])
    assert out.isfinite().tolist() == [[False, False, True, True]]  # 3 is EOS: left for min_new_tokens to handle
    assert ban_bad_words(torch.zeros(1, 4), ids, [[3]], eos_token_ids=[3]).isfinite().all()


@PROPERTY
@given(logits_batches(), st.data())
def test_suppress_tokens_matches_transformers(logits, data):
    tokens = data.draw(st.lists(st.integers(0, logits.size(1) - 1), min_size=1, max_size=5))
    compare(lambda x: suppress_tokens(x, tokens), hf.SuppressTokensLogitsProcessor(tokens), logits)


def table_of_allowed_tokens(data, vocab):
    """A function of (batch id, ids so far) that hypothesis draws: its answer depends on both."""
    table = data.draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=vocab), min_size=1,
                               max_size=6))

    def allowed(batch_id, ids):
        last = int(ids[-1]) if len(ids) else 0
        return table[(3 * batch_id + last) % len(table)]

    return allowed


@PROPERTY
@given(logits_and_ids(), st.data())
def test_allowed_tokens_match_transformers_prefix_constraint(batch, data):
    logits, ids = batch
    allowed = table_of_allowed_tokens(data, logits.size(1))
    reference = hf.PrefixConstrainedLogitsProcessor(allowed, num_beams=1)
    compare(lambda x: allowed_tokens_filter(x, ids, allowed), reference, logits, ids)


def test_allowed_tokens_are_asked_for_with_each_rows_batch_id():
    calls = []

    def allowed(batch_id, ids):
        calls.append((batch_id, ids.tolist()))
        return [batch_id]

    out = allowed_tokens_filter(torch.zeros(2, 5), torch.tensor([[7, 8], [9, 9]]), allowed, batch_ids=[4, 1])
    assert calls == [(4, [7, 8]), (1, [9, 9])]  # e.g. rows 4 and 1 of a batch whose other rows have finished
    assert out.isfinite().tolist() == [[False, False, False, False, True], [False, True, False, False, False]]


# --- frequency and presence penalties: the OpenAI formula ----------------------------------------------------------


def openai_formula(logits, generated, frequency, presence):
    """mu[j] - c[j] * alpha_frequency - (c[j] > 0) * alpha_presence, element by element, in float64."""
    out = logits.double().clone()
    for row, tokens in enumerate(generated.tolist()):
        for j in set(tokens):
            c = tokens.count(j)
            out[row, j] = out[row, j] - c * frequency - (c > 0) * presence
    return out


penalty = st.floats(-2, 2) | st.sampled_from([-2.0, 0.0, 0.5, 2.0])


@PROPERTY
@given(logits_and_ids(max_id=3), penalty, penalty)
def test_frequency_and_presence_penalties_follow_the_openai_formula(batch, frequency, presence):
    logits, generated = batch
    before = logits.clone()
    ours = apply_presence_penalty(apply_frequency_penalty(logits, generated, frequency), generated, presence)
    assert_same(logits, before)
    # float32 against the formula in float64: equal to float32's relative precision
    torch.testing.assert_close(ours.double(), openai_formula(logits, generated, frequency, presence),
                               atol=1e-6, rtol=1e-6, equal_nan=True)


def test_frequency_penalty_grows_with_each_repeat_where_repetition_penalty_does_not():
    logits, context = torch.tensor([[2.0, -1.0, 1.0]]), torch.tensor([[0, 0, 0, 1]])
    assert apply_frequency_penalty(logits, context, 0.5).tolist() == [[0.5, -1.5, 1.0]]  # 2 - 3 * 0.5, -1 - 0.5
    assert apply_presence_penalty(logits, context, 0.5).tolist() == [[1.5, -1.5, 1.0]]  # once per token
    assert repetition_penalty(logits, context, 2.0).tolist() == [[1.0, -2.0, 1.0]]  # divides or multiplies, once
    # in the pipeline, the prompt does not count: only the generated tokens (OpenAI counts the sampled ones)
    ids = torch.tensor([[2, 2, 0]])  # a two-token prompt [2, 2], then one generated token, 0
    out = process_logits(logits, ids, new_tokens=1, do_sample=False, frequency_penalty=1.0, presence_penalty=0.5)
    assert out.tolist() == [[0.5, -1.0, 1.0]]


# --- the whole pipeline equals generate()'s processor list -------------------------------------------------------


class OpenAIPenalties(hf.LogitsProcessor):
    """The OpenAI formula as a transformers processor (transformers has none), counting generated tokens only."""

    def __init__(self, prompt_length, frequency, presence):
        self.prompt_length, self.frequency, self.presence = prompt_length, frequency, presence

    def __call__(self, input_ids, scores):
        generated = input_ids[:, self.prompt_length :]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


def family_processors(prompt_length, eos_token_ids, prefix_fn, frequency, presence, **settings):
    """generate(**settings)'s LogitsProcessorList, with OpenAI's penalties where generate puts a custom processor."""
    model = tiny_hf_model()
    config = transformers.GenerationConfig(eos_token_id=list(eos_token_ids) or None, **settings)
    model._prepare_special_tokens(config, kwargs_has_attention_mask=True, device="cpu")
    custom = hf.LogitsProcessorList([OpenAIPenalties(prompt_length, frequency or 0.0, presence or 0.0)])
    return model._get_logits_processor(generation_config=config, input_ids_seq_length=prompt_length, device="cpu",
                                       prefix_allowed_tokens_fn=prefix_fn, logits_processor=custom)


@PROPERTY
@given(logits_and_ids(max_id=3), st.data())
def test_process_logits_with_the_family_matches_transformers_pipeline(batch, data):
    logits, ids = batch
    draw, V = data.draw, logits.size(1)
    options = {
        "do_sample": draw(st.booleans()),
        "temperature": draw(st.sampled_from([1.0, 0.7]) | st.floats(0.05, 5)),
        "top_k": draw(st.none() | st.integers(1, 60)),
        "top_p": draw(st.none() | fraction),
        "repetition_penalty": draw(st.none() | st.floats(0.1, 5)),
        "no_repeat_ngram_size": draw(st.none() | st.integers(1, 3)),
        "min_new_tokens": draw(st.integers(0, 3)),
        "typical_p": draw(st.none() | st.just(1.0) | below_one),
        "epsilon_cutoff": draw(st.none() | st.just(0.0) | cutoff),
        "eta_cutoff": draw(st.none() | st.just(0.0) | cutoff),
        "sequence_bias": draw(st.none() | token_sequences(V).map(lambda s: {k: -1.5 * len(k) for k in s})),
        "bad_words_ids": draw(st.none() | token_sequences(V).map(lambda s: [list(k) for k in s])),
        "suppress_tokens": draw(st.none() | st.lists(st.integers(0, V - 1), min_size=1, max_size=3)),
    }
    frequency, presence = draw(st.none() | penalty), draw(st.none() | penalty)
    prefix_fn = draw(st.none() | st.just(table_of_allowed_tokens(data, V)))
    eos = draw(st.lists(st.integers(0, min(V - 1, 3)), max_size=2, unique=True))
    assume(not options["bad_words_ids"] or any(len(w) > 1 or w[0] not in eos for w in options["bad_words_ids"]))
    new_tokens = draw(st.integers(0, ids.size(1)))
    reference = family_processors(ids.size(1) - new_tokens, eos, prefix_fn, frequency, presence, **options)
    ours = functools.partial(process_logits, input_ids=ids, new_tokens=new_tokens, eos_token_ids=eos,
                             prefix_allowed_tokens_fn=prefix_fn, frequency_penalty=frequency,
                             presence_penalty=presence, **options)
    try:
        reference(ids, logits.clone())
    except ValueError:  # transformers' eta (a Categorical) refuses a row that bans and constraints left empty
        assert options["eta_cutoff"] and options["do_sample"]
        assert not every_row_has_a_finite_logit(ours(logits))  # ours passes the empty row on as it is
        return
    compare(ours, reference, logits, ids)


def test_pipeline_order_bias_before_penalty_before_typical():
    # bias +1 on token 0 makes it 3 > 0; the repetition penalty 3 then divides it to 1; frequency 0.5 (generated
    # once) takes it to 0.5. Token 1 (logit 1) is now the most likely. Greedy sees exactly that
    out = process_logits(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[0]]), new_tokens=1, do_sample=False,
                         sequence_bias={(0,): 1.0}, repetition_penalty=3.0, frequency_penalty=0.5)
    assert out.tolist() == [[0.5, 1.0, 0.0]]


# --- error messages -----------------------------------------------------------------------------------------------

V = 50257
IDS = f"a non-empty list of token ids in [0, {V})"
WORDS = f"a non-empty list of non-empty token-id lists, ids in [0, {V})"
BIAS = (f"a non-empty dict {{(token ids, …): bias}} or list of (token ids, bias) pairs, ids in [0, {V}), "
        "each bias a number below +inf (-inf bans)")


@pytest.mark.parametrize(
    ("setting", "value", "error", "message"),
    [
        ("typical_p", 0.0, ValueError, "typical_p must be in (0, 1], got 0.0"),
        ("typical_p", 1.5, ValueError, "typical_p must be in (0, 1], got 1.5"),
        ("typical_p", "0.9", TypeError, "typical_p must be in (0, 1], got '0.9'"),
        ("epsilon_cutoff", 0.0, ValueError, "epsilon_cutoff must be in (0, 1), got 0.0"),
        ("epsilon_cutoff", 1.0, ValueError, "epsilon_cutoff must be in (0, 1), got 1.0"),
        ("epsilon_cutoff", math.nan, ValueError, "epsilon_cutoff must be in (0, 1), got nan"),
        ("eta_cutoff", -0.1, ValueError, "eta_cutoff must be in (0, 1), got -0.1"),
        ("eta_cutoff", True, TypeError, "eta_cutoff must be in (0, 1), got True"),
        ("frequency_penalty", 2.5, ValueError, "frequency_penalty must be a number in [-2, 2], got 2.5"),
        ("frequency_penalty", math.inf, ValueError, "frequency_penalty must be a number in [-2, 2], got inf"),
        ("presence_penalty", -3, ValueError, "presence_penalty must be a number in [-2, 2], got -3"),
        ("presence_penalty", "high", TypeError, "presence_penalty must be a number in [-2, 2], got 'high'"),
        ("suppress_tokens", [], ValueError, f"suppress_tokens must be {IDS}, got []"),
        ("suppress_tokens", [5, V], ValueError, f"suppress_tokens must be {IDS}, got [5, {V}]"),
        ("suppress_tokens", [-1], ValueError, f"suppress_tokens must be {IDS}, got [-1]"),
        ("suppress_tokens", 5, TypeError, f"suppress_tokens must be {IDS}, got 5"),
        ("suppress_tokens", [1.0], TypeError, f"suppress_tokens must be {IDS}, got [1.0]"),
        ("bad_words_ids", [], ValueError, f"bad_words_ids must be {WORDS}, got []"),
        ("bad_words_ids", [[1], []], ValueError, f"bad_words_ids must be {WORDS}, got [[1], []]"),
        ("bad_words_ids", [1, 2], TypeError, f"bad_words_ids must be {WORDS}, got [1, 2]"),
        ("bad_words_ids", "bad", TypeError, f"bad_words_ids must be {WORDS}, got 'bad'"),
        ("bad_words_ids", [[V]], ValueError, f"bad_words_ids must be {WORDS}, got [[{V}]]"),
        ("sequence_bias", {}, ValueError, f"sequence_bias must be {BIAS}, got {{}}"),
        ("sequence_bias", {(): 1.0}, ValueError, f"sequence_bias must be {BIAS}, got {{(): 1.0}}"),
        ("sequence_bias", {(1,): INF}, ValueError, f"sequence_bias must be {BIAS}, got {{(1,): inf}}"),
        ("sequence_bias", {(1,): math.nan}, ValueError, f"sequence_bias must be {BIAS}, got {{(1,): nan}}"),
        ("sequence_bias", {(1,): "up"}, TypeError, f"sequence_bias must be {BIAS}, got {{(1,): 'up'}}"),
        ("sequence_bias", {1: 2.0}, TypeError, f"sequence_bias must be {BIAS}, got {{1: 2.0}}"),
        ("sequence_bias", [([1, V], 2.0)], ValueError, f"sequence_bias must be {BIAS}, got [([1, {V}], 2.0)]"),
        ("sequence_bias", 2.0, TypeError, f"sequence_bias must be {BIAS}, got 2.0"),
        (
            "prefix_allowed_tokens_fn",
            [1, 2],
            TypeError,
            "prefix_allowed_tokens_fn must be a function of (batch row, ids so far) that returns the allowed token "
            "ids, got [1, 2]",
        ),
    ],
)
def test_logits_settings_rejects_the_family(setting, value, error, message):
    with pytest.raises(error) as raised:
        LogitsSettings(**{setting: value})
    assert str(raised.value) == message


def test_logits_settings_accepts_the_family_and_its_off_values():
    LogitsSettings(typical_p=1.0, frequency_penalty=0.0, presence_penalty=-2.0)
    LogitsSettings(
        typical_p=0.9, epsilon_cutoff=3e-4, eta_cutoff=2e-3, sequence_bias=[([1, 2], -1), ([3], 0.5)],
        bad_words_ids=[(1,), [2, 3]], suppress_tokens=(50256,), prefix_allowed_tokens_fn=lambda b, ids: [0],
        frequency_penalty=2, presence_penalty=0.5,
    )


LOGITS = torch.zeros(2, 4)
CONTEXT = torch.tensor([[0, 1], [2, 3]])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: typical_filter(LOGITS, 0.0), ValueError, "typical_p must be in (0, 1], got 0.0"),
        (lambda: typical_filter(LOGITS, 0.5, 0), ValueError, "min_tokens_to_keep must be an integer >= 1, got 0"),
        (lambda: epsilon_filter(LOGITS, 1.0), ValueError, "epsilon_cutoff must be in (0, 1), got 1.0"),
        (lambda: eta_filter(LOGITS, 0.1, 1.5), TypeError, "min_tokens_to_keep must be an integer >= 1, got 1.5"),
        (lambda: apply_frequency_penalty(LOGITS, CONTEXT, -2.5), ValueError,
         "frequency_penalty must be a number in [-2, 2], got -2.5"),
        (lambda: apply_presence_penalty(LOGITS, CONTEXT, 9), ValueError,
         "presence_penalty must be a number in [-2, 2], got 9"),
        # token ids are checked against the logits' own vocabulary (4 here)
        (lambda: suppress_tokens(LOGITS, [4]), ValueError,
         "suppress_tokens must be a non-empty list of token ids in [0, 4), got [4]"),
        (lambda: ban_bad_words(LOGITS, CONTEXT, [[1, 4]]), ValueError,
         "bad_words_ids must be a non-empty list of non-empty token-id lists, ids in [0, 4), got [[1, 4]]"),
        (lambda: apply_sequence_bias(LOGITS, CONTEXT, {(9,): 1.0}), ValueError,
         "sequence_bias must be a non-empty dict {(token ids, …): bias} or list of (token ids, bias) pairs, ids in "
         "[0, 4), each bias a number below +inf (-inf bans), got {(9,): 1.0}"),
        (lambda: allowed_tokens_filter(LOGITS, CONTEXT, lambda b, ids: [] if b else [0]), ValueError,
         "prefix_allowed_tokens_fn must return a non-empty list of token ids in [0, 4), got [] for batch row 1"),
        (lambda: allowed_tokens_filter(LOGITS, CONTEXT, lambda b, ids: [0, 4]), ValueError,
         "prefix_allowed_tokens_fn must return a non-empty list of token ids in [0, 4), got [0, 4] for batch row 0"),
        (lambda: allowed_tokens_filter(LOGITS, CONTEXT, lambda b, ids: [0.5]), ValueError,
         "prefix_allowed_tokens_fn must return a non-empty list of token ids in [0, 4), got [0.5] for batch row 0"),
        (lambda: process_logits(LOGITS, CONTEXT, new_tokens=0, do_sample=True, eta_cutoff=1.5), ValueError,
         "eta_cutoff must be in (0, 1), got 1.5"),
    ],
)
def test_family_transforms_reject_bad_arguments(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value) == message
