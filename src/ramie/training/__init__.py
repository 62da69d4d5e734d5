"""ramie.training: optimizers, metrics and parameter averaging for training loops."""

from ramie import metrics as metrics
from ramie._src.training.ema import EMA as EMA
from ramie._src.training.metrics import Accuracy as Accuracy
from ramie._src.training.metrics import Average as Average
from ramie._src.training.metrics import Metric as Metric
from ramie._src.training.metrics import MetricState as MetricState
from ramie._src.training.metrics import MultiMetric as MultiMetric
from ramie._src.training.metrics import Statistics as Statistics
from ramie._src.training.metrics import Welford as Welford
from ramie._src.training.optimizer import ModelAndOptimizer as ModelAndOptimizer
from ramie._src.training.optimizer import OptArray as OptArray
from ramie._src.training.optimizer import Optimizer as Optimizer
from ramie._src.training.optimizer import OptState as OptState
from ramie._src.training.optimizer import OptVariable as OptVariable
