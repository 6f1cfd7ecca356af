"""Tests for bonjax.data.tokenizer."""

import io

import chex
import numpy as np
import pytest
import sentencepiece as spm

from bonjax.data import tokenizer as tokenizer_lib
from bonjax.data.tokenizer import Tokenizer

CORPUS = [
    "Tom has 12 apples. He buys 7 more: 12 + 7 = 19.\nThe answer is 19.",
    "def add(x, y):\n    return x + y\n",
    "Ann gives 5 pencils to Bob: 19 - 5 = 14.",
] * 20

ROUND_TRIP = [
    "Tom has 12 apples. He buys 7 more: 12 + 7 = 19.",
    "  leading spaces,\ttabs,\r\nCRLF and trailing  ",
    "def f(x):\n    return x ** 2\n",
    "Emoji 😀🤖🦾, CJK 日本語 中文 한국어, accents é à ñ ü ç Ω ≈ √ ∫",
    "",
    "a\x00b",
]


@pytest.fixture(scope="module")
def tok():
  return Tokenizer.train(CORPUS, vocab_size=320)


def test_special_ids_match_gemma(tok):
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  assert tok.piece_to_id("<unk>") == 3
  assert tok.vocab_size == 320


@pytest.mark.parametrize("model_type, vocab_size", [("bpe", 320), ("unigram", 305)])
def test_exact_round_trip_ascii_and_non_ascii(model_type, vocab_size):
  tok = Tokenizer.train(CORPUS, vocab_size=vocab_size, model_type=model_type)
  tokens, lengths = tok.encode(ROUND_TRIP, max_len=128, add_eos=True)
  assert tok.decode(tokens) == ROUND_TRIP
  assert all(np.asarray(lengths) > 1)


def test_digits_are_split(tok):
  ids = tok.tokenize(["12345"])[0]
  assert len(ids) == 5


def test_user_defined_symbols_are_single_tokens():
  tok = Tokenizer.train(CORPUS, vocab_size=320, user_defined_symbols=["<step>"])
  assert tok.tokenize(["<step>"]) == [[tok.piece_to_id("<step>")]]


def test_encode_pads_and_adds_specials(tok):
  tokens, lengths = tok.encode(["Tom has 12", ""], max_len=16, add_bos=True, add_eos=True)
  chex.assert_shape(tokens, (2, 16))
  assert tokens.dtype == np.int32 and lengths.dtype == np.int32
  body = tok.tokenize(["Tom has 12"])[0]
  np.testing.assert_array_equal(lengths, [len(body) + 2, 2])
  np.testing.assert_array_equal(tokens[0, :lengths[0]], [tok.bos_id, *body, tok.eos_id])
  assert (tokens[0, lengths[0]:] == tok.pad_id).all()
  np.testing.assert_array_equal(tokens[1, :3], [tok.bos_id, tok.eos_id, tok.pad_id])


def test_encode_without_pad_uses_longest_row(tok):
  tokens, lengths = tok.encode(["a", "a a a"], max_len=64, pad=False)
  assert tokens.shape == (2, int(lengths.max()))


def test_truncation(tok):
  text = "1234567890"
  ids = tok.tokenize([text])[0]
  left, _ = tok.encode([text], max_len=5, add_eos=True, truncate="left")
  right, _ = tok.encode([text], max_len=5, add_eos=True, truncate="right")
  np.testing.assert_array_equal(left[0], [tok.bos_id, *ids[-3:], tok.eos_id])
  np.testing.assert_array_equal(right[0], [tok.bos_id, *ids[:3], tok.eos_id])
  with pytest.raises(ValueError, match="truncate"):
    tok.encode([text], max_len=5)


def test_decode_stops_at_eos_skips_pad_and_handles_3d(tok):
  ab = tok.tokenize(["ab"])[0]
  cd = tok.tokenize(["cd"])[0]
  row1 = [tok.bos_id, *ab, tok.eos_id, *cd, tok.pad_id]
  row2 = [*cd, tok.pad_id, tok.pad_id, *ab, tok.pad_id]
  n = max(len(row1), len(row2))
  rows = np.array([r + [tok.pad_id] * (n - len(r)) for r in (row1, row2)])
  assert tok.decode(rows) == ["ab", "cdab"]
  assert tok.decode(np.stack([rows, rows[::-1]])) == [["ab", "cdab"], ["cdab", "ab"]]


def test_save_load_and_serialized(tok, tmp_path):
  path = tmp_path / "tok.model"
  tok.save(path)
  loaded = Tokenizer.load(path)
  assert loaded.serialized == tok.serialized
  assert Tokenizer.from_serialized(tok.serialized).tokenize(ROUND_TRIP) == tok.tokenize(ROUND_TRIP)


def test_train_can_save_directly(tmp_path):
  path = tmp_path / "direct.model"
  tok = Tokenizer.train(CORPUS, vocab_size=320, path=path)
  assert Tokenizer.load(path).serialized == tok.serialized


def test_pad_falls_back_to_eos_without_pad_piece():
  writer = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=writer,
                                 vocab_size=50, pad_id=-1, minloglevel=2)
  tok = Tokenizer.from_serialized(writer.getvalue())
  assert tok.pad_id == tok.eos_id


def test_missing_tokenizer_file(tmp_path):
  path = tmp_path / "nope.model"
  with pytest.raises(FileNotFoundError, match="nope.model"):
    Tokenizer.load(path)


def test_corrupt_tokenizer_file(tmp_path):
  path = tmp_path / "bad.model"
  path.write_bytes(b"this is not a protobuf \xff\xfe")
  with pytest.raises(ValueError, match="not a sentencepiece model"):
    Tokenizer.load(path)


def test_bad_arguments(tok):
  with pytest.raises(TypeError, match="batch"):
    tok.encode("a single string", max_len=8)
  with pytest.raises(TypeError, match="not a str"):
    tok.encode(["ok", 3], max_len=8)
  with pytest.raises(ValueError, match="truncate must be"):
    tok.encode(["ok"], max_len=8, truncate="middle")
  with pytest.raises(ValueError, match=r"\[B, L\]"):
    tok.decode(np.zeros(4, np.int32))
  with pytest.raises(ValueError, match="must lie in"):
    tok.decode(np.array([[tok.vocab_size]]))
  with pytest.raises(ValueError, match="vocab_size"):
    Tokenizer.train(CORPUS, vocab_size=100)
  with pytest.raises(ValueError, match="model_type"):
    Tokenizer.train(CORPUS, vocab_size=320, model_type="word")


def test_pad_rows_rejects_long_rows():
  with pytest.raises(ValueError, match="more than length"):
    tokenizer_lib.pad_rows([[1, 2, 3]], 2, 0)
