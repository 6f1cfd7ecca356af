"""bonjax.data: the tokenizers, the TFDS datasets and the batching pipeline.

  tok = data.Tokenizer.train(texts, vocab_size=512)   # or data.Tokenizer.load(checkpoint_folder)
  source = data.load('bonjax_arith', 'train', data_dir, config='easy')
  batches = data.sft_batches(source, tok, batch_size=32, max_len=128, seed=0)
  state = batches.get_state()        # save with the checkpoint; batches.set_state(state) resumes
"""

from bonjax.data.batching import FORMATS, TextFormat
from bonjax.data.builders import (BUILDERS, ArithConfig, MissingManualDataError,
                                  StrategiesConfig)
from bonjax.data.loading import get_builder, load
from bonjax.data.pipeline import BatchIterator, prompt_batches, sft_batches
from bonjax.data.task import Task
from bonjax.data.tokenizer import Tokenizer

__all__ = ["ArithConfig", "BUILDERS", "BatchIterator", "FORMATS", "MissingManualDataError",
           "StrategiesConfig", "Task", "TextFormat", "Tokenizer", "get_builder", "load",
           "prompt_batches", "sft_batches"]
