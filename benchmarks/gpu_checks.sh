#!/usr/bin/env bash
# The GPU measurements of issues 12 (§3, mixed precision) and 13 (§1, the latency model on CUDA), in one run, as
# made on a lent GPU machine (one NVIDIA H200) whose python3 has torch but not this project's pure-Python
# dependencies (pydantic, optuna: installed from wheels in .whl/ when that folder exists).
#   DATA=<folder of HR training images> SRBLOCKS_SHARED=<folder with data/Set5, data/Set14> OUT=<results> \
#       bash benchmarks/gpu_checks.sh
# Results: $OUT/amp_training.jsonl (+ .log), $OUT/latency_model_gpu.jsonl (+ .log), $OUT/latency_table_cuda.json.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
# run from the checkout without installing it: the shipped specs and protocols as the package data an install
# would make (pyproject's package-dir)
for pair in arch_specs:srblocks/arch_specs search/protocols:srblocks/protocols/files; do
  src=${pair%%:*}; dst=${pair#*:}
  if [ ! -d "$dst" ]; then mkdir -p "$dst" && cp "$src"/*.yaml "$dst"/ && touch "$dst/__init__.py"; fi
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia_smi.txt" 2>&1
python3 -c "import torch, srblocks; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'specs', len(srblocks.shipped_spec_names()))" || exit 1
timeout "${AMP_SECONDS:-200}" python3 benchmarks/amp_training.py run --specs safmn fmen_s --amps none bf16 fp16 \
  --data "${DATA:?DATA: a folder of HR training images}" --device cuda --results "$OUT/amp_training.jsonl" \
  > "$OUT/amp_training.log" 2>&1
echo "amp_training: rc $?"; grep -v Warning "$OUT/amp_training.log" | grep -v "^  dataset" | tail -30
timeout "${LATENCY_SECONDS:-260}" python3 benchmarks/latency_model.py run --device cuda --label gpu \
  --candidates "${CANDIDATES:-30}" --calibration 4 --cover 40 --throughput 20 \
  --table "$OUT/latency_table_cuda.json" --out "$OUT/latency_model_gpu.jsonl" > "$OUT/latency_model_gpu.log" 2>&1
echo "latency_model: rc $?"; tail -25 "$OUT/latency_model_gpu.log"
python3 benchmarks/latency_model.py report --out "$OUT/latency_model_gpu.jsonl" 2>&1 | tail -15
