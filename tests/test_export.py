"""`minigpt export --to hf`: transformers must load the directory offline and compute what minigpt computes."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt import cli, export
from minigpt.checkpoint import load_model, save_checkpoint
from minigpt.export import HF_FILES, MARKER_NAME, byte_to_unicode, export_gguf, export_hf, recorded_heldout_loss
from minigpt.generate import generate
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import EOT_TOKEN_ID, decode, encode, gpt2_encoding

transformers = pytest.importorskip("transformers")

PROMPTS = ["ROMEO:", "JULIET:\nO Romeo, Romeo, wherefore art"]  # different lengths: the first is left-padded
# scripts, spaces (runs, tabs, CRLF, no-break, zero-width), emoji with skin tones, ZWJ sequences and flags,
# contractions GPT-2's split pattern treats specially, digits, curly quotes, and the end-of-text token
TEXT = (
    "Hello, world! Ça va? Grüße aus Köln. 日本語のテキスト、中文句子，한국어 문장, Ελληνικά, русский язык, עברית, "
    "العربية, हिन्दी, ไทย\n\n\tTabs\tand   three spaces   \r\n  trailing  \n\n\n"
    "🙂👍🏽 👨‍👩‍👧 🇺🇳🏳️‍🌈 emoji…“quotes” — dashes; I'll we've they're it's DON'T 123 4567.89 "
    "a\u00a0b\u200bc \u3000 x<|endoftext|>y  "
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the hub: transformers reads the exported files or fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("transformers.utils.hub._is_offline_mode", True)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random model with larger weights than GPT-2's init (peaked, varied logits), and its export."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", dropout=0.1)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if "ln_" in name else p.normal_(0.0, 0.15)
    return model, export_hf(model, tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture(scope="module")
def shakespeare_dir(tmp_path_factory):
    model = load_model("shakespeare")
    return model, export_hf(model, tmp_path_factory.mktemp("shakespeare_hf"))


def left_pad(texts):
    rows = [encode(t) for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[EOT_TOKEN_ID] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def test_files_and_config(tiny_dir):
    model, out = tiny_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(HF_FILES)  # the staging directory is gone
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    assert {k: config[k] for k in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size")} == dict(
        n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=50257)
    assert config["layer_norm_epsilon"] == 1e-5 and config["bos_token_id"] == config["eos_token_id"] == 50256
    assert config["resid_pdrop"] == config["embd_pdrop"] == config["attn_pdrop"] == 0.1
    hf_config = transformers.AutoConfig.from_pretrained(out)
    assert hf_config.tie_word_embeddings and hf_config.activation_function == "gelu_new"
    # minigpt generate's sampling, stopping at the 128-token context; GPT-2's one special token everywhere
    assert json.loads((out / "generation_config.json").read_text()) == {
        "do_sample": True, "temperature": 0.8, "top_k": 50, "max_length": 128,
        "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256}
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 50256
    assert tokenizer.padding_side == "left"


def test_the_generation_config_is_minigpt_generates_defaults():
    args = cli.build_parser("generate").parse_args(["generate", "ROMEO:"])
    assert export.GENERATION_DEFAULTS == {"do_sample": True, "temperature": args.temperature, "top_k": args.top_k}


def test_the_model_card_takes_its_numbers_from_the_model(tmp_path, capsys):
    out = tmp_path / "draft"
    assert cli.main(["export", "shakespeare-draft", "--to", "hf", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"wrote {out}: run it with transformers.pipeline(\"text-generation\", model={str(out)!r})(\"ROMEO:\"), "
        f"or load it with AutoModelForCausalLM.from_pretrained({str(out)!r})\n")
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    assert "\n# shakespeare-draft\n" in card and "Licence: MIT, minigpt's." in card
    assert ("Architecture: GPT-2 (`GPT2LMHeadModel`), 2 layers, 2 heads, width 32, a 256-token context, GPT-2's "
            "50,257-token tokenizer, 1,641,888 parameters.\n") in card  # data/README.md's count for the draft
    assert "# samples at temperature 0.8, top-k 50 (generation_config.json)\n" in card
    assert "three whole works held out (*Twelfth Night*, *The Two Gentlemen of Verona*, *The Winter's Tale*)" in card
    # the shipped config.json records the loss over all 474 held-out windows, data/README.md's 4.687
    assert "Held-out loss: 4.687 nats/token (mean cross-entropy over the held-out works)." in card
    assert 'AutoModelForCausalLM.from_pretrained("DIR")' in card and 'pipeline("text-generation", model="DIR")' in card
    assert "GPT-2 weights" in export.model_card(tiny_model(0), name="gpt2")  # not the Shakespeare corpus


def test_a_trained_runs_heldout_loss_goes_into_the_card(tmp_path, capsys):
    run = tmp_path / "run"
    save_checkpoint(tiny_model(0), run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"training_step": 20}))
    torch.save({"step": 20, "heldout_losses": [(10, 4.5), (20, 4.25)]}, run / "train_state.pt")
    assert recorded_heldout_loss(run) == 4.25
    assert cli.main(["export", str(run), "--to", "hf", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "\n# run\n" in card and "Held-out loss: 4.250 nats/token (mean cross-entropy over the held-out works)." in card
    (run / "config.json").write_text(json.dumps(config | {"training_step": 30}))  # weights saved after that loss
    assert recorded_heldout_loss(run) is None
    (run / "train_state.pt").write_bytes(b"not a torch file")
    assert recorded_heldout_loss(run) is None
    assert "Held-out loss: not recorded with these weights." in export.model_card(tiny_model(0), name="x")


def test_the_shipped_models_record_the_heldout_loss_data_readme_states():
    readme = (Path(__file__).resolve().parent.parent / "data" / "README.md").read_text(encoding="utf-8")
    assert f"**{recorded_heldout_loss('shakespeare'):.3f}** nats/token" in readme
    assert f"| {recorded_heldout_loss('shakespeare-draft'):.3f} nats/token |" in readme


@pytest.mark.parametrize("which", ["tiny_dir", "shakespeare_dir"])
def test_round_trip_is_bit_exact(which, request):
    model, out = request.getfixturevalue(which)
    loaded = load_model(out)
    # the HF config keeps no minigpt-only fields; dropout travels as *_pdrop, which loading does not read
    assert dataclass_fields(loaded.config, "dropout") == dataclass_fields(model.config, "dropout")
    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def dataclass_fields(config, *skip):
    return {k: v for k, v in config.to_dict().items() if k not in skip}


@pytest.mark.parametrize("which", ["tiny_dir", "shakespeare_dir"])
def test_transformers_logits_equal_minigpts_on_a_padded_batch(which, request):
    model, out = request.getfixturevalue(which)
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # the head is tied there too
    ids, mask = left_pad(PROMPTS)
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # padded rows count from their first real token
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=positions).logits
        ours = model(ids, attention_mask=mask, position_ids=positions)
    real = mask.bool()  # padding positions carry no meaning in either model
    # 1e-5 relative to the logits' size: float32 sums in another order differ by ~1e-6 of it; shakespeare's
    # logits reach 15.7 and differ by 1.3e-5, as much as minigpt's own do between this batch and one row alone
    scale = max(1.0, ref[real].abs().max().item())
    assert (ours - ref)[real].abs().max() <= 1e-5 * scale


def test_transformers_greedy_generate_equals_minigpts(shakespeare_dir):
    model, out = shakespeare_dir
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ours = generate(model, PROMPTS, max_new_tokens=32, eos_token_id=EOT_TOKEN_ID)
    ids, mask = left_pad(PROMPTS)
    ref = hf.generate(ids, attention_mask=mask, do_sample=False, temperature=None, max_new_tokens=32,
                      pad_token_id=EOT_TOKEN_ID)
    assert torch.equal(ours.ids, ref)


def test_transformers_tokenizers_give_tiktokens_ids(tiny_dir):
    _, out = tiny_dir
    expected = encode(TEXT, allow_special=True)
    fast = transformers.AutoTokenizer.from_pretrained(out)  # reads tokenizer.json
    slow = transformers.GPT2Tokenizer.from_pretrained(out)  # reads vocab.json and merges.txt
    assert fast.is_fast and len(fast) == len(slow) == 50257
    for tokenizer in (fast, slow):
        assert tokenizer(TEXT)["input_ids"] == expected, type(tokenizer).__name__
        assert tokenizer.decode(expected) == decode(expected) == TEXT
        assert tokenizer.eos_token_id == EOT_TOKEN_ID


def test_every_token_spells_tiktokens_bytes(tiny_dir):
    _, out = tiny_dir
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    assert byte_to_unicode() == bytes_to_unicode()  # ours is derived, not copied: it must be theirs
    to_byte = {c: b for b, c in byte_to_unicode().items()}
    vocab = json.loads((out / "vocab.json").read_text())
    ranks = {gpt2_encoding().decode_single_token_bytes(i): i for i in range(EOT_TOKEN_ID)}
    assert {bytes(to_byte[c] for c in token): i for token, i in vocab.items() if i != EOT_TOKEN_ID} == ranks
    merges = (out / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 50000
    # each merge joins two tokens into the token whose rank is the merge's line: 256 single bytes come first
    for line, merge in enumerate(merges[1:]):
        a, b = merge.split(" ")
        assert vocab[a + b] == 256 + line and vocab[a] < vocab[a + b] and vocab[b] < vocab[a + b]


def test_export_refuses_other_vocabularies_and_non_models(tmp_path):
    with pytest.raises(ValueError, match=r"model.config.vocab_size must be 50257 \(GPT-2's tokenizer"):
        export_hf(GPT(GPTConfig.from_preset("tiny", vocab_size=100)), tmp_path)
    with pytest.raises(TypeError, match="model must be a minigpt GPT, got str"):
        export_hf("shakespeare", tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_exports_and_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    out = tmp_path / "new" / "hf"
    assert cli.main(["export", "shakespeare-draft", "--to", "hf", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(HF_FILES)
    before = (out / "model.safetensors").stat().st_mtime_ns

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(cli, "load_model", no_loading)
    assert cli.main(["export", "shakespeare-draft", "--to", "hf", str(out)]) == 2
    assert f"out_dir={str(out)!r} holds an earlier minigpt export: pass --overwrite (overwrite=True) to replace " \
        "it, or choose another directory" in capsys.readouterr().err
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    monkeypatch.undo()
    assert cli.main(["export", "shakespeare-draft", "--to", "hf", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(HF_FILES)


def test_cli_bad_input_fails_before_any_work(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(cli, "load_model", no_loading)
    assert cli.main(["export", "no-such-model", "--to", "hf", str(tmp_path / "a")]) == 2
    assert "MODEL 'no-such-model' is neither a shipped model (shakespeare" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("")
    assert cli.main(["export", "shakespeare", "--to", "hf", str(tmp_path / "file")]) == 2
    assert f"out_dir={str(tmp_path / 'file')!r} is a file, not a directory" in capsys.readouterr().err
    assert cli.main(["export", "shakespeare", "--to", "hf", str(tmp_path / "file" / "out")]) == 2
    assert f"is not in a writable directory ({tmp_path / 'file'} is a file)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "shakespeare", "--to", "onnx", str(tmp_path / "b")])
    assert exit_info.value.code == 2 and "invalid choice: 'onnx' (choose from 'hf', 'gguf')" in capsys.readouterr().err
    assert cli.main(["export", "shakespeare", "--to", "hf", str(tmp_path / "c"), "--dtype", "f16"]) == 2
    assert "--dtype applies to --to gguf only (--to hf writes the model's float32), got --dtype f16" in (
        capsys.readouterr().err)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_cli_unwritable_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert cli.main(["export", "shakespeare", "--to", "hf", str(locked / "out")]) == 2
    finally:
        locked.chmod(0o700)
    assert "is not in a writable directory (Permission denied); the export is built beside it" in (
        capsys.readouterr().err)


def tiny_model(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_preset("tiny"))


def beside(path):
    """What lies next to ``path`` in its folder: the leftovers of killed runs, if any."""
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_overwrite_replaces_only_an_earlier_export(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ValueError) as info:
            export_hf(tiny_model(0), mine, overwrite=overwrite)
        assert str(info.value) == (
            f"out_dir={str(mine)!r} holds files no minigpt export wrote (config.json, notes.txt; no "
            "minigpt-export.json naming them): --overwrite (overwrite=True) replaces only an earlier minigpt "
            "export, so choose a new or empty directory")
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "config.json").read_text() == "{}"
    out = export_hf(tiny_model(0), tmp_path / "out")
    assert json.loads((out / MARKER_NAME).read_text()) == {"written_by": "minigpt export --to hf",
                                                           "files": sorted(HF_FILES)}
    (out / "notes.md").write_text("a user's file")  # no longer only an export: refused, named
    with pytest.raises(ValueError, match=r"holds files no minigpt export wrote \(notes.md; no minigpt-export"):
        export_hf(tiny_model(1), out, overwrite=True)
    (out / "notes.md").unlink()
    (out / MARKER_NAME).write_text('{"written_by": "me", "files": ["config.json"]}')  # not ours
    with pytest.raises(ValueError, match=r"no minigpt export wrote \(README.md, config.json, generation_config"):
        export_hf(tiny_model(1), out, overwrite=True)
    assert beside(out) == ["mine"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_exported_file_gets_the_umasks_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        hf = export_hf(tiny_model(0), tmp_path / "hf")
        gguf_file = export_gguf(tiny_model(0), tmp_path / "m.gguf")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*hf.iterdir(), gguf_file]}
    assert modes == dict.fromkeys([*HF_FILES, "m.gguf"], 0o666 & ~umask)  # safetensors alone made 0o600


PIPELINE = """
import json, sys, warnings
import transformers
from transformers import pipeline

transformers.logging.set_verbosity_warning()  # its default, made explicit: every warning reaches stderr
warnings.simplefilter("always")  # and every Python warning, each time it is raised
tiny = pipeline("text-generation", model=sys.argv[1])
made, generate = [], tiny.model.generate


def counted(*args, **kwargs):  # keeps the ids the bare call made: its text need not re-tokenize to them
    ids = generate(*args, **kwargs)
    made.append(ids[0].tolist())
    return ids


tiny.model.generate = counted
bare = tiny("ROMEO:")[0]["generated_text"]
generator = pipeline("text-generation", model=sys.argv[2])
greedy = generator("ROMEO:", do_sample=False, temperature=None, max_new_tokens=40)[0]["generated_text"]
batch = generator(["ROMEO:", "JULIET:\\nO Romeo, Romeo, wherefore art"], do_sample=False, temperature=None,
                  max_new_tokens=8)
print(json.dumps({"bare": [bare[:6], made[0]], "greedy": greedy, "batch": [r[0]["generated_text"] for r in batch]}))
"""


def test_a_bare_a_batched_and_a_greedy_pipeline_call_work_without_warnings(tiny_dir, shakespeare_dir):
    model, out = shakespeare_dir
    # a fresh process: transformers warns once per process, so an earlier test could hide a warning here
    run = subprocess.run([sys.executable, "-c", PIPELINE, str(tiny_dir[1]), str(out)], capture_output=True,
                         text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr
    assert run.stderr == "Device set to use cpu\n" * 2  # transformers logs it for every pipeline: nothing else
    result = json.loads(run.stdout)
    # the bare call (tiny: quicker) samples until its 128-token context is full, not past it (an IndexError)
    text, ids = result["bare"]
    assert text == "ROMEO:" and len(ids) == 128 and ids[:3] == encode("ROMEO:")
    ours = generate(model, "ROMEO:", max_new_tokens=40, temperature=0)  # = minigpt generate --temperature 0
    assert len(ours.new_tokens[0]) == 40 and result["greedy"] == "ROMEO:" + decode(ours.new_tokens[0])
    # a batch of two lengths, the shorter padded on the left: each row continues its own prompt as alone
    ours = generate(model, PROMPTS, max_new_tokens=8, temperature=0)
    assert result["batch"] == [prompt + decode(new) for prompt, new in zip(PROMPTS, ours.new_tokens)]


def small_tokenizer(out, max_length):
    """Stands in for ``_write_tokenizer`` (slow): the renames are under test here, not the tokenizer."""
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_text("{}")


KILLED_EXPORT = """
import os, shutil, signal, sys
import torch
from minigpt import export
from minigpt.model import GPT, GPTConfig

where, calls = sys.argv[2], []
real_replace, real_rmtree = os.replace, shutil.rmtree

def replace(src, dst):  # kill before the first rename (aside) or the second (into place)
    calls.append(src)
    if where == f"replace{len(calls)}":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

def rmtree(path, *args, **kwargs):  # kill after the rename, before the old export is deleted
    if where == "rmtree" and str(path).endswith(".old"):
        os.kill(os.getpid(), signal.SIGKILL)
    real_rmtree(path, *args, **kwargs)

def small_tokenizer(out, max_length):  # the renames are under test, not the tokenizer (slow to build)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_text("{}")

os.replace, shutil.rmtree, export._write_tokenizer = replace, rmtree, small_tokenizer
torch.manual_seed(1)
export.export_hf(GPT(GPTConfig.from_preset("tiny")), sys.argv[1], overwrite=True)
"""


def test_a_killed_export_leaves_the_old_or_the_new_never_a_part_and_the_next_run_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_write_tokenizer", small_tokenizer)
    points = {"replace1": ("old", ["export"]), "replace2": (None, ["export", "old"]), "rmtree": ("new", ["old"])}
    outs = {where: export_hf(tiny_model(0), tmp_path / where / "hf") for where in points}
    old = (outs["rmtree"] / "model.safetensors").read_bytes()
    children = {where: subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(out), where],
                                        cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE,
                                        env=os.environ | {"OMP_NUM_THREADS": "1"})
                for where, out in outs.items()}
    for where, child in children.items():
        assert child.wait() == -signal.SIGKILL, child.stderr.read().decode()
        out, (expected, leftovers) = outs[where], points[where]
        if expected is None:
            assert not out.exists()
        else:
            assert sorted(p.name for p in out.iterdir()) == sorted(HF_FILES)  # complete, never a part
            assert ((out / "model.safetensors").read_bytes() == old) == (expected == "old")
        assert sorted(name.rsplit(".", 1)[1] for name in beside(out)) == leftovers, where
        export_hf(tiny_model(2), out, overwrite=True)  # the next run deletes what the killed one left
        assert beside(out) == [] and sorted(p.name for p in out.iterdir()) == sorted(HF_FILES)


@pytest.mark.parametrize("where", ["save_file", "_write_tokenizer"])
def test_a_full_disk_is_one_sentence_and_leaves_the_earlier_export(tmp_path, monkeypatch, capsys, where):
    from safetensors import SafetensorError

    out = tmp_path / "hf"
    assert cli.main(["export", "shakespeare-draft", "--to", "hf", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    errors = {"save_file": SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                           'message: "No space left on device" })'),
              "_write_tokenizer": OSError(errno.ENOSPC, "No space left on device")}

    def full(*args, **kwargs):
        raise errors[where]

    monkeypatch.setattr(export, where, full)
    assert cli.main(["export", "shakespeare-draft", "--to", "hf", str(out), "--overwrite"]) == 1
    assert capsys.readouterr().err == (f"minigpt export: error: could not write the export to out_dir={str(out)!r} "
                                       "(No space left on device); nothing was left behind\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and beside(out) == []
    with pytest.raises(OSError, match=r"^could not write the export to out_dir=.*\(No space left on device\)"):
        export_hf(tiny_model(0), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_gguf_full_disk_and_leftovers(tmp_path, monkeypatch, capsys):
    gguf = pytest.importorskip("gguf")
    out = tmp_path / "m.gguf"
    (tmp_path / ".m.gguf.abcd1234.partial").write_bytes(b"killed")  # what a killed run left
    (tmp_path / ".m.gguf.v2.abcd1234.partial").write_bytes(b"not ours")  # another file's: left alone
    export_gguf(tiny_model(0), out)
    assert beside(out) == [".m.gguf.v2.abcd1234.partial"]

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full)
    assert cli.main(["export", "shakespeare-draft", "--to", "gguf", str(out), "--overwrite"]) == 1
    assert capsys.readouterr().err == (f"minigpt export: error: could not write out_file={str(out)!r} "
                                       "(No space left on device); nothing was left behind\n")
    assert out.read_bytes()[:4] == b"GGUF" and beside(out) == [".m.gguf.v2.abcd1234.partial"]
