"""The tokenizer interface, and its sentencepiece implementation.

``Tokenizer`` is the one interface the data pipeline, the samplers' callers and the verifiers
use: batch ``encode`` to fixed-shape id arrays, ``decode`` back to text, special ids. Two
implementations sit behind it, both maintained libraries:

- ``SentencePieceTokenizer`` (this module): tokenizers bonjax trains (``Tokenizer.train``) and
  the ``.model`` files Gemma checkpoints ship;
- ``HfTokenizer`` (``hf_tokenizer.py``): the Hugging Face ``tokenizers`` package, for the
  ``tokenizer.json`` files Qwen and Llama 3 checkpoints ship.

``Tokenizer.load`` opens either kind (a file, or a checkpoint folder); ``Tokenizer.train`` and
``Tokenizer.from_serialized`` build them.

Special ids of trained tokenizers follow Gemma's, so a model trained on a bonjax tokenizer and one
loaded from a Gemma checkpoint share conventions: ``pad = 0``, ``eos = 1``, ``bos = 2``,
``unk = 3``.

Tokenizers trained here round-trip text exactly (``decode(encode(t)) == t``): normalization is
the identity, no dummy prefix is added, whitespace is kept as written, and byte fallback turns any
character outside the vocabulary into its UTF-8 bytes instead of ``<unk>``. The one exception is the
character U+2581 (``▁``), which sentencepiece uses internally for a space and so decodes as ``' '``.
"""

from __future__ import annotations

import abc
import io
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import sentencepiece as spm

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3

Truncate = Literal["left", "right", "error"]


class Tokenizer(abc.ABC):
  """Batch ``encode`` / ``decode`` over an implementation's ids (see the module docstring).

  Implementations provide ``tokenize`` (ids of each text, no special tokens), ``_decode_rows``
  (texts of id lists, control ids producing no text), the special ids, ``piece_to_id`` and
  ``serialized`` (bytes that ``Tokenizer.from_serialized`` turns back into the tokenizer).
  """

  # ----------------------------------------------------------------------------------- creation

  @classmethod
  def train(
      cls,
      texts: Iterable[str],
      vocab_size: int,
      *,
      model_type: Literal["bpe", "unigram"] = "bpe",
      user_defined_symbols: Sequence[str] = (),
      path: str | os.PathLike | None = None,
  ) -> "SentencePieceTokenizer":
    """Trains a sentencepiece tokenizer in memory on ``texts`` (and saves it to ``path``).

    ``vocab_size`` counts the 4 special ids and the 256 byte-fallback pieces, so it must exceed
    260 plus the number of distinct characters in ``texts``. Digits are always split into single
    tokens, which keeps arithmetic digit-by-digit.
    """
    if model_type not in ("bpe", "unigram"):
      raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}.")
    writer = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(texts),
          model_writer=writer,
          vocab_size=vocab_size,
          model_type=model_type,
          user_defined_symbols=list(user_defined_symbols),
          pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
          byte_fallback=True,
          split_digits=True,
          character_coverage=1.0,
          # Exact round trip: no normalization, no dummy prefix, whitespace as written.
          normalization_rule_name="identity",
          add_dummy_prefix=False,
          remove_extra_whitespaces=False,
          # Runs of spaces (code indentation) become single pieces.
          allow_whitespace_only_pieces=True,
          max_sentence_length=1 << 16,
          num_threads=1,
          minloglevel=2,
      )
    except RuntimeError as e:
      raise ValueError(f"sentencepiece could not train a tokenizer with vocab_size={vocab_size}: "
                       f"{e}") from e
    tokenizer = SentencePieceTokenizer.from_model_proto(writer.getvalue())
    if path is not None:
      tokenizer.save(path)
    return tokenizer

  @classmethod
  def from_serialized(cls, data: bytes) -> "Tokenizer":
    """Rebuilds a tokenizer from its ``serialized`` bytes (or a sentencepiece ``.model``'s)."""
    if data.lstrip()[:1] == b"{":  # JSON: a Hugging Face tokenizer; sentencepiece is protobuf
      from bonjax.data import hf_tokenizer  # The tokenizers package loads only when needed.
      return hf_tokenizer.HfTokenizer.from_serialized(data)
    return SentencePieceTokenizer.from_model_proto(data)

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Tokenizer":
    """Loads a tokenizer file or a checkpoint folder's tokenizer.

    A file is a sentencepiece ``.model`` (e.g. Gemma's ``tokenizer.model``), a file ``save``
    wrote, or a Hugging Face ``tokenizer.json`` (its special tokens then come from the
    ``tokenizer_config.json`` beside it). A folder (a Hugging Face checkpoint) is read through
    its ``tokenizer.model`` if it has one, else its ``tokenizer.json``.
    """
    path = pathlib.Path(path)
    if path.is_dir():
      if (path / "tokenizer.model").is_file():
        path = path / "tokenizer.model"
      elif (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
      else:
        raise FileNotFoundError(
            f"No tokenizer.model or tokenizer.json in the folder {str(path)!r}.")
    if not path.is_file():
      raise FileNotFoundError(f"Tokenizer file not found: {str(path)!r} (expected a sentencepiece "
                              "'.model' file, a tokenizer.json or a checkpoint folder).")
    data = path.read_bytes()
    if data.lstrip()[:1] == b"{":
      from bonjax.data import hf_tokenizer
      return hf_tokenizer.HfTokenizer.from_json_file(path)
    try:
      return SentencePieceTokenizer.from_model_proto(data)
    except ValueError as e:
      raise ValueError(f"{str(path)!r} is not a sentencepiece model file (could not parse it as a "
                       "ModelProto).") from e

  def save(self, path: str | os.PathLike) -> None:
    """Writes ``serialized`` to a file that ``Tokenizer.load`` reads back."""
    with open(path, "wb") as f:
      f.write(self.serialized)

  # ------------------------------------------------------------- what implementations provide

  @property
  @abc.abstractmethod
  def serialized(self) -> bytes:
    """The tokenizer as bytes (what ``from_serialized`` and checkpoints take)."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids (special ones included)."""

  @property
  @abc.abstractmethod
  def pad_id(self) -> int:
    """The padding id."""

  @property
  @abc.abstractmethod
  def bos_id(self) -> int:
    """The id every encoded row starts with (``add_bos``)."""

  @property
  @abc.abstractmethod
  def eos_id(self) -> int:
    """The id that ends a sequence."""

  @abc.abstractmethod
  def piece_to_id(self, piece: str) -> int:
    """The id of a vocabulary piece."""

  @abc.abstractmethod
  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens, padding or truncation."""

  @abc.abstractmethod
  def _decode_rows(self, rows: list[list[int]]) -> list[str]:
    """The text of each id list; special and control ids produce no text."""

  # ---------------------------------------------------------------------------- encode / decode

  def encode(
      self,
      texts: Sequence[str],
      *,
      max_len: int,
      add_bos: bool = True,
      add_eos: bool = False,
      pad: bool = True,
      truncate: Truncate = "error",
  ) -> tuple[np.ndarray, np.ndarray]:
    """Encodes a batch of texts into right-padded ids.

    Args:
      texts: a sequence of strings (a batch; a single string is rejected).
      max_len: the most tokens per row, BOS and EOS included.
      add_bos: start each row with BOS.
      add_eos: end each row with EOS.
      pad: pad to ``max_len``; if False, pad only to the longest row of the batch.
      truncate: for rows longer than ``max_len``: 'left' drops the first text tokens, 'right' the
        last ones (BOS and EOS are kept either way); 'error' raises ValueError.

    Returns:
      ``(tokens, lengths)``: int32 ``[B, L]`` padded with ``pad_id``, and int32 ``[B]`` counts of
      real tokens.
    """
    if truncate not in ("left", "right", "error"):
      raise ValueError(f"truncate must be 'left', 'right' or 'error', got {truncate!r}.")
    prefix = [self.bos_id] if add_bos else []
    suffix = [self.eos_id] if add_eos else []
    room = max_len - len(prefix) - len(suffix)
    if room < 0:
      raise ValueError(f"max_len={max_len} leaves no room for BOS/EOS.")
    rows = []
    for i, ids in enumerate(self.tokenize(texts)):
      if len(ids) > room:
        if truncate == "error":
          raise ValueError(f"Text {i} has {len(ids)} tokens, more than the {room} that fit in "
                           f"max_len={max_len}; pass truncate='left' or 'right'.")
        ids = ids[len(ids) - room:] if truncate == "left" else ids[:room]
      rows.append(prefix + ids + suffix)
    return pad_rows(rows, max_len if pad else max(map(len, rows), default=0), self.pad_id)

  def decode(self, tokens: np.ndarray | Sequence) -> list:
    """Decodes ``[B, L]`` ids to ``B`` strings (``[B, N, L]`` to nested lists).

    Each row stops at its first EOS; padding, BOS and other control ids produce no text.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim not in (2, 3) or not np.issubdtype(tokens.dtype, np.integer):
      raise ValueError(f"decode takes integer ids of shape [B, L] or [B, N, L], got "
                       f"{tokens.dtype} {tokens.shape}.")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
      raise ValueError(f"Token ids must lie in [0, {self.vocab_size}), got values in "
                       f"[{tokens.min()}, {tokens.max()}].")
    if tokens.ndim == 3:
      return [self.decode(group) for group in tokens]
    rows = []
    for row in tokens.tolist():
      if self.eos_id in row:
        row = row[:row.index(self.eos_id)]
      rows.append([t for t in row if t != self.pad_id])
    return self._decode_rows(rows)


class SentencePieceTokenizer(Tokenizer):
  """A ``sentencepiece.SentencePieceProcessor`` behind the ``Tokenizer`` interface."""

  def __init__(self, processor: spm.SentencePieceProcessor):
    self._sp = processor

  @classmethod
  def from_model_proto(cls, model_proto: bytes) -> "SentencePieceTokenizer":
    """Builds a tokenizer from the bytes of a sentencepiece ``.model`` file."""
    processor = spm.SentencePieceProcessor()
    try:
      processor.load_from_serialized_proto(model_proto)
    except RuntimeError as e:
      raise ValueError("The given bytes are not a sentencepiece model (ModelProto) and cannot be "
                       "parsed.") from e
    return cls(processor)

  @property
  def serialized(self) -> bytes:
    return self._sp.serialized_model_proto()

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    """The padding id; models without a pad piece (e.g. LLaMA's) pad with EOS instead."""
    pad = self._sp.pad_id()
    return pad if pad >= 0 else self.eos_id

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  def piece_to_id(self, piece: str) -> int:
    return self._sp.piece_to_id(piece)

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    check_texts(texts)
    return self._sp.encode(list(texts))

  def _decode_rows(self, rows: list[list[int]]) -> list[str]:
    return self._sp.decode(rows)


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
  """Right-pads id lists to ``[len(rows), length]`` int32; returns ``(tokens, lengths)``."""
  tokens = np.full((len(rows), length), pad_id, np.int32)
  lengths = np.zeros(len(rows), np.int32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f"Row {i} has {len(row)} ids, more than length={length}.")
    tokens[i, :len(row)] = row
    lengths[i] = len(row)
  return tokens, lengths


def check_texts(texts: Sequence[str]) -> None:
  """Raises TypeError unless `texts` is a batch (a sequence, not one string) of strings."""
  if isinstance(texts, (str, bytes)):
    raise TypeError("Pass a batch (a list of strings), not a single string.")
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"Text {i} is a {type(text).__name__}, not a str.")
