"""A Hugging Face ``tokenizers`` tokenizer (``tokenizer.json``) behind the ``Tokenizer`` interface.

Qwen and Llama 3 checkpoints ship their tokenizer as ``tokenizer.json`` (a byte-level BPE), with
the names of their special tokens in ``tokenizer_config.json``. ``tokenize`` never adds special
tokens (a ``tokenizer.json`` post-processor may add a BOS; ``Tokenizer.encode`` adds exactly
one), and decoding skips them.

Special ids: EOS and PAD are the config's ``eos_token`` and ``pad_token`` (PAD falls back to EOS,
as for sentencepiece models without a pad piece). A model without a BOS token (Qwen) starts each
row with its PAD token instead, else its EOS: Qwen's ``<|endoftext|>``, the token that separates
its pretraining documents, so a row starts as a document did.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import tokenizers

from bonjax.data.tokenizer import Tokenizer, check_texts

# Marks the bytes `HfTokenizer.serialized` writes: the tokenizer.json and the special tokens.
_FORMAT = "bonjax.hf_tokenizer.v1"


def _token_content(value: Any) -> str | None:
  """A special token of tokenizer_config.json: a string, an AddedToken dict, or null."""
  if isinstance(value, Mapping):
    return value.get("content")
  return value


class HfTokenizer(Tokenizer):
  """A ``tokenizers.Tokenizer`` with named EOS (required), BOS and PAD tokens."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, *, eos: str, bos: str | None = None,
               pad: str | None = None):
    self._tok = tokenizer
    self._special = {"eos": eos, "bos": bos, "pad": pad}
    self._ids = {}
    for role, token in self._special.items():
      if token is None:
        continue
      token_id = tokenizer.token_to_id(token)
      if token_id is None:
        raise ValueError(f"The {role} token {token!r} is not in the tokenizer's vocabulary.")
      self._ids[role] = token_id

  @classmethod
  def from_json_file(cls, path: str | os.PathLike, *, eos: str | None = None,
                     bos: str | None = None, pad: str | None = None) -> "HfTokenizer":
    """Loads a ``tokenizer.json``, or a file ``save`` wrote.

    The special tokens of a ``tokenizer.json`` are the ones given, else those of the
    ``tokenizer_config.json`` beside it.
    """
    path = pathlib.Path(path)
    data = path.read_bytes()
    if json.loads(data).get("format") == _FORMAT:
      return cls.from_serialized(data)
    special = {"eos": eos, "bos": bos, "pad": pad}
    config_file = path.parent / "tokenizer_config.json"
    if config_file.is_file():
      config = json.loads(config_file.read_text())
      for role in special:
        special[role] = special[role] or _token_content(config.get(f"{role}_token"))
    if special["eos"] is None:
      raise ValueError(f"No EOS token for {str(path)!r}: pass eos=..., or put the tokenizer_config"
                       ".json that names it (eos_token) beside the tokenizer.json.")
    try:
      tokenizer = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
      raise ValueError(f"{str(path)!r} is not a Hugging Face tokenizer.json: {e}") from e
    return cls(tokenizer, **special)

  @classmethod
  def from_serialized(cls, data: bytes) -> "HfTokenizer":
    """Rebuilds the tokenizer from its ``serialized`` bytes."""
    try:
      payload = json.loads(data)
      if payload.get("format") != _FORMAT:
        raise ValueError(f"expected format {_FORMAT!r}")
      tokenizer = tokenizers.Tokenizer.from_str(payload["tokenizer_json"])
    except Exception as e:
      raise ValueError(f"The given bytes are not a serialized bonjax HfTokenizer: {e}") from e
    return cls(tokenizer, **payload["special_tokens"])

  @property
  def serialized(self) -> bytes:
    return json.dumps({"format": _FORMAT, "special_tokens": self._special,
                       "tokenizer_json": self._tok.to_str()}).encode("utf-8")

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def eos_id(self) -> int:
    return self._ids["eos"]

  @property
  def pad_id(self) -> int:
    return self._ids.get("pad", self.eos_id)

  @property
  def bos_id(self) -> int:
    return self._ids.get("bos", self.pad_id)

  def piece_to_id(self, piece: str) -> int:
    token_id = self._tok.token_to_id(piece)
    if token_id is None:
      raise KeyError(f"{piece!r} is not in the tokenizer's vocabulary.")
    return token_id

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    check_texts(texts)
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def _decode_rows(self, rows: list[list[int]]) -> list[str]:
    return self._tok.decode_batch(rows, skip_special_tokens=True)
