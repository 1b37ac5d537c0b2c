#!/usr/bin/env bash
# The CUDA checks of a session lent a GPU, in one call of under 5 minutes: tests/test_cuda.py, then
# bench/throughput.py's cases on CUDA (fp32, batched draws; the noise-at-every-step chains with philox streams
# against the first run's generator streams; then the DiffPure-sized case in bf16, compiled, and compiled with CUDA
# graphs of each network evaluation: torch.compile's reduce-overhead mode, not yet a robaudit option).
# With --certify: randomized smoothing's draws per second through the ViT behind a ddpm network, on CUDA.
#
# The device machine has torch, timm, typer, rich, pandas, pyyaml, scikit-learn and safetensors; robaudit's other
# needs travel as wheels. Once, here, in the repo's root (the .whl folder is ignored by git):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform any -d .whl torchattacks==3.5.1 diffusers requests-toolbelt
# then run, through the device tool, with carry [".whl"] and timeout_s 330:
#   bash bench/cuda_checks.sh
# Everything it prints is the closing note's CUDA table; $OUT/throughput-cuda.json holds the rows.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD/tests:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
out="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
timeout 100 python3 -m pytest -q -x tests/test_cuda.py -p no:cacheprovider 2>&1 | tail -15
timeout 80 python3 bench/throughput.py --device cuda --n 64 --certify --json "$out/throughput-cuda.json"
timeout 30 python3 bench/throughput.py --device cuda --n 64 --steps 3 --cases vit+ddpm-ancestral,unet-cifar \
  --rng philox --json "$out/throughput-cuda-philox.json"
timeout 20 python3 bench/throughput.py --device cuda --n 64 --steps 3 --cases unet-cifar --precision bf16
timeout 40 python3 bench/throughput.py --device cuda --n 64 --steps 3 --cases unet-cifar --compile
timeout 30 python3 bench/throughput.py --device cuda --n 64 --steps 3 --cases unet-cifar --compile-mode reduce-overhead
