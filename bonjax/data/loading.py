"""``load``: prepare a bonjax TFDS dataset if needed and open it for random access, without TF."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from bonjax.data.builders import BUILDERS
from bonjax.data.builders._common import ManualDataBuilder

FILE_FORMAT = "array_record"


def get_builder(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    config: str | tfds.core.BuilderConfig | None = None,
) -> tfds.core.DatasetBuilder:
  """The builder of dataset ``name`` (a key of ``BUILDERS``), writing ArrayRecord files."""
  if name not in BUILDERS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {sorted(BUILDERS)}.")
  cls = BUILDERS[name]
  if config is not None and not cls.BUILDER_CONFIGS:
    raise ValueError(f"Dataset {name!r} has no configs, got config={config!r}.")
  if isinstance(config, str) and config not in cls.builder_configs:
    raise ValueError(f"Unknown config {config!r} of {name!r}; valid: {sorted(cls.builder_configs)} "
                     "or a config object.")
  kwargs = {"config": config} if config is not None else {}
  return cls(data_dir=None if data_dir is None else os.fspath(data_dir),
             file_format=FILE_FORMAT, **kwargs)


def load(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    manual_dir: str | os.PathLike | None = None,
    config: str | tfds.core.BuilderConfig | None = None,
) -> Sequence[dict[str, Any]]:
  """Returns a random-access source of ``split`` of dataset ``name``, preparing it first if needed.

  Args:
    name: one of ``bonjax_arith``, ``humaneval``, ``hendrycks_math``, ``gsm8k``.
    split: a tfds split, e.g. ``'train'``, ``'test'``, ``'train[:1000]'``.
    data_dir: where prepared datasets live (created if missing); None: the tfds default.
    manual_dir: the directory with the official files, for ``hendrycks_math`` and ``gsm8k``
      (default ``<data_dir>/downloads/manual``); only read when the dataset is not prepared yet.
    config: a config name (``bonjax_arith``: ``easy``, ``medium``, ``hard``) or config object.

  Returns:
    A sequence (``len``, ``source[i]``) of feature dicts; text features are UTF-8 ``bytes``.
  """
  dataset = get_builder(name, data_dir, config=config)
  if not dataset.is_prepared():
    if isinstance(dataset, ManualDataBuilder):
      default = os.path.join(dataset.data_dir_root, "downloads", "manual")
      type(dataset).check_manual_dir(manual_dir if manual_dir is not None else default)
    dataset.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return dataset.as_data_source(split)
