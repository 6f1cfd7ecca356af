"""Fixtures shared by the bonjax.data tests."""

import numpy as np
import pytest

from bonjax.data import arith
from bonjax.data.tokenizer import Tokenizer


def arith_examples(count: int, difficulty: str = "easy", seed: int = 0) -> list[dict]:
  """Arithmetic problems as a TFDS data source returns them (text features as bytes)."""
  return [{key: value.encode() for key, value in arith.generate_problem(
      np.random.default_rng([seed, i]), difficulty).items()} for i in range(count)]


@pytest.fixture(scope="session")
def arith_tokenizer() -> Tokenizer:
  texts = [f"{e['question']}\n{e['solution']}" for e in (
      arith.generate_problem(np.random.default_rng(i), "medium") for i in range(300))]
  return Tokenizer.train(texts, vocab_size=400)
