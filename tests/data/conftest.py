"""Fixtures shared by the bonjax.data tests."""

import numpy as np
import pytest

from bonjax.data import arith
from bonjax.data.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def arith_tokenizer() -> Tokenizer:
  texts = [f"{e['question']}\n{e['solution']}" for e in (
      arith.generate_problem(np.random.default_rng(i), "medium") for i in range(300))]
  return Tokenizer.train(texts, vocab_size=400)
