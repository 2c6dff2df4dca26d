"""The watermark and its detector, checked against transformers' WatermarkLogitsProcessor and WatermarkDetector."""

import dataclasses
import math

import pytest
import torch
from test_generate import left_pad

from minigpt.generate import PAD_TOKEN_ID, generate
from minigpt.logits import LogitsSettings, WatermarkSettings, greenlist, watermark_logits
from minigpt.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, encode
from minigpt.watermark import Detection, detect, p_value, z_score

transformers = pytest.importorskip("transformers")

PROMPTS = ["Every effort moves you", "ROMEO:", "The quick brown fox jumps over"]
# (seeding_scheme, context_width, greenlist_ratio, hashing_key): each scheme, widths 1-3, several γ and keys
SETTINGS = [
    ("lefthash", 1, 0.25, 15485863),
    ("lefthash", 2, 0.5, 7),
    ("lefthash", 3, 0.1, 2**40 + 3),
    ("selfhash", 1, 0.25, 15485863),
    ("selfhash", 2, 0.5, 7),
    ("selfhash", 3, 0.3, 2**40 + 3),
]


def ours_and_theirs(scheme, width, ratio, key, bias=2.0):
    ours = WatermarkSettings(greenlist_ratio=ratio, bias=bias, hashing_key=key, seeding_scheme=scheme,
                             context_width=width)
    theirs = transformers.WatermarkingConfig(greenlist_ratio=ratio, bias=bias, hashing_key=key,
                                             seeding_scheme=scheme, context_width=width)
    return ours, theirs


def processor(config):
    return config.construct_processor(VOCAB_SIZE, "cpu")


@pytest.mark.parametrize(("scheme", "width", "ratio", "key"), SETTINGS)
def test_green_lists_equal_transformers(scheme, width, ratio, key):
    ours, theirs = ours_and_theirs(scheme, width, ratio, key)
    reference = processor(theirs)
    for ids in ([464, 50256, 13, 998], [50256] * 3, [1, 2, 50000], [0, 0, 7]):
        expected = reference._get_greenlist_ids(torch.tensor(ids))
        assert torch.equal(greenlist(ids, ours), expected)
        assert torch.equal(greenlist(torch.tensor(ids), ours), expected)
        assert len(expected) == int(VOCAB_SIZE * ratio)


@pytest.mark.parametrize(("scheme", "width", "ratio", "key"), SETTINGS)
def test_watermark_logits_equal_transformers(scheme, width, ratio, key):
    ours, theirs = ours_and_theirs(scheme, width, ratio, key, bias=1.5)
    torch.manual_seed(width)
    logits, ids = torch.randn(3, VOCAB_SIZE), torch.randint(0, VOCAB_SIZE, (3, 4))
    got = watermark_logits(logits, ids, ours)
    assert torch.equal(got, processor(theirs)(ids, logits))
    assert not torch.equal(got, logits) and torch.equal(logits, logits.clone())  # it did something, not in place
    # too short to seed: unchanged, as in transformers
    assert torch.equal(watermark_logits(logits, ids[:, : width - 1], ours), logits)


def test_selfhash_with_no_green_candidate_leaves_the_row():
    # γ = 0.1 and key 7, width 3: some row has none of its 40 best tokens green (transformers fails there)
    ours, theirs = ours_and_theirs("selfhash", 3, 0.1, 7)
    torch.manual_seed(3)
    for _ in range(200):
        logits, ids = torch.randn(1, VOCAB_SIZE), torch.randint(0, VOCAB_SIZE, (1, 4))
        if torch.equal(watermark_logits(logits, ids, ours), logits):
            break
    else:
        pytest.fail("no row without a green candidate in 200 tries")
    with pytest.raises(IndexError):
        processor(theirs)(ids, logits)


@pytest.mark.parametrize(("scheme", "width", "ratio", "key"), SETTINGS[:2] + SETTINGS[3:5])
def test_greedy_generate_equals_transformers(hf_model, minigpt_model, scheme, width, ratio, key):
    ours, theirs = ours_and_theirs(scheme, width, ratio, key)
    ids, mask = left_pad(PROMPTS)
    got = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=6, watermark=ours)
    with torch.no_grad():
        ref = hf_model.generate(ids, attention_mask=mask, pad_token_id=PAD_TOKEN_ID, eos_token_id=None,
                                max_new_tokens=6, do_sample=False, watermarking_config=theirs)
    assert torch.equal(got.ids, ref)
    plain = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=6)
    assert not torch.equal(got.ids, plain.ids)  # the watermark changed the text


@pytest.mark.parametrize(("scheme", "width", "ratio", "key"), [SETTINGS[0], SETTINGS[4]])
def test_sampled_generate_equals_transformers(hf_model, minigpt_model, scheme, width, ratio, key):
    """Both draw with torch.multinomial from torch's global generator; the green lists use their own."""
    ours, theirs = ours_and_theirs(scheme, width, ratio, key)
    ids, mask = left_pad(PROMPTS)
    settings = dict(temperature=0.8, top_k=20)
    torch.manual_seed(11)
    got = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=6, do_sample=True,
                   return_distributions=True, watermark=ours, **settings)
    torch.manual_seed(11)
    with torch.no_grad():
        ref = hf_model.generate(ids, attention_mask=mask, pad_token_id=PAD_TOKEN_ID, eos_token_id=None,
                                max_new_tokens=6, do_sample=True, watermarking_config=theirs, output_scores=True,
                                return_dict_in_generate=True, **settings)
    assert torch.equal(got.ids, ref.sequences)
    for step, (dist, scores) in enumerate(zip(got.distributions, ref.scores)):
        torch.testing.assert_close(dist, torch.softmax(scores, -1), atol=1e-6, rtol=0, msg=f"step {step}")


@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
def test_beam_search_with_a_watermark_equals_transformers(scheme):
    """Beam search biases the log-probs, after every other transform, as transformers' beam search does."""
    from minigpt.bench.peers import to_transformers, transformers_generate
    from minigpt.model import GPT, GPTConfig
    from minigpt.search import beam_search

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval().double()  # float64: no near-tie decided by rounding
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if "ln_" in name else p.normal_(0.0, 0.15)
    ours, theirs = ours_and_theirs(scheme, 1, 0.25, 15485863, bias=3.0)
    ids = torch.tensor([encode("ROMEO: O")])
    got = beam_search(model, ids, num_beams=3, max_new_tokens=6, watermark=ours)
    assert torch.equal(got.ids, transformers_generate(to_transformers(model), ids, 6, num_beams=3,
                                                      watermarking_config=theirs))
    assert not torch.equal(got.ids, beam_search(model, ids, num_beams=3, max_new_tokens=6).ids)


def test_watermark_true_means_the_defaults(minigpt_model):
    assert LogitsSettings(watermark=True).watermark == WatermarkSettings()
    assert LogitsSettings(watermark=False).watermark is None
    default = generate(minigpt_model, "ROMEO:", max_new_tokens=4, watermark=True)
    assert default.ids.tolist() == generate(minigpt_model, "ROMEO:", max_new_tokens=4,
                                            logits=LogitsSettings(watermark=WatermarkSettings())).ids.tolist()


def test_the_watermark_comes_after_the_filters():
    names = {order: [step.name for step in LogitsSettings(temperature=0.7, top_k=5, watermark=True, order=order)
                     .chain(sample=True).steps] for order in ("transformers", "llama.cpp")}
    assert names == {"transformers": ["temperature", "top_k", "watermark"],  # last, as in transformers
                     "llama.cpp": ["top_k", "watermark", "temperature"]}  # temperature stays last
    # greedy decoding keeps it (it is no sampling filter), and it costs nothing when off
    assert [s.name for s in LogitsSettings(watermark=True).chain(sample=False).steps] == ["watermark"]
    assert LogitsSettings().chain(sample=False).steps == ()


def test_speculative_decoding_refuses_the_watermark(minigpt_model):
    from minigpt.speculative import speculative_generate

    with pytest.raises(ValueError, match="speculative decoding applies only the transforms that read no context "
                       r"\(temperature, the sampling filters, suppress_tokens\), got watermark"):
        speculative_generate(minigpt_model, minigpt_model, "ROMEO:", max_new_tokens=3, watermark=True)


# ---- the detector ----


def watermarked_rows(minigpt_model, ours, n=16):
    ids, mask = left_pad(PROMPTS)
    out = generate(minigpt_model, ids, attention_mask=mask, max_new_tokens=n, do_sample=True, seed=5, watermark=ours)
    return [torch.tensor(row) for row in out.new_tokens]


@pytest.mark.parametrize(("scheme", "width", "ratio", "key"), [SETTINGS[0], SETTINGS[1], SETTINGS[5]])
def test_detection_equals_transformers(hf_model, minigpt_model, scheme, width, ratio, key):
    ours, theirs = ours_and_theirs(scheme, width, ratio, key, bias=4.0)
    detector = transformers.WatermarkDetector(hf_model.config, "cpu", theirs)
    texts = watermarked_rows(minigpt_model, ours) + [torch.tensor(encode("Fair is foul, and foul is fair: hover "
                                                                         "through the fog and filthy air."))]
    for ids in texts:
        got = detect(ids, ours, z_threshold=2.0)
        ref = detector(ids[None], z_threshold=2.0, return_dict=True)
        assert got.num_tokens_scored == ref.num_tokens_scored[0] == len(ids) - width + (scheme == "selfhash")
        assert got.num_green_tokens == ref.num_green_tokens[0] == sum(got.green)
        assert got.green_fraction == ref.green_fraction[0]
        assert got.z_score == ref.z_score[0]
        assert got.prediction == ref.prediction[0]
        assert got.p_value == pytest.approx(0.5 * math.erfc(got.z_score / math.sqrt(2)), abs=1e-15)
        assert got.confidence == 1 - got.p_value
        for threshold in (got.z_score - 0.01, got.z_score + 0.01):  # both verdicts, whatever the text's z
            verdict = detect(ids, ours, z_threshold=threshold).prediction
            assert verdict == (threshold < got.z_score) == detector(ids[None], z_threshold=threshold)[0]


def test_transformers_p_value_is_a_cruder_formula(hf_model):
    """Why our p-value is not transformers': its approximation of the normal tail lacks a square root."""
    detector = transformers.WatermarkDetector(hf_model.config, "cpu", transformers.WatermarkingConfig())
    for z in (0.5, 1.0, 3.0):
        theirs = float(detector._compute_pval(z))
        assert theirs == pytest.approx(0.5 * math.exp(-2 * z**2 / math.pi), rel=1e-12)
        assert theirs > p_value(z) * 1.15
    assert p_value(1.0) == pytest.approx(0.158655253931457, abs=1e-15)


def test_a_leading_endoftext_is_dropped_and_text_is_encoded(hf_model):
    ids = encode("ROMEO: O, she doth teach the torches to burn bright!")
    detector = transformers.WatermarkDetector(hf_model.config, "cpu", transformers.WatermarkingConfig())
    with_bos = detect([EOT_TOKEN_ID, *ids])
    assert with_bos == detect(ids) == detect("ROMEO: O, she doth teach the torches to burn bright!")
    assert with_bos.z_score == detector(torch.tensor([[EOT_TOKEN_ID, *ids]]), return_dict=True).z_score[0]


def test_ignore_repeated_ngrams_scores_each_ngram_once():
    settings = WatermarkSettings()
    ids = encode(" to be or not to be, to be or not to be")
    pairs = [tuple(ids[i : i + 2]) for i in range(len(ids) - 1)]
    colour = {pair: pair[1] in greenlist([pair[0]], settings).tolist() for pair in pairs}
    once = detect(ids, settings, ignore_repeated_ngrams=True)
    every = detect(ids, settings)
    assert once.num_tokens_scored == len(colour) < every.num_tokens_scored == len(pairs)
    assert once.num_green_tokens == sum(colour.values())
    assert once.green == every.green == tuple(colour[p] for p in pairs)
    assert once.z_score == z_score(sum(colour.values()), len(colour), 0.25)


def test_z_score_by_hand():
    # 10 green of 20 at γ = 1/4: (10 - 5) / sqrt(20 · 1/4 · 3/4)
    assert z_score(10, 20, 0.25) == (10 - 5) / math.sqrt(3.75)
    assert z_score(5, 20, 0.25) == 0.0


def test_detection_is_a_frozen_record():
    detection = detect("To be, or not to be, that is the question")
    assert isinstance(detection, Detection) and len(detection.green) == detection.num_tokens_scored
    with pytest.raises(dataclasses.FrozenInstanceError):
        detection.z_score = 0.0


# ---- bad settings and input: one sentence naming the parameter ----


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(greenlist_ratio=1.0), ValueError, "greenlist_ratio must be in (0, 1), got 1.0"),
    (dict(greenlist_ratio=0), ValueError, "greenlist_ratio must be in (0, 1), got 0"),
    (dict(greenlist_ratio="0.5"), TypeError, "greenlist_ratio must be in (0, 1), got '0.5'"),
    (dict(bias=float("inf")), ValueError, "bias must be a finite number, got inf"),
    (dict(hashing_key=-1), ValueError, "hashing_key must be an integer between 0 and 9223372036854775807, got -1"),
    (dict(hashing_key=1.5), TypeError, "hashing_key must be an integer between 0 and 9223372036854775807, got 1.5"),
    (dict(seeding_scheme="minhash"), ValueError, "seeding_scheme must be one of lefthash, selfhash, got 'minhash'"),
    (dict(context_width=0), ValueError, "context_width must be an integer >= 1, got 0"),
])
def test_bad_settings_are_refused(kwargs, error, message):
    with pytest.raises(error) as caught:
        WatermarkSettings(**kwargs)
    assert str(caught.value) == message


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match=r"watermark must be a minigpt.logits.WatermarkSettings, True, False or "
                       r"None, got 2.0"):
        LogitsSettings(watermark=2.0)
    with pytest.raises(ValueError, match=r"ids must be a list or 1-D tensor of at least context_width=2 token ids, "
                       r"got 1 ids"):
        greenlist([5], WatermarkSettings(context_width=2))
    with pytest.raises(ValueError, match=r"ids_or_text must hold more than context_width=1 tokens \(after a leading "
                       r"<\|endoftext\|>\), to score at least one; got 1"):
        detect([EOT_TOKEN_ID, 5])
    with pytest.raises(TypeError, match=r"ids_or_text must be a str, a list of token ids or a 1-D tensor of them, "
                       r"got a tensor of shape \(1, 3\)"):
        detect(torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"z_threshold must be a finite number, got nan"):
        detect([1, 2, 3], z_threshold=float("nan"))
    with pytest.raises(ValueError, match=r"num_green must be an integer between 0 and 4, got 5"):
        z_score(5, 4, 0.25)


# ---- the command line ----


@pytest.fixture
def checkpoint_dir(tiny_model, tmp_path):
    from minigpt.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path / "tiny")


def test_generate_watermark_flags_match_the_library(checkpoint_dir, tiny_model, capsys):
    from minigpt.cli import main

    flags = ["--greenlist-ratio", "0.5", "--watermark-bias", "3", "--hashing-key", "7", "--seeding-scheme",
             "selfhash", "--context-width", "2"]
    assert main(["generate", "Hello", "--model", str(checkpoint_dir), "--max-new-tokens", "5", "--temperature", "0",
                 "--watermark", *flags]) == 0
    settings = WatermarkSettings(greenlist_ratio=0.5, bias=3.0, hashing_key=7, seeding_scheme="selfhash",
                                 context_width=2)
    expected = generate(tiny_model, "Hello", max_new_tokens=5, watermark=settings)
    assert capsys.readouterr().out == expected.text + "\n"
    assert expected.ids.tolist() != generate(tiny_model, "Hello", max_new_tokens=5).ids.tolist()
    main(["generate", "Hello", "--model", str(checkpoint_dir), "--max-new-tokens", "5", "--temperature", "0",
          "--watermark"])
    assert capsys.readouterr().out == generate(tiny_model, "Hello", max_new_tokens=5, watermark=True).text + "\n"


def test_a_watermark_flag_without_watermark_is_refused(checkpoint_dir, capsys):
    from minigpt.cli import main

    assert main(["generate", "Hi", "--model", str(checkpoint_dir), "--watermark-bias", "3", "--context-width",
                 "2"]) == 2
    assert capsys.readouterr().err == ("minigpt generate: error: --watermark-bias, --context-width set(s) the "
                                       "watermark, which is off: pass --watermark too\n")


def test_detect_prints_the_tokens_counts_and_verdict(capsys):
    from minigpt.cli import main

    text = " to be or not to be"
    assert main(["detect", text, "--greenlist-ratio", "0.5", "--z-threshold", "0.5"]) == 0
    found = detect(text, WatermarkSettings(greenlist_ratio=0.5), z_threshold=0.5)
    out = capsys.readouterr().out.splitlines()
    ids = encode(text)
    from minigpt.tokenizer import decode

    marked = decode(ids[:1]) + "".join(f"[{decode([i])}]" if g else decode([i]) for i, g in zip(ids[1:], found.green))
    assert out == [
        "tokens, green ones in [brackets] (the first 1 only seed the green list):",
        marked,
        "scored tokens: 5",
        f"green tokens:  {found.num_green_tokens} ({found.green_fraction:.3f}; 0.5 by chance)",
        f"z-score:       {found.z_score:.3f}",
        f"p-value:       {found.p_value:.3g}",
        f"verdict:       {'watermarked (z > 0.5)' if found.prediction else 'not watermarked (z <= 0.5)'}",
    ]
    assert main(["detect", "Hi", "--context-width", "3"]) == 2
    assert capsys.readouterr().err == ("minigpt detect: error: TEXT must hold more than --context-width=3 tokens, "
                                       "to score at least one; got 1\n")


def test_selfhash_table_is_built_once_per_key():
    from minigpt.logits import _fixed_table

    settings = WatermarkSettings(seeding_scheme="selfhash", hashing_key=12345)
    greenlist([1, 2], settings)
    misses = _fixed_table.cache_info().misses
    watermark_logits(torch.zeros(2, VOCAB_SIZE), torch.tensor([[1, 2], [3, 4]]), settings)
    greenlist([5], settings)
    assert _fixed_table.cache_info().misses == misses  # 1M draws once, not per step
