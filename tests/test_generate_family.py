"""generate() with the rest of the sampling family equals transformers' generate token for token (same weights)."""

import dataclasses

import pytest
import torch
from test_generate import PROMPTS, hf_generate, left_pad
from test_logits_family import OpenAIPenalties
from transformers.generation import LogitsProcessorList

from minigpt.generate import DecodingSettings, generate, stream

VOCAB = 50257


def allowed_comb(batch_id, ids):
    """Every 97th token, from an offset set by the batch row and the last token: each row and step differ."""
    return list(range((7 * int(ids[-1]) + 13 * batch_id) % 97, VOCAB, 97))


@pytest.fixture(scope="module")
def prompt():
    return left_pad(PROMPTS)


@pytest.fixture(scope="module")
def free(minigpt_model, prompt):
    """What greedy decoding writes with no setting: the tokens the settings below ban, bias and penalise."""
    ids, mask = prompt
    return generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=12).new_tokens


def greedy_settings(free):
    """One setting at a time, each aimed at tokens greedy decoding really emits, so that each changes the output."""
    return {
        "sequence_bias": dict(sequence_bias={(free[0][0],): -4.0, (free[1][1], free[1][2]): -8.0, (free[2][5],): 3.0}),
        "bad_words_ids": dict(bad_words_ids=[[free[0][1]], [free[1][0], free[1][1]], [free[3][3], free[3][4]]]),
        "suppress_tokens": dict(suppress_tokens=[free[0][0], free[2][3], free[3][6]]),
        "prefix_allowed_tokens_fn": dict(prefix_allowed_tokens_fn=allowed_comb),
        "frequency_penalty": dict(frequency_penalty=2.0),
        "presence_penalty": dict(presence_penalty=1.5, frequency_penalty=0.5, repetition_penalty=1.2),
    }


def transformers_kwargs(settings, prompt_length):
    """Our settings as transformers' generate takes them: the OpenAI penalties become a custom processor."""
    kwargs = dict(settings)
    frequency, presence = kwargs.pop("frequency_penalty", None), kwargs.pop("presence_penalty", None)
    if frequency is not None or presence is not None:
        kwargs["logits_processor"] = LogitsProcessorList([OpenAIPenalties(prompt_length, frequency or 0.0,
                                                                          presence or 0.0)])
    if "sequence_bias" in kwargs:  # transformers wants float biases
        kwargs["sequence_bias"] = {k: float(v) for k, v in kwargs["sequence_bias"].items()}
    return kwargs


@pytest.mark.parametrize("name", ["sequence_bias", "bad_words_ids", "suppress_tokens", "prefix_allowed_tokens_fn",
                                  "frequency_penalty", "presence_penalty"])
def test_greedy_with_the_family_equals_transformers(hf_model, minigpt_model, prompt, free, name):
    ids, mask = prompt
    settings = greedy_settings(free)[name]
    ours = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=12, **settings)
    ref = hf_generate(hf_model, ids, mask, do_sample=False, max_new_tokens=12,
                      **transformers_kwargs(settings, ids.size(1)))
    assert torch.equal(ours.ids, ref)
    assert ours.new_tokens != free  # the setting changed what greedy writes


def test_greedy_bans_and_constraints_hold(minigpt_model, prompt, free):
    ids, mask = prompt
    s = greedy_settings(free)
    suppressed = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=12, **s["suppress_tokens"])
    assert not set(s["suppress_tokens"]["suppress_tokens"]) & {t for row in suppressed.new_tokens for t in row}
    banned = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=12, **s["bad_words_ids"])
    for row in banned.ids.tolist():
        pairs = set(zip(row[ids.size(1) - 1 :], row[ids.size(1) :]))  # from the prompt's last token on
        assert free[0][1] not in row[ids.size(1) :]
        assert not {tuple(w) for w in s["bad_words_ids"]["bad_words_ids"][1:]} & pairs
    constrained = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=12, **s["prefix_allowed_tokens_fn"])
    for b, row in enumerate(constrained.ids.tolist()):
        for t in range(ids.size(1), len(row)):
            assert row[t] in allowed_comb(b, torch.tensor(row[:t]))


def test_finished_rows_leave_but_the_function_still_hears_each_rows_own_batch_id(hf_model, minigpt_model, prompt):
    ids, mask = prompt
    constrained = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=8,
                           prefix_allowed_tokens_fn=allowed_comb).new_tokens
    eos = constrained[0][1]  # row 0 ends after two tokens; rows 1-3 go on as rows 0-2 of the running batch
    assert all(eos not in row for row in constrained[1:])
    ours = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos,
                    prefix_allowed_tokens_fn=allowed_comb)
    ref = hf_generate(hf_model, ids, mask, do_sample=False, max_new_tokens=8, eos_token_id=eos,
                      prefix_allowed_tokens_fn=allowed_comb)
    assert ours.stopped_by == ["eos", None, None, None] and ours.new_tokens[1:] == constrained[1:]
    assert torch.equal(ours.ids, ref)


# Random weights give flat distributions: typical 0.9 at temperature 1 keeps ~10,000 of 50,257 tokens, whose
# neighbours at the cut lie closer than the ~1e-6 by which the two models' logits differ, and the kept sets
# then differ by one token of mass ~1e-5. Sharper settings keep hundreds of tokens, with clear gaps at the cut
SAMPLING_GRID = [
    dict(typical_p=0.9, temperature=0.7),
    dict(typical_p=0.2),
    dict(epsilon_cutoff=3e-4),
    dict(eta_cutoff=3e-3, temperature=0.7),
    dict(top_p=0.95, typical_p=0.8, epsilon_cutoff=3e-4, eta_cutoff=2e-3),
    dict(temperature=1.3, sequence_bias={(262,): 2.0, (11, 290): -5.0}, bad_words_ids=[[13], [50256]],
         suppress_tokens=[198, 50256]),
    dict(prefix_allowed_tokens_fn=allowed_comb, typical_p=0.9),
    dict(temperature=1.3, frequency_penalty=1.0, presence_penalty=0.8),  # no filter: every token compared
]


@pytest.mark.parametrize("settings", SAMPLING_GRID, ids=lambda s: "+".join(s))
def test_sampling_with_the_family_equals_transformers(hf_model, minigpt_model, settings):
    """Both draw with torch.multinomial from torch's global generator: same seed, same tokens, same distributions."""
    ids, mask = left_pad(PROMPTS[:3])
    torch.manual_seed(11)
    ours = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=8, do_sample=True,
                    return_distributions=True, **settings)
    torch.manual_seed(11)
    ref = hf_generate(hf_model, ids, mask, max_new_tokens=8, do_sample=True, top_k=0, output_scores=True,
                      return_dict_in_generate=True, **transformers_kwargs(settings, ids.size(1)))
    assert torch.equal(ours.ids, ref.sequences)
    for step, (dist, scores) in enumerate(zip(ours.distributions, ref.scores)):
        torch.testing.assert_close(dist, torch.softmax(scores, -1), atol=1e-6, rtol=0, msg=f"step {step}")


def test_filters_really_cut_the_distributions(minigpt_model):
    """The sampled grid is not vacuous: each filter leaves fewer tokens than plain sampling."""
    ids, mask = left_pad(PROMPTS[:3])
    kept = {}
    for name, setting in [("plain", {}), ("typical_p", dict(typical_p=0.2)), ("epsilon", dict(epsilon_cutoff=3e-4)),
                          ("eta", dict(eta_cutoff=3e-3))]:
        out = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=4, do_sample=True, seed=0,
                       return_distributions=True, **setting)
        kept[name] = (out.distributions[0] > 0).sum(dim=-1)
    for name in ("typical_p", "epsilon", "eta"):
        assert (kept[name] < kept["plain"]).all(), name


def test_several_samples_per_prompt_get_their_own_batch_rows(hf_model, minigpt_model):
    ids, mask = left_pad(PROMPTS[:2])
    settings = dict(prefix_allowed_tokens_fn=allowed_comb, max_new_tokens=6, do_sample=True, num_return_sequences=2)
    torch.manual_seed(5)
    ours = generate(minigpt_model, ids, attention_mask=mask, **settings)
    torch.manual_seed(5)
    ref = hf_generate(hf_model, ids, mask, top_k=0, **settings)
    assert torch.equal(ours.ids, ref)
    for b, row in enumerate(ours.ids.tolist()):  # batch row b is prompt b // 2's sample b % 2
        assert all(row[t] in allowed_comb(b, torch.tensor(row[:t])) for t in range(ids.size(1), len(row)))


def test_stream_takes_the_family_too(minigpt_model):
    settings = dict(max_new_tokens=6, do_sample=True, seed=2, typical_p=0.9, suppress_tokens=[13, 198],
                    frequency_penalty=1.0)
    pieces = list(stream(minigpt_model, "ROMEO:", **settings))
    assert [t for t, _ in pieces] == generate(minigpt_model, "ROMEO:", **settings).new_tokens[0]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(typical_p=0.0), ValueError, r"typical_p must be in \(0, 1\], got 0.0"),
        (dict(epsilon_cutoff=1.0), ValueError, r"epsilon_cutoff must be in \(0, 1\), got 1.0"),
        (dict(eta_cutoff=-1e-3), ValueError, r"eta_cutoff must be in \(0, 1\), got -0.001"),
        (dict(frequency_penalty=3.0), ValueError, r"frequency_penalty must be a number in \[-2, 2\], got 3.0"),
        (dict(presence_penalty="0.5"), TypeError, r"presence_penalty must be a number in \[-2, 2\], got '0.5'"),
        (dict(suppress_tokens=[VOCAB]), ValueError, r"suppress_tokens must be a non-empty list of token ids in "
                                                    r"\[0, 50257\), got \[50257\]"),
        (dict(bad_words_ids=[5]), TypeError, r"bad_words_ids must be a non-empty list of non-empty token-id lists"),
        (dict(sequence_bias={(5,): float("inf")}), ValueError, r"sequence_bias must be .* got \{\(5,\): inf\}"),
        (dict(prefix_allowed_tokens_fn=[1]), TypeError, r"prefix_allowed_tokens_fn must be a function of"),
    ],
)
def test_bad_family_settings(tiny_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        generate(tiny_model, "Hi", **kwargs)


def test_the_loop_settings_hold_the_logits_settings_without_listing_them():
    from minigpt.logits import LogitsSettings

    loop = [f.name for f in dataclasses.fields(DecodingSettings)]
    assert loop == ["max_new_tokens", "do_sample", "eos_token_id", "stop", "num_return_sequences", "use_cache",
                    "allow_special", "logits"]
    assert not set(loop) & {f.name for f in dataclasses.fields(LogitsSettings)}
    s = DecodingSettings.from_keywords(max_new_tokens=3, top_k=5)
    assert s.logits == LogitsSettings(top_k=5) and s.max_new_tokens == 3
