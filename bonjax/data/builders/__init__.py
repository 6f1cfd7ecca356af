"""The bonjax TFDS builders (registered with tfds on import), by dataset name."""

from bonjax.data.builders._common import MissingManualDataError
from bonjax.data.builders.bonjax_arith import ArithConfig, BonjaxArith
from bonjax.data.builders.bonjax_strategies import BonjaxStrategies, StrategiesConfig
from bonjax.data.builders.gsm8k import Gsm8k
from bonjax.data.builders.hendrycks_math import HendrycksMath, last_boxed
from bonjax.data.builders.humaneval import Humaneval

BUILDERS = {cls.name: cls for cls in (BonjaxArith, BonjaxStrategies, Humaneval, HendrycksMath,
                                       Gsm8k)}
