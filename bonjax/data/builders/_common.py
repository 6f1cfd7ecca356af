"""What the bonjax TFDS builders share: text features and manual-download checks."""

from __future__ import annotations

import inspect
import os
import textwrap

import tensorflow_datasets as tfds
from etils import epath


class MissingManualDataError(FileNotFoundError):
  """The manual directory of a dataset lacks the official files it needs."""


def text_features(*names: str) -> tfds.features.FeaturesDict:
  """A FeaturesDict of UTF-8 text features with the given names."""
  return tfds.features.FeaturesDict({name: tfds.features.Text() for name in names})


class BonjaxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the bonjax builders: a GeneratorBasedBuilder that runs without TensorFlow."""

  # tfds 4.9.10 finds a builder's source file through a type check that imports the
  # `importlib_resources` backport, which it only installs for Python < 3.9; the file is known.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))


class ManualDataBuilder(BonjaxBuilder, skip_registration=True):
  """A builder reading official files from a user-provided manual directory.

  Subclasses list the files they read in ``MANUAL_FILES`` (glob patterns relative to the manual
  directory, each of which must match at least one file) and say where to get them in
  ``MANUAL_DOWNLOAD_INSTRUCTIONS``.
  """

  MANUAL_FILES: tuple[str, ...] = ()

  @classmethod
  def check_manual_dir(cls, manual_dir: str | os.PathLike | None) -> epath.Path:
    """Returns ``manual_dir`` as a path if it holds every file of ``MANUAL_FILES``.

    Raises:
      MissingManualDataError: naming the dataset, the missing paths and what to download.
    """
    root = epath.Path(manual_dir) if manual_dir is not None else None
    if root is not None and root.is_dir():
      missing = [p for p in cls.MANUAL_FILES if not any(root.glob(p))]
    else:
      missing = list(cls.MANUAL_FILES)
    if missing:
      where = root if root is not None else "<manual_dir>"
      lines = [f"Dataset {cls.name!r} is read from files you download yourself, and the manual "
               f"directory {where} is missing or lacks them. Missing:"]
      lines += [f"  {where}/{pattern}" for pattern in missing]
      lines += ["", textwrap.dedent(cls.MANUAL_DOWNLOAD_INSTRUCTIONS).strip()]
      raise MissingManualDataError("\n".join(lines))
    return root

  def _manual_root(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
    try:
      root = dl_manager.manual_dir
    except AssertionError as e:  # tfds' error for a missing or empty manual directory.
      try:
        self.check_manual_dir(None)
      except MissingManualDataError as missing:
        raise MissingManualDataError(
            f"{missing}\n\nWithout DownloadConfig(manual_dir=...), <manual_dir> is "
            f"{dl_manager.download_dir / 'manual'}.") from e
    return self.check_manual_dir(root)
