"""A per-device latency model: measure each distinct block once per device, predict a model as the sum of its blocks
plus a calibrated per-model overhead.

Modules, one job each:

* :mod:`.device`: the device key a table belongs to (backend, CPU model or GPU name, threads, software version);
* :mod:`.runners`: the *runner* extension point (how one forward pass is run on a backend: torch eager CPU and
  CUDA today; ONNX Runtime / OpenVINO runners plug in the same way);
* :mod:`.measure`: robust interleaved timing (warm-up, medians, repeated until the medians are stable);
* :mod:`.calls`: what a model runs: its block calls, each keyed by block name, constructor arguments, parameter
  layout, input shapes, dtype and memory format;
* :mod:`.table`: the cached per-device table (a small JSON file, written atomically) and its overhead fit;
* :mod:`.predict`: a model's predicted latency;
* :mod:`.calibrate`: building a table from specs and search templates;
* :mod:`.estimator`: what the search uses: the prediction, and a real measurement near a budget's boundary;
* :mod:`.cli`: ``srblocks latency calibrate`` and ``srblocks latency show``.
"""

from .calibrate import calibrate, measure_missing
from .device import DeviceKey
from .estimator import BudgetLatency, LatencyResult
from .measure import MeasureSettings, Timing, measure_interleaved
from .predict import Prediction, predict_latency
from .runners import Runner, TorchRunner
from .table import LatencyTable, LatencyTableError, default_table_path, load_table

__all__ = ["DeviceKey", "Runner", "TorchRunner", "MeasureSettings", "Timing", "measure_interleaved", "LatencyTable",
           "LatencyTableError", "default_table_path", "load_table", "Prediction", "predict_latency", "calibrate",
           "measure_missing", "BudgetLatency", "LatencyResult"]
