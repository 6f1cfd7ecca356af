"""Tests for bonjax.data.hf_tokenizer, on tokenizer.json files the tests build themselves."""

import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from bonjax.data import Tokenizer
from bonjax.data.hf_tokenizer import HfTokenizer
from tests.data.test_tokenizer import CORPUS
from tests.data.test_tokenizer import ROUND_TRIP as SPM_ROUND_TRIP

# Byte-level BPE, unlike sentencepiece, also round-trips U+2581 ('▁').
ROUND_TRIP = SPM_ROUND_TRIP + ["sentencepiece's space ▁ is text here"]
SPECIALS = ["<|endoftext|>", "<|begin|>", "<|end|>"]


def _byte_level_bpe(with_bos_post_processor: bool) -> tokenizers.Tokenizer:
  """A byte-level BPE like Qwen's and Llama 3's: every byte is in the vocabulary."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  if with_bos_post_processor:  # As Llama 3's: BOS added unless add_special_tokens=False.
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin|> $A", special_tokens=[("<|begin|>", tok.token_to_id("<|begin|>"))])
  return tok


def _checkpoint_folder(folder, *, bos, eos, pad, post_processor=False):
  _byte_level_bpe(post_processor).save(str(folder / "tokenizer.json"))
  config = {"bos_token": bos, "eos_token": {"__type": "AddedToken", "content": eos},
            "pad_token": pad}
  (folder / "tokenizer_config.json").write_text(json.dumps(config))
  return folder


@pytest.fixture
def llama_like(tmp_path):
  return Tokenizer.load(_checkpoint_folder(tmp_path, bos="<|begin|>", eos="<|end|>", pad=None,
                                           post_processor=True))


def test_exact_round_trip_ascii_and_non_ascii(llama_like):
  tokens, lengths = llama_like.encode(ROUND_TRIP, max_len=256, add_eos=True)
  assert llama_like.decode(tokens) == ROUND_TRIP
  assert all(np.asarray(lengths) > 1)


def test_special_ids_come_from_tokenizer_config(llama_like):
  assert isinstance(llama_like, HfTokenizer) and isinstance(llama_like, Tokenizer)
  ids = {token: llama_like.piece_to_id(token) for token in SPECIALS}
  assert llama_like.bos_id == ids["<|begin|>"] and llama_like.eos_id == ids["<|end|>"]
  assert llama_like.pad_id == llama_like.eos_id  # no pad_token: pad with EOS
  assert llama_like.vocab_size == _byte_level_bpe(False).get_vocab_size() > max(ids.values())


def test_encode_adds_one_bos_although_the_post_processor_adds_one_too(llama_like):
  body = llama_like.tokenize(["Tom has 12"])[0]
  assert llama_like.bos_id not in body
  tokens, lengths = llama_like.encode(["Tom has 12"], max_len=32, add_eos=True)
  np.testing.assert_array_equal(tokens[0, :lengths[0]],
                                [llama_like.bos_id, *body, llama_like.eos_id])


def test_a_model_without_bos_starts_rows_with_its_pad_token(tmp_path):
  qwen_like = Tokenizer.load(_checkpoint_folder(tmp_path, bos=None, eos="<|end|>",
                                                pad="<|endoftext|>"))
  assert qwen_like.bos_id == qwen_like.pad_id == qwen_like.piece_to_id("<|endoftext|>")
  tokens, _ = qwen_like.encode(["a b"], max_len=8)
  assert tokens[0, 0] == qwen_like.bos_id


def test_decode_stops_at_eos_and_skips_special_tokens(llama_like):
  ab, cd = llama_like.tokenize(["ab"])[0], llama_like.tokenize(["cd"])[0]
  other_special = llama_like.piece_to_id("<|endoftext|>")
  row = [llama_like.bos_id, *ab, other_special, *cd, llama_like.eos_id, *ab]
  assert llama_like.decode(np.array([row])) == ["abcd"]


def test_save_load_and_from_serialized_keep_the_special_tokens(llama_like, tmp_path):
  path = tmp_path / "saved.tokenizer"
  llama_like.save(path)
  for loaded in (Tokenizer.load(path), Tokenizer.from_serialized(llama_like.serialized)):
    assert isinstance(loaded, HfTokenizer)
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (
        llama_like.bos_id, llama_like.eos_id, llama_like.pad_id)
    assert loaded.tokenize(ROUND_TRIP) == llama_like.tokenize(ROUND_TRIP)


def test_a_tokenizer_json_file_loads_with_explicit_special_tokens(tmp_path):
  _byte_level_bpe(False).save(str(tmp_path / "tokenizer.json"))
  with pytest.raises(ValueError, match="No EOS token"):
    Tokenizer.load(tmp_path / "tokenizer.json")
  tok = HfTokenizer.from_json_file(tmp_path / "tokenizer.json", eos="<|end|>")
  assert tok.eos_id == tok.piece_to_id("<|end|>")
  with pytest.raises(ValueError, match="'<nope>' is not in the tokenizer's vocabulary"):
    HfTokenizer.from_json_file(tmp_path / "tokenizer.json", eos="<nope>")


def test_a_folder_prefers_the_sentencepiece_model(tmp_path):
  _checkpoint_folder(tmp_path, bos="<|begin|>", eos="<|end|>", pad=None)
  Tokenizer.train(CORPUS, vocab_size=320, path=tmp_path / "tokenizer.model")
  assert not isinstance(Tokenizer.load(tmp_path), HfTokenizer)
  (tmp_path / "tokenizer.model").unlink()
  assert isinstance(Tokenizer.load(tmp_path), HfTokenizer)
  (tmp_path / "tokenizer.json").unlink()
  with pytest.raises(FileNotFoundError, match="No tokenizer.model or tokenizer.json"):
    Tokenizer.load(tmp_path)


def test_bad_inputs(llama_like, tmp_path):
  with pytest.raises(TypeError, match="batch"):
    llama_like.tokenize("one string")
  with pytest.raises(ValueError, match="not a serialized bonjax HfTokenizer"):
    Tokenizer.from_serialized(b'{"model": {}}')
  (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
  with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
    HfTokenizer.from_json_file(tmp_path / "tokenizer.json", eos="<|end|>")
