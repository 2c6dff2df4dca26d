"""The decoding loop, checked against transformers' `generate` on the same weights."""

import pytest
import torch

from minigpt.generate import PAD_TOKEN_ID, generate, stream
from minigpt.kv_cache import KVCache
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import decode, encode

PROMPTS = ["Every effort moves you", "Hello, do you like tea?", "ROMEO:", "The quick brown fox jumps over"]


def left_pad(texts):
    rows = [encode(t) for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[PAD_TOKEN_ID] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def hf_generate(hf_model, ids, mask, **kwargs):
    """transformers' generate with GPT-2's conventions spelled out (pad = EOS id, no default EOS)."""
    kwargs.setdefault("eos_token_id", None)
    with torch.no_grad():
        return hf_model.generate(ids, attention_mask=mask, pad_token_id=PAD_TOKEN_ID, **kwargs)


def eos_seen_in(minigpt_model, ids, mask, step):
    """A token that greedy decoding really emits at `step` in row 0: as EOS it ends that row early."""
    return generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=step + 1).new_tokens[0][step]


GREEDY_GRID = [
    dict(max_new_tokens=12),
    dict(max_new_tokens=12, repetition_penalty=1.3),
    dict(max_new_tokens=12, repetition_penalty=0.8),
    dict(max_new_tokens=15, no_repeat_ngram_size=2),
    dict(max_new_tokens=15, no_repeat_ngram_size=1, repetition_penalty=1.1),
    dict(max_new_tokens=10, use_cache=False),
]


@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("settings", GREEDY_GRID)
def test_greedy_equals_transformers(hf_model, minigpt_model, batch, settings):
    ids, mask = left_pad(PROMPTS[:batch])
    ours = generate(minigpt_model, ids, attention_mask=mask, **settings)
    settings = {k: v for k, v in settings.items() if k != "use_cache"}
    ref = hf_generate(hf_model, ids, mask, do_sample=False, **settings)
    assert torch.equal(ours.ids, ref)


@pytest.mark.parametrize("min_new_tokens", [0, 5])
@pytest.mark.parametrize("eos_several", [False, True])
def test_greedy_with_eos_equals_transformers(hf_model, minigpt_model, min_new_tokens, eos_several):
    ids, mask = left_pad(PROMPTS)
    eos = eos_seen_in(minigpt_model, ids, mask, step=2)
    eos_ids = [eos, eos_seen_in(minigpt_model, ids[1:], mask[1:], step=3)] if eos_several else eos
    ours = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos_ids,
                    min_new_tokens=min_new_tokens)
    ref = hf_generate(hf_model, ids, mask, do_sample=False, max_new_tokens=12, eos_token_id=eos_ids,
                      min_new_tokens=min_new_tokens)
    assert torch.equal(ours.ids, ref)
    if min_new_tokens == 0:
        free = generate(minigpt_model, ids[:1], attention_mask=mask[:1], max_new_tokens=12).new_tokens[0]
        end = free.index(eos) + 1  # row 0 ends at the first EOS it emits, EOS included
        assert ours.new_tokens[0] == free[:end] and ours.stopped_by[0] == "eos"
        assert (ours.ids[0, ids.size(1) + end :] == PAD_TOKEN_ID).all()  # finished rows keep padding


SAMPLING_GRID = [
    dict(temperature=0.7, top_k=0),
    dict(temperature=1.3, top_k=20),
    dict(temperature=1.0, top_k=0, top_p=0.9),
    dict(temperature=0.9, top_k=10, top_p=0.8, min_p=0.05),
    dict(temperature=1.0, top_k=0, min_p=0.1, repetition_penalty=1.2, no_repeat_ngram_size=2),
]


@pytest.mark.parametrize("settings", SAMPLING_GRID)
def test_sampling_distributions_equal_transformers(hf_model, minigpt_model, settings):
    """Both draw with torch.multinomial from torch's global generator: same seed, same tokens."""
    ids, mask = left_pad(PROMPTS[:3])
    torch.manual_seed(7)
    ours = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=8, do_sample=True,
                    return_distributions=True, **{k: v or None for k, v in settings.items()})
    torch.manual_seed(7)
    ref = hf_generate(hf_model, ids, mask, max_new_tokens=8, do_sample=True, output_scores=True,
                      return_dict_in_generate=True, **settings)
    assert torch.equal(ours.ids, ref.sequences)
    for step, (dist, scores) in enumerate(zip(ours.distributions, ref.scores)):
        torch.testing.assert_close(dist, torch.softmax(scores, -1), atol=1e-6, rtol=0, msg=f"step {step}")


def test_same_seed_same_tokens(minigpt_model):
    runs = [generate(minigpt_model, PROMPTS, max_new_tokens=10, do_sample=True, top_p=0.9, seed=3).ids
            for _ in range(2)]
    assert torch.equal(*runs)
    other = generate(minigpt_model, PROMPTS, max_new_tokens=10, do_sample=True, top_p=0.9, seed=4).ids
    assert not torch.equal(runs[0], other)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(generate(minigpt_model, PROMPTS, max_new_tokens=10, do_sample=True, top_p=0.9,
                                generator=g).ids, runs[0])


def test_temperature_zero_is_greedy(minigpt_model):
    greedy = generate(minigpt_model, PROMPTS, max_new_tokens=10)
    zero = generate(minigpt_model, PROMPTS, max_new_tokens=10, do_sample=True, temperature=0, seed=1)
    assert torch.equal(greedy.ids, zero.ids)


def test_cache_and_recompute_agree_for_200_steps():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", block_size=320)).eval()
    with torch.no_grad():  # larger random weights than GPT-2's init: varied tokens, not one repeated
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if "ln_" in name else p.normal_(0.0, 0.15)
    ids, mask = left_pad(PROMPTS[:2])
    cached = generate(model, ids, attention_mask=mask, max_new_tokens=220)
    uncached = generate(model, ids, attention_mask=mask, max_new_tokens=220, use_cache=False)
    assert torch.equal(cached.ids, uncached.ids)
    assert len(set(cached.new_tokens[0])) >= 5
    # and the logits themselves, position by position, along the generated sequence
    seq, seq_mask = cached.ids[:, :-1], cached.attention_mask[:, :-1]
    positions = (seq_mask.cumsum(1) - 1).clamp(min=0)
    P = ids.size(1)
    with torch.no_grad():
        reference = model(seq, attention_mask=seq_mask, position_ids=positions)
        cache = KVCache.for_model(model, batch_size=2)
        steps = [model(seq[:, :P], attention_mask=seq_mask[:, :P], position_ids=positions[:, :P], kv_cache=cache)]
        for t in range(P, seq.size(1)):
            steps.append(model(seq[:, t : t + 1], attention_mask=seq_mask[:, : t + 1],
                               position_ids=positions[:, t : t + 1], kv_cache=cache))
    real = seq_mask.bool()  # logits at padding positions mean nothing
    assert (torch.cat(steps, 1) - reference)[real].abs().max() <= 1e-5


def test_padded_batch_gives_each_prompt_its_own_tokens(minigpt_model):
    batch = generate(minigpt_model, PROMPTS, max_new_tokens=15)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(minigpt_model, prompt, max_new_tokens=15)
        assert batch.new_tokens[i] == alone.new_tokens[0]
        assert batch.texts[i] == alone.text


def test_cache_memory_follows_the_formula():
    cache = KVCache(n_layer=3, batch_size=2, n_head=4, max_len=50, head_size=16, dtype=torch.bfloat16)
    assert cache.nbytes == 2 * 3 * 2 * 50 * 64 * 2 == KVCache.bytes_needed(3, 2, 50, 64, torch.bfloat16)


def test_cache_crop_and_reorder(tiny_model):
    cache = KVCache.for_model(tiny_model, batch_size=3)
    tiny_model(torch.randint(0, 50257, (3, 5)), kv_cache=cache)
    before = cache.keys[0][:, :, :5].clone()
    cache.reorder(torch.tensor([2, 2, 0]))
    assert torch.equal(cache.keys[0][:, :, :5], before[[2, 2, 0]])
    cache.crop(3)
    assert cache.length == 3
    with pytest.raises(ValueError, match=r"length must be in \[0, 3\], got 4"):
        cache.crop(4)


def test_finished_rows_stop_costing_work(minigpt_model, monkeypatch):
    ids, mask = left_pad(PROMPTS)
    eos = generate(minigpt_model, ids[:1], attention_mask=mask[:1], max_new_tokens=1).new_tokens[0][0]
    others = generate(minigpt_model, ids[1:], attention_mask=mask[1:], max_new_tokens=6).new_tokens
    assert all(eos not in row for row in others)
    rows_fed = []
    forward = GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda self, idx, **kw: rows_fed.append(idx.size(0)) or forward(self, idx, **kw))
    out = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=eos)
    assert out.stopped_by == ["eos", None, None, None] and out.new_tokens[0] == [eos]
    assert out.new_tokens[1:] == others
    assert rows_fed == [4, 3, 3, 3, 3, 3]  # row 0 ended after one token and left the batch


class ScriptedModel(GPT):
    """A model that always predicts the next token of a fixed script (to test the text plumbing)."""

    def __init__(self, script, prompt_len):
        super().__init__(GPTConfig.from_preset("tiny"))
        self.script, self.prompt_len = script, prompt_len

    def forward(self, idx, *, attention_mask=None, position_ids=None, kv_cache=None, last_only=False):
        step = attention_mask.size(1) - self.prompt_len  # tokens generated so far
        logits = torch.zeros(idx.size(0), 1, self.config.vocab_size)
        logits[:, :, self.script[step]] = 10.0
        return logits


def test_stop_string_spanning_tokens():
    script = encode(" good night, sweet prince")
    assert [decode([t]) for t in script] == [" good", " night", ",", " sweet", " prince"]
    model = ScriptedModel(script, prompt_len=1)
    out = generate(model, "A", max_new_tokens=5, stop="ht, sw")
    assert out.text == "A good nig"  # the text ends before the stop string …
    assert out.new_tokens[0] == script[:4] and out.stopped_by == ["stop"]  # … the ids at the token completing it
    several = generate(model, ["A", "A"], max_new_tokens=5, stop=["prince", ","])
    assert several.texts == ["A good night", "A good night"]


def test_num_return_sequences_repeats_rows(minigpt_model):
    out = generate(minigpt_model, ["ROMEO:", "Hi"], max_new_tokens=6, do_sample=True, num_return_sequences=3, seed=0)
    assert out.ids.shape[0] == 6
    assert out.texts[0].startswith("ROMEO:") and out.texts[3].startswith("Hi")
    assert len({tuple(t) for t in out.new_tokens[:3]}) > 1  # different samples of one prompt


def test_samples_share_one_prompt_pass(minigpt_model, monkeypatch):
    """Prefill once: the prompt runs once per prompt, and its cache rows are copied to the n samples."""
    kwargs = dict(max_new_tokens=4, do_sample=True, num_return_sequences=3, seed=0)
    recomputed = generate(minigpt_model, ["ROMEO:", "Hi"], use_cache=False, **kwargs)
    shapes, forward = [], GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda self, idx, **kw: shapes.append(tuple(idx.shape)) or forward(self, idx, **kw))
    out = generate(minigpt_model, ["ROMEO:", "Hi"], **kwargs)
    assert shapes == [(2, 3)] + [(6, 1)] * 3  # "ROMEO:" is 3 tokens, "Hi" 1 (left-padded)
    assert out.new_tokens == recomputed.new_tokens


def test_scores_are_log_probs_of_the_chosen_tokens(minigpt_model):
    out = generate(minigpt_model, "ROMEO:", max_new_tokens=5, return_scores=True, return_distributions=True)
    for step, token in enumerate(out.new_tokens[0]):
        expected = out.distributions[step][0, token].log().item()
        assert out.token_logprobs[0][step] == pytest.approx(expected, abs=1e-6)


def test_long_prompt_keeps_the_last_tokens(minigpt_model):
    long = torch.arange(1000, 1200).unsqueeze(0)  # 200 tokens; the context is 128
    with pytest.warns(UserWarning, match="prompt of 200 tokens \\+ 8 new tokens exceeds the context of 128; keeping the last 120"):
        out = generate(minigpt_model, long, max_new_tokens=8)
    assert torch.equal(out.ids[:, :120], long[:, -120:])
    assert torch.equal(out.ids, generate(minigpt_model, long[:, -120:], max_new_tokens=8).ids)


def test_stream_never_splits_a_character_and_holds_back_stop_prefixes():
    text = " ok 🦜🦜 then END of it"
    model = ScriptedModel(encode(text), prompt_len=1)
    pieces = list(stream(model, "A", max_new_tokens=len(model.script), use_cache=False))
    assert "".join(p for _, p in pieces) == text
    assert all("\ufffd" not in p for _, p in pieces)
    assert any(p == "" for _, p in pieces)  # a token holding half a parrot waits for the other half
    stopped = list(stream(model, "A", max_new_tokens=len(model.script), use_cache=False, stop=" END"))
    assert "".join(p for _, p in stopped) == " ok 🦜🦜 then"


def test_stream_equals_generate(minigpt_model):
    pieces = list(stream(minigpt_model, "ROMEO:", max_new_tokens=10, do_sample=True, seed=5))
    out = generate(minigpt_model, "ROMEO:", max_new_tokens=10, do_sample=True, seed=5)
    assert [t for t, _ in pieces] == out.new_tokens[0]
    assert "ROMEO:" + "".join(p for _, p in pieces) == out.text


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(temperature=-1.0), ValueError, r"temperature must be .*, got -1.0"),
        (dict(temperature=float("nan")), ValueError, r"temperature must be .*, got nan"),
        (dict(top_k=0), ValueError, r"top_k must be an integer >= 1, got 0"),
        (dict(top_k=2.5), TypeError, r"top_k must be an integer >= 1, got 2.5"),
        (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\], got 0.0"),
        (dict(top_p=1.5), ValueError, r"top_p must be in \(0, 1\], got 1.5"),
        (dict(min_p=2.0), ValueError, r"min_p must be in \(0, 1\], got 2.0"),
        (dict(repetition_penalty=0.0), ValueError, r"repetition_penalty must be .*, got 0.0"),
        (dict(max_new_tokens=-1), ValueError, r"max_new_tokens must be an integer >= 0, got -1"),
        (dict(max_new_tokens=128), ValueError, r"max_new_tokens must be < the model's context of 128 tokens, got 128"),
        (dict(max_new_tokens=3, min_new_tokens=5), ValueError, r"min_new_tokens must be <= max_new_tokens=3, got 5"),
        (dict(allow_special="yes"), TypeError, r"allow_special must be True or False, got 'yes'"),
        (dict(num_return_sequences=2), ValueError, r"num_return_sequences must be 1 with greedy decoding"),
        (dict(eos_token_id=60000), ValueError, r"eos_token_id must be token ids in \[0, 50257\), got 60000"),
        (dict(stop=""), ValueError, r"stop must be a non-empty string or a list of them, got ''"),
        (dict(do_sample="yes"), TypeError, r"do_sample must be True or False, got 'yes'"),
        (dict(seed=1, generator=torch.Generator()), ValueError, r"pass either seed or generator, not both"),
        (dict(beam_width=3), TypeError, r"unknown setting 'beam_width': the settings are allow_special, do_sample"),
    ],
)
def test_bad_settings(tiny_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        generate(tiny_model, "Hi", **kwargs)


@pytest.mark.parametrize(
    "prompt, mask, message",
    [
        ([], None, "prompt must not be an empty list"),
        ("", None, "prompt must contain at least one token, got an empty string"),
        (torch.tensor([[1, 50257]]), None, r"prompt ids must be in \[0, 50257\), got 50257"),
        (torch.tensor([[-1, 5]]), None, r"prompt ids must be in \[0, 50257\), got -1"),
        (torch.tensor([1, 2, 3]), None, r"prompt ids must be a non-empty \(B, T\) integer tensor, got torch.int64 \(3,\)"),
        (torch.tensor([[1, 2, 3]]), torch.ones(1, 2), r"attention_mask must have the prompt's shape \(1, 3\), got \(1, 2\)"),
        (torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]]), "attention_mask must hold only 0 and 1 and be left-padded"),
        ("Hi", torch.ones(1, 1), "attention_mask is only for id prompts"),
    ],
)
def test_bad_prompts(tiny_model, prompt, mask, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, prompt, attention_mask=mask)


def test_prompt_of_wrong_type(tiny_model):
    with pytest.raises(TypeError, match=r"^prompt\[0\] must be a str \(prompt is a list of str\), got 1 \(int\)$"):
        generate(tiny_model, [1, 2])


def test_special_token_in_a_prompt_needs_allow_special(tiny_model):
    with pytest.raises(ValueError, match=r"text contains the special token '<\|endoftext\|>'; pass allow_special=True"):
        generate(tiny_model, "Hi<|endoftext|>", max_new_tokens=1)
    out = generate(tiny_model, "Hi<|endoftext|>", max_new_tokens=1, allow_special=True)
    assert out.ids[0, :2].tolist() == [17250, 50256]
    assert "".join(p for _, p in stream(tiny_model, "Hi<|endoftext|>", max_new_tokens=1, allow_special=True)) == (
        out.text.removeprefix("Hi<|endoftext|>")
    )


def test_stream_checks_its_settings_when_called():
    model = GPT(GPTConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 1.5"):
        stream(model, "Hi", top_p=1.5)  # no next(): the error comes before the first token is asked for


def dropout_model():
    """A tiny model with heavy dropout, in train mode, one submodule set to eval by hand."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", dropout=0.5)).train()
    model.transformer.h[1].eval()
    return model


def modes(model):
    return [m.training for m in model.modules()]


def eval_copy(model):
    """The same weights in a separate model, in eval mode: what decoding should see."""
    copy = GPT(model.config).eval()
    copy.load_state_dict(model.state_dict())
    return copy


def test_train_mode_model_decodes_in_eval_mode_and_gets_its_modes_back():
    model = dropout_model()
    before = modes(model)
    expected = generate(eval_copy(model), "Hi", max_new_tokens=8).new_tokens
    for _ in range(2):  # the same greedy tokens each time: no dropout noise
        assert generate(model, "Hi", max_new_tokens=8).new_tokens == expected
    assert modes(model) == before
    pieces = stream(model, "Hi", max_new_tokens=8)
    assert [token for token, _ in pieces] == expected[0]
    assert modes(model) == before  # back once the stream has ended


def test_kv_cache_too_big_for_memory_is_refused_before_any_work(tiny_model, monkeypatch):
    monkeypatch.setattr("minigpt.kv_cache.available_memory", lambda device: 10**9)
    monkeypatch.setattr(GPT, "forward", lambda *args, **kw: pytest.fail("the model ran before the check"))
    # 200,000 rows × 6 positions × 2 layers × (K and V) × 64 wide × 4 bytes = 1.23 GB of cache, and 160.8 GB
    # of logits: 200,000 rows × 50257 × (4 bytes + 3 fp32 copies)
    with pytest.raises(ValueError, match=(
        r"num_return_sequences=200000 × batch size 1 = 200000 rows need [0-9.]+ GB at the peak of decoding "
        r"\(KV cache 1.2 GB for 6 positions each, logits over the 50257-token vocabulary 160.8 GB, "
        r"activations [0-9.]+ GB\), more than the 1.0 GB of memory available on cpu; "
        r"lower one of them, or max_new_tokens"
    )):
        generate(tiny_model, "Hi", max_new_tokens=5, do_sample=True, num_return_sequences=200_000)


# ---- wrong types at the API end in one named error, before any work (issue 29) ----

_PROMPT_KINDS = r"a str, a list of str, or a \(B, T\) tensor of token ids"


@pytest.mark.parametrize("prompt, shown", [(None, "None"), (42, r"42 \(int\)"), (b"Hi", r"b'Hi' \(bytes\)"),
                                           ({"Hi"}, r"\{'Hi'\} \(set\)")])
def test_a_prompt_of_the_wrong_type_names_what_was_given(tiny_model, prompt, shown):
    with pytest.raises(TypeError, match=rf"^prompt must be {_PROMPT_KINDS}, got {shown}$"):
        generate(tiny_model, prompt)


def test_a_list_prompt_names_its_wrong_item(tiny_model):
    with pytest.raises(TypeError, match=r"^prompt\[1\] must be a str \(prompt is a list of str\), got b'x' \(bytes\)$"):
        generate(tiny_model, ["Hi", b"x"])


def test_stream_wants_a_str(tiny_model):
    with pytest.raises(TypeError, match=r"^prompt must be a str when streaming, got \['Hi'\] \(list\)$"):
        stream(tiny_model, ["Hi"])


def test_a_seed_must_fit_torch_generators_64_bits(tiny_model):
    with pytest.raises(ValueError, match=rf"^seed must be an integer between 0 and {2**64 - 1}, got {2**70}$"):
        generate(tiny_model, "Hi", do_sample=True, seed=2**70)
    a = generate(tiny_model, "Hi", max_new_tokens=3, do_sample=True, seed=2**64 - 1)
    assert a.new_tokens == generate(tiny_model, "Hi", max_new_tokens=3, do_sample=True, seed=2**64 - 1).new_tokens


def _decoders():
    from minigpt.search import beam_search, contrastive_search, sample_and_rank
    from minigpt.speculative import prompt_lookup_generate

    return {
        "generate": lambda m: generate(m, "Hi", max_new_tokens=2),
        "stream": lambda m: stream(m, "Hi", max_new_tokens=2),
        "beam_search": lambda m: beam_search(m, "Hi", num_beams=2, max_new_tokens=2),
        "sample_and_rank": lambda m: sample_and_rank(m, "Hi", num_samples=2, max_new_tokens=2),
        "contrastive_search": lambda m: contrastive_search(m, "Hi", penalty_alpha=0.5, top_k=2, max_new_tokens=2),
        "prompt_lookup_generate": lambda m: prompt_lookup_generate(m, "Hi", max_new_tokens=2),
    }


@pytest.mark.parametrize("decoder", list(_decoders()))
@pytest.mark.parametrize("model, shown", [(torch.nn.Linear(2, 2), r"Linear\(.*\) \(Linear\)"), ("gpt2", r"'gpt2' \(str\)")])
def test_every_decoder_wants_a_minigpt_model(decoder, model, shown):
    message = rf"^model must be a minigpt GPT \(minigpt.model.GPT; load one by name or path with minigpt.load_model\), got {shown}$"
    with pytest.raises(TypeError, match=message):
        _decoders()[decoder](model)


def test_speculative_generate_names_the_wrong_model(tiny_model):
    from minigpt.speculative import speculative_generate

    with pytest.raises(TypeError, match=r"^target must be a minigpt GPT .*, got 'gpt2' \(str\)$"):
        speculative_generate("gpt2", tiny_model, "Hi", max_new_tokens=2)
    with pytest.raises(TypeError, match=r"^draft must be a minigpt GPT .*, got None$"):
        speculative_generate(tiny_model, None, "Hi", max_new_tokens=2)


def test_fast_decoder_wants_ids_not_text(tiny_model):
    from minigpt.fast.decoder import FastDecoder

    decoder = FastDecoder(tiny_model, max_batch_size=1, max_len=8)
    with pytest.raises(TypeError, match=r"^ids must be a \(B, T\) tensor of token ids \(for text, use "
                                        r"minigpt.generate.generate\), got 'Hello' \(str\)$"):
        decoder.generate("Hello", max_new_tokens=2)
