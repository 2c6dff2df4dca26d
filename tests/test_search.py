"""Beam search, diverse beam search, beam sample, contrastive search and sample-and-rank, checked against
transformers' `generate` on the same weights (the `hf_model` / `minigpt_model` fixtures)."""

import pytest
import torch
import transformers
from test_generate import PROMPTS, dropout_model, eos_seen_in, eval_copy, hf_generate, left_pad, modes

from minigpt.generate import PAD_TOKEN_ID, generate
from minigpt.kv_cache import KVCache
from minigpt.model import GPT
from minigpt.search import beam_search, contrastive_search, degeneration_penalty, sample_and_rank

transformers.logging.set_verbosity_error()  # "Group Beam Search is scheduled to be moved …" and the like

MAX_NEW = 8


@pytest.fixture(scope="module")
def eos(minigpt_model):
    """A token the model really emits early on: as EOS it makes hypotheses finish before MAX_NEW."""
    ids, mask = left_pad(PROMPTS[:1])
    return eos_seen_in(minigpt_model, ids, mask, step=2)


def hf_beams(hf_model, ids, mask, **kwargs):
    return hf_generate(hf_model, ids, mask, max_new_tokens=MAX_NEW, output_scores=True, return_dict_in_generate=True,
                       **kwargs)


def assert_same_beams(ours, ref):
    assert torch.equal(ours.ids, ref.sequences)
    # rtol for length_penalty < 0, where a score is Σ log p times the length and runs into the hundreds
    torch.testing.assert_close(ours.scores, ref.sequences_scores, atol=1e-5, rtol=1e-6)


def with_eos(settings, eos):
    """Grid entries name the EOS symbolically ("eos", or ["eos", 13]) because the token depends on the model."""
    value = settings.get("eos_token_id")
    if value == "eos":
        return {**settings, "eos_token_id": eos}
    if isinstance(value, list):
        return {**settings, "eos_token_id": [eos if v == "eos" else v for v in value]}
    return settings


BEAM_GRID = [
    (1, dict(num_beams=2)),
    (3, dict(num_beams=3, length_penalty=0.5, early_stopping=True, num_return_sequences=2, eos_token_id="eos")),
    (2, dict(num_beams=4, length_penalty=2.0, early_stopping="never", num_return_sequences=4, eos_token_id="eos",
             repetition_penalty=0.8)),
    (2, dict(num_beams=3, no_repeat_ngram_size=2, num_return_sequences=3, eos_token_id="eos")),
    (3, dict(num_beams=4, early_stopping=True, min_new_tokens=5, num_return_sequences=2, eos_token_id="eos")),
    (2, dict(num_beams=2, length_penalty=2.0, num_return_sequences=2, eos_token_id=["eos", 13])),
    (1, dict(num_beams=4, length_penalty=0.5, early_stopping="never", no_repeat_ngram_size=3, min_new_tokens=3,
             eos_token_id="eos")),
    (3, dict(num_beams=3, length_penalty=-1.0, early_stopping="never", num_return_sequences=3, eos_token_id="eos",
             repetition_penalty=1.3)),
]


GROUP_GRID = [
    (1, dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, num_return_sequences=2, eos_token_id="eos")),
    (3, dict(num_beams=4, num_beam_groups=4, diversity_penalty=1.0, length_penalty=0.5, early_stopping=True,
             num_return_sequences=4, eos_token_id="eos")),
    (2, dict(num_beams=6, num_beam_groups=3, diversity_penalty=2.0, length_penalty=2.0, early_stopping="never",
             num_return_sequences=3, eos_token_id="eos")),
    (2, dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.01, num_return_sequences=4, length_penalty=-1.0)),
    (3, dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.7, no_repeat_ngram_size=2, repetition_penalty=1.2,
             min_new_tokens=3, num_return_sequences=2, eos_token_id="eos")),
]


@pytest.mark.parametrize("batch, settings", BEAM_GRID + GROUP_GRID)  # plain, then diverse (grouped) beams
def test_beam_search_equals_transformers(hf_model, minigpt_model, eos, batch, settings):
    ids, mask = left_pad(PROMPTS[:batch])
    settings = with_eos(settings, eos)
    ours = beam_search(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW, **settings)
    assert_same_beams(ours, hf_beams(hf_model, ids, mask, do_sample=False, **settings))


BEAM_SAMPLE_GRID = [
    (3, dict(num_beams=3, temperature=0.8, top_k=0, early_stopping=True, length_penalty=0.5, num_return_sequences=3,
             eos_token_id="eos")),
    (2, dict(num_beams=2, temperature=1.2, top_k=20, top_p=0.9, num_return_sequences=2, eos_token_id="eos")),
    (2, dict(num_beams=3, top_k=1, early_stopping="never", eos_token_id="eos")),  # each beam keeps 2 tokens anyway
]


@pytest.mark.parametrize("batch, settings", BEAM_SAMPLE_GRID)
def test_beam_sample_equals_transformers(hf_model, minigpt_model, eos, batch, settings):
    """One multinomial draw per step from torch's global generator on both sides: same seed, same beams."""
    ids, mask = left_pad(PROMPTS[:batch])
    settings = with_eos(settings, eos)
    torch.manual_seed(11)
    ours = beam_search(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=True,
                       **{k: v or None if k == "top_k" else v for k, v in settings.items()})  # our top_k off is None
    torch.manual_seed(11)
    assert_same_beams(ours, hf_beams(hf_model, ids, mask, do_sample=True, **settings))


def test_beam_sample_seed_and_generator(minigpt_model):
    kwargs = dict(num_beams=3, max_new_tokens=6, do_sample=True, num_return_sequences=3)
    first = beam_search(minigpt_model, PROMPTS[:2], seed=5, **kwargs)
    again = beam_search(minigpt_model, PROMPTS[:2], generator=torch.Generator().manual_seed(5), **kwargs)
    other = beam_search(minigpt_model, PROMPTS[:2], seed=6, **kwargs)
    assert torch.equal(first.ids, again.ids)
    assert not torch.equal(first.ids, other.ids)


def test_hypotheses_end_with_eos_then_padding_and_scores_are_normalised_log_probs(minigpt_model, eos):
    ids, mask = left_pad(PROMPTS[:3])
    out = beam_search(minigpt_model, ids, attention_mask=mask, num_beams=3, max_new_tokens=MAX_NEW, eos_token_id=eos,
                      num_return_sequences=3, length_penalty=0.7)
    assert any(len(t) < MAX_NEW for t in out.new_tokens)  # some hypotheses did finish early
    P = ids.size(1)
    for row, tokens in enumerate(out.new_tokens):
        assert out.ids[row, :P].tolist() == ids[row // 3].tolist()
        assert out.ids[row, P : P + len(tokens)].tolist() == tokens
        assert (out.ids[row, P + len(tokens) :] == PAD_TOKEN_ID).all()
        assert len(tokens) == MAX_NEW or tokens[-1] == eos
        assert out.stopped_by[row] == ("eos" if tokens[-1] == eos else None)
        assert out.attention_mask[row].tolist() == mask[row // 3].tolist() + [1] * len(tokens) + [0] * (
            out.ids.size(1) - P - len(tokens))
        # the score, recomputed from one plain forward pass over the whole hypothesis
        seq, seq_mask = out.ids[row : row + 1, : P + len(tokens)], mask[row // 3 : row // 3 + 1]
        seq_mask = torch.cat([seq_mask, torch.ones(1, len(tokens), dtype=torch.long)], 1)
        with torch.no_grad():
            logits = minigpt_model(seq, attention_mask=seq_mask, position_ids=(seq_mask.cumsum(1) - 1).clamp(min=0))
        log_probs = torch.log_softmax(logits[0, P - 1 : -1], -1).gather(1, seq[0, P:, None]).sum()
        assert out.scores[row].item() == pytest.approx(log_probs.item() / len(tokens) ** 0.7, abs=1e-4)
    assert out.scores.view(3, 3).diff(dim=1).le(0).all()  # best first within each prompt


@pytest.mark.parametrize("settings", [dict(num_beams=3), dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5)])
def test_prompt_pass_runs_once_per_prompt(minigpt_model, monkeypatch, settings):
    """Prefill once: the prompt's pass runs on one row per prompt, its cache rows are then copied to the beams."""
    ids, mask = left_pad(PROMPTS[:2])
    shapes, forward = [], GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda self, idx, **kw: shapes.append(tuple(idx.shape)) or forward(self, idx, **kw))
    beam_search(minigpt_model, ids, attention_mask=mask, max_new_tokens=3, **settings)
    assert shapes == [tuple(ids.shape)] + [(2 * settings["num_beams"], 1)] * 2


@pytest.mark.parametrize("settings", [
    dict(num_beams=3, eos_token_id="eos", num_return_sequences=2),
    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, eos_token_id="eos", num_return_sequences=3),
])
def test_cache_reordered_by_beam_equals_recomputing(minigpt_model, eos, monkeypatch, settings):
    settings = with_eos(settings, eos)
    ids, mask = left_pad(PROMPTS[:2])
    reorders = []
    reorder = KVCache.reorder
    monkeypatch.setattr(KVCache, "reorder", lambda self, index: reorders.append(index.tolist()) or reorder(self, index))
    cached = beam_search(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW, **settings)
    uncached = beam_search(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW, use_cache=False, **settings)
    assert torch.equal(cached.ids, uncached.ids)
    torch.testing.assert_close(cached.scores, uncached.scores, atol=1e-5, rtol=0)  # same sums, other rounding
    rows = 2 * settings["num_beams"]
    assert reorders and all(len(index) == rows for index in reorders)
    assert any(index != list(range(rows)) for index in reorders)  # beams really did swap parents


def test_one_beam_is_greedy(minigpt_model):
    """Without EOS (with one, the beam's spare candidate lives on after an EOS, where greedy stops). Not with a
    repetition penalty either: beam search applies it to log-probs, greedy to logits, as transformers does."""
    ids, mask = left_pad(PROMPTS[:3])
    greedy = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW, no_repeat_ngram_size=1)
    beam = beam_search(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW, no_repeat_ngram_size=1,
                       num_beams=1)
    assert torch.equal(beam.ids, greedy.ids)


def test_text_prompts_give_texts(minigpt_model):
    out = beam_search(minigpt_model, ["ROMEO:", "Hi"], num_beams=3, max_new_tokens=4, num_return_sequences=2)
    assert len(out.texts) == 4 and out.texts[0].startswith("ROMEO:") and out.texts[2].startswith("Hi")
    ids_only = beam_search(minigpt_model, torch.tensor([[1, 2]]), num_beams=2, max_new_tokens=2)
    assert ids_only.texts is None
    with pytest.raises(ValueError, match="text needs a text prompt"):
        _ = ids_only.text


CONTRASTIVE_GRID = [
    (1, dict(penalty_alpha=0.6, top_k=4)),
    (3, dict(penalty_alpha=0.3, top_k=6, eos_token_id="eos")),
    (3, dict(penalty_alpha=0.9, top_k=3, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=4,
             eos_token_id="eos")),
]


@pytest.mark.parametrize("batch, settings", CONTRASTIVE_GRID)
def test_contrastive_search_equals_transformers(hf_model, minigpt_model, eos, batch, settings):
    ids, mask = left_pad(PROMPTS[:batch])
    settings = with_eos(settings, eos)
    ours = contrastive_search(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW, **settings)
    assert torch.equal(ours.ids, hf_generate(hf_model, ids, mask, max_new_tokens=MAX_NEW, **settings))


def test_contrastive_search_without_penalty_or_choice_is_greedy(minigpt_model):
    ids, mask = left_pad(PROMPTS[:3])
    greedy = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW).ids
    for settings in (dict(penalty_alpha=0.0, top_k=5), dict(penalty_alpha=0.8, top_k=1)):
        out = contrastive_search(minigpt_model, ids, attention_mask=mask, max_new_tokens=MAX_NEW, **settings)
        assert torch.equal(out.ids, greedy)


def test_degeneration_penalty_ignores_padding():
    context = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    candidate = torch.tensor([[[3.0, 0.0]]])
    assert degeneration_penalty(context, candidate, torch.tensor([[1, 1]])).item() == pytest.approx(1.0)
    assert degeneration_penalty(context, candidate, torch.tensor([[0, 1]])).item() == pytest.approx(0.0)


def test_sample_and_rank_ranks_generate_samples_by_mean_log_prob(minigpt_model):
    kwargs = dict(max_new_tokens=6, temperature=0.9, top_k=40)
    ranked = sample_and_rank(minigpt_model, ["ROMEO:", "Hi"], num_samples=4, seed=2, **kwargs)
    samples = generate(minigpt_model, ["ROMEO:", "Hi"], do_sample=True, num_return_sequences=4, return_scores=True,
                       seed=2, **kwargs)
    for prompt in range(2):
        rows = range(prompt * 4, prompt * 4 + 4)
        means = {tuple(samples.new_tokens[r]): sum(samples.token_logprobs[r]) / 6 for r in rows}
        assert sorted(means.values(), reverse=True) == pytest.approx(ranked.scores[prompt * 4 : prompt * 4 + 4].tolist())
        assert {tuple(ranked.new_tokens[r]) for r in rows} == set(means)
        best = ranked.new_tokens[prompt * 4]
        assert means[tuple(best)] == max(means.values())
    assert ranked.texts[4].startswith("Hi")
    assert [sum(lp) / 6 for lp in ranked.token_logprobs] == pytest.approx(ranked.scores.tolist())


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_beams=0), ValueError, r"num_beams must be an integer >= 1, got 0"),
        (dict(num_beams=2.0), TypeError, r"num_beams must be an integer >= 1, got 2.0"),
        (dict(num_beams=2, num_return_sequences=3), ValueError,
         r"num_return_sequences must be <= num_beams=2 \(only num_beams hypotheses are kept\), got 3"),
        (dict(num_beams=4, num_beam_groups=3, diversity_penalty=0.5), ValueError,
         r"num_beam_groups must divide num_beams=4 evenly, got 3"),
        (dict(num_beams=4, diversity_penalty=0.5), ValueError,
         r"diversity_penalty must be > 0 exactly when num_beam_groups > 1 .*, got diversity_penalty=0.5 with num_beam_groups=1"),
        (dict(num_beams=4, num_beam_groups=2), ValueError,
         r"diversity_penalty must be > 0 exactly when num_beam_groups > 1 .*, got diversity_penalty=0.0 with num_beam_groups=2"),
        (dict(num_beams=4, num_beam_groups=2, diversity_penalty=-1.0), ValueError,
         r"diversity_penalty must be a finite number >= 0, got -1.0"),
        (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, do_sample=True), ValueError,
         r"num_beam_groups must be 1 with do_sample=True \(diverse beam search does not sample\), got 2"),
        (dict(num_beams=2, length_penalty=float("inf")), ValueError, r"length_penalty must be a finite number, got inf"),
        (dict(num_beams=2, length_penalty=float("nan")), ValueError, r"length_penalty must be a finite number, got nan"),
        (dict(num_beams=2, length_penalty="long"), TypeError, r"length_penalty must be a finite number, got 'long'"),
        (dict(num_beams=2, early_stopping="sometimes"), ValueError,
         r"early_stopping must be True, False or 'never', got 'sometimes'"),
        (dict(num_beams=2, early_stopping=1), ValueError, r"early_stopping must be True, False or 'never', got 1"),
        (dict(num_beams=2, max_new_tokens=0), ValueError, r"max_new_tokens must be an integer >= 1, got 0"),
        (dict(num_beams=2, do_sample=True, top_p=1.5), ValueError, r"top_p must be in \(0, 1\], got 1.5"),
        (dict(num_beams=2, eos_token_id=-3), ValueError, r"eos_token_id must be token ids in \[0, 50257\), got -3"),
        (dict(num_beams=2, min_new_tokens=4), ValueError, r"min_new_tokens must be <= max_new_tokens=3, got 4"),
        # 10**9 rows × 4 positions (1 prompt token + 3 new) × 2 layers × (K and V) × 64 wide × 4 bytes of cache,
        # 10**9 rows × 50257 logits × (4 bytes + 3 fp32 copies): no machine has it
        (dict(num_beams=10**9), ValueError,
         r"num_beams=1000000000 × batch size 1 = 1000000000 rows need [0-9.]+ GB at the peak of decoding "
         r"\(KV cache 4096.0 GB for 4 positions each, logits over the 50257-token vocabulary 804112.0 GB, "
         r"activations [0-9.]+ GB\), more than the [0-9.]+ GB of memory available on cpu; "
         r"lower one of them, or max_new_tokens"),
        (dict(num_beams=2, beam_width=3), TypeError, r"unknown setting 'beam_width': the settings are allow_special, diversity_penalty"),
    ],
)
def test_bad_beam_settings_fail_before_any_work(tiny_model, monkeypatch, kwargs, error, message):
    monkeypatch.setattr(GPT, "forward", lambda *args, **kw: pytest.fail("the model ran before the check"))
    with pytest.raises(error, match=message):
        beam_search(tiny_model, "Hi", **{"max_new_tokens": 3, **kwargs})


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: contrastive_search(m, "Hi", penalty_alpha=1.5, top_k=4), r"penalty_alpha must be a number in \[0, 1\], got 1.5"),
        (lambda m: contrastive_search(m, "Hi", penalty_alpha=-0.1, top_k=4), r"penalty_alpha must be a number in \[0, 1\], got -0.1"),
        (lambda m: contrastive_search(m, "Hi", penalty_alpha=0.5, top_k=0), r"top_k must be an integer between 1 and 50257, got 0"),
        (lambda m: contrastive_search(m, "Hi", penalty_alpha=0.5, top_k=50258),
         r"top_k must be an integer between 1 and 50257, got 50258"),
        (lambda m: contrastive_search(m, "Hi", penalty_alpha=0.5, top_k=4, max_new_tokens=3, min_new_tokens=4),
         r"min_new_tokens must be <= max_new_tokens=3, got 4"),
        (lambda m: sample_and_rank(m, "Hi", num_samples=0), r"num_samples must be an integer >= 1, got 0"),
        (lambda m: sample_and_rank(m, "Hi", num_samples=2, temperature=0), r"temperature must be a finite number > 0, got 0"),
        (lambda m: sample_and_rank(m, "Hi", num_samples=2, max_new_tokens=0), r"max_new_tokens must be an integer >= 1, got 0"),
    ],
)
def test_bad_contrastive_and_ranking_settings(tiny_model, monkeypatch, call, message):
    monkeypatch.setattr(GPT, "forward", lambda *args, **kw: pytest.fail("the model ran before the check"))
    with pytest.raises(ValueError, match=message):
        call(tiny_model)


def test_contrastive_cache_too_big_for_memory_is_refused_before_any_work(tiny_model, monkeypatch):
    monkeypatch.setattr("minigpt.kv_cache.available_memory", lambda device: 10**8)
    monkeypatch.setattr(GPT, "forward", lambda *args, **kw: pytest.fail("the model ran before the check"))
    # 100,000 rows × 5 positions × 2 layers × (K and V) × 64 wide × 4 bytes = 0.51 GB of cache, and 80.4 GB
    # of logits: 100,000 rows × 50257 × (4 bytes + 3 fp32 copies)
    with pytest.raises(ValueError, match=(
        r"top_k=50000 × batch size 2 = 100000 rows need [0-9.]+ GB at the peak of decoding \(KV cache 0.5 GB "
        r"for 5 positions each, logits over the 50257-token vocabulary 80.4 GB, activations [0-9.]+ GB\), "
        r"more than the 0.1 GB of memory available on cpu"
    )):
        contrastive_search(tiny_model, ["Hi", "Yo"], penalty_alpha=0.5, top_k=50_000, max_new_tokens=4)


@pytest.mark.parametrize(
    "decode",
    [
        lambda m: beam_search(m, "Hi", num_beams=3, max_new_tokens=6).new_tokens,
        lambda m: beam_search(m, "Hi", num_beams=4, num_beam_groups=2, diversity_penalty=0.5, max_new_tokens=6).new_tokens,
        lambda m: contrastive_search(m, "Hi", penalty_alpha=0.6, top_k=4, max_new_tokens=6).new_tokens,
        lambda m: sample_and_rank(m, "Hi", num_samples=3, max_new_tokens=6, seed=0).new_tokens,
    ],
    ids=["beam", "diverse-beam", "contrastive", "sample-and-rank"],
)
def test_train_mode_model_searches_in_eval_mode_and_gets_its_modes_back(decode):
    model = dropout_model()
    before = modes(model)
    assert decode(model) == decode(eval_copy(model))  # no dropout noise in the choice
    assert modes(model) == before
