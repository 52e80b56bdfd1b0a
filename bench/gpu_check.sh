#!/usr/bin/env bash
# The GPU checks, in one script (< 8 minutes on one H100/H200), printing one table each:
#   1. training throughput, ResNet-50-IBN 256x128 batch 256: fp32 vs AMP + channels_last,
#      CALR stage-2 step against FastReID's Baseline step;
#   2. the label step at MSMT17 size with faiss on the GPU (when faiss has GPU support),
#      exact against the HNSW fast mode (HNSW runs on the CPU; exact on the GPU);
#   3. label-step feature extraction on the GPU: FastReID's loop vs CALR.EXTRACT.ENGINE torch
#      (eval copy, channels_last, AMP).
# Usage (repo root, after `make install`; `pip install -e .[gpu]` for GPU faiss):
#   bash bench/gpu_check.sh 2>&1 | tee gpu_check.log
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, faiss; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'faiss GPUs', faiss.get_num_gpus())"
echo "== throughput: fp32 =="
"$PY" bench/train_throughput.py --device cuda --backbone r50-ibn --size 256 128 --batch 256 --iters 20 --warmup 5 --rounds 2
echo "== throughput: AMP + channels_last =="
"$PY" bench/train_throughput.py --device cuda --backbone r50-ibn --size 256 128 --batch 256 --iters 20 --warmup 5 --rounds 2 --amp --channels-last
echo "== label step, MSMT17 size, GPU faiss if available =="
"$PY" bench/label_step.py --n 32621 --d 2048 --cams 15 --ids 1041 --fast hnsw --repeat 2
echo "== feature extraction on the GPU (CUHK01 train, MobileNetV2 recipe) =="
"$PY" bench/extract_speed.py --device cuda --repeat 3
