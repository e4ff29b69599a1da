#!/usr/bin/env bash
# Check a GPU box before a paper run, in under 10 minutes on one GPU:
#   1. the generator at the paper's sizes (bench/ldm_speed.py): autoencoder and U-ViT
#      training steps (fp32 and bf16 autocast) and sampling 1,024 images with the paper's
#      sampler, as throughput;
#   2. the time model (bench/paper_time_model.py --device cuda): every unit of the paper
#      profile timed on this GPU (a downstream step at full width among them), its peak GPU
#      memory, and the paper profile's predicted hours;
#   3. with two or more GPUs, paper-size U-ViT training on 1 and on 2 data-parallel processes
#      launched with HF accelerate (bench/ddp_speed.py), the pipeline's own trainer.
# Figures go to bench/results/ (ldm_speed-paper-cuda.csv, paper_time_model-cuda.csv,
# ddp_speed-paper-cuda-*.csv, gpu_check.txt); commit them with the name of the GPU they came from.
#
#   ./scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
mkdir -p bench/results
log=bench/results/gpu_check.txt
python - <<'EOF' || { echo "gpu_check: torch sees no CUDA device; run this on a GPU box." >&2; exit 1; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
{
    echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    echo "## generator at paper size"
    python bench/ldm_speed.py --profile paper --device cuda --steps 20 --batches 4
    echo "## time model of the paper profile on this GPU"
    python bench/paper_time_model.py --device cuda
    gpus=$(python -c 'import torch; print(torch.cuda.device_count())')
    echo "## scale-out ($gpus GPUs)"
    if [ "$gpus" -ge 2 ]; then
        python bench/ddp_speed.py --profile paper --steps 20
        python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 \
            --mixed_precision no --dynamo_backend no bench/ddp_speed.py --profile paper --steps 20
    else
        echo "one GPU: no multi-GPU launch to check"
    fi
} 2>&1 | tee "$log"
echo "written to $log"
