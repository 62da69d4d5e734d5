"""ramie.metrics: streaming metrics held as graph objects (`ramie.metrics.Average`)."""

from ramie._src.training.metrics import Accuracy as Accuracy
from ramie._src.training.metrics import Average as Average
from ramie._src.training.metrics import Metric as Metric
from ramie._src.training.metrics import MetricState as MetricState
from ramie._src.training.metrics import MultiMetric as MultiMetric
from ramie._src.training.metrics import Statistics as Statistics
from ramie._src.training.metrics import Welford as Welford
