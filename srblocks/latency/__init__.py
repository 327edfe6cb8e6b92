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
* :mod:`.calibration`: building a table from specs and search templates;
* :mod:`.estimator`: what the search uses: the prediction, and a real measurement near a budget's boundary;
* :mod:`.cli`: ``srblocks latency calibrate`` and ``srblocks latency show``.

The public names below are imported on first use (``srblocks --help`` loads no torch).
"""

from .._lazy import lazy_attributes

_EXPORTS = {
    "DeviceKey": ".device", "Runner": ".runners", "TorchRunner": ".runners", "MeasureSettings": ".measure",
    "Timing": ".measure", "measure_interleaved": ".measure", "LatencyTable": ".table", "LatencyTableError": ".table",
    "default_table_path": ".table", "load_table": ".table", "Prediction": ".predict", "predict_latency": ".predict",
    "calibrate": ".calibration", "measure_missing": ".calibration", "BudgetLatency": ".estimator",
    "LatencyResult": ".estimator",
}
__all__ = list(_EXPORTS)
# imported on first use (``srblocks --help`` registers ``srblocks latency`` without importing torch)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
