#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks-history.md#gradcam-speed in one run, on a machine with the GPU and its own PyTorch:
#   bash bench/gpu_check.sh OUTDIR
# Needs pytorch-grad-cam 1.5.7 (and ttach) importable for the reference rows; wheels in ./.whl are installed into a
# private folder first when present. SMALL=1 runs a tiny version of everything (to try the script on a CPU).
set -uo pipefail
out=${1:?give the folder the figures go to}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mieruka-site .whl/*.whl
  export PYTHONPATH=/tmp/mieruka-site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
{
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  $py -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
  $py -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1 | tail -1
} | tee "$out/env.txt"
if [ "${SMALL:-0}" = 1 ]; then
  cam=(--batch 4 --repeats 2); pred=(--images 64 --repeats 1); big=(--images 32 --repeats 1 --source 1024x768)
else
  cam=(); pred=(--images 8192 --repeats 3); big=(--images 4096 --repeats 3 --source 1024x768)
fi
for i in 1 2; do
  ref=(); [ "$i" = 2 ] && ref=(--no-reference)
  $py bench/cam_speed.py --device "$device" "${cam[@]}" "${ref[@]}" 2>&1 | tee -a "$out/cam_speed.txt"
done
$py bench/gpu_predict.py --device "$device" "${pred[@]}" 2>&1 | tee -a "$out/gpu_predict.txt"
[ "${BIG:-1}" = 1 ] && $py bench/gpu_predict.py --device "$device" "${big[@]}" 2>&1 | tee -a "$out/gpu_predict.txt"
# the explanation on the GPU against the general (autograd) path, and against the CPU
$py - "$device" <<'EOF' 2>&1 | tee "$out/agreement.txt"
import sys, torch
from mieruka.explain.engine import explain
from mieruka.models import build_model
device = torch.device(sys.argv[1])
torch.manual_seed(0)
model = build_model("tf_efficientnet_lite0", 6).eval()
x = torch.randn(8, 3, 224, 224)
cpu = explain(model, x).maps
model = model.to(device)
fast = explain(model, x.to(device))
general = explain(model, x.to(device), allow_fast_path=False)
assert fast.fast_path and not general.fast_path
scale = float(cpu.abs().max())
print("fast vs general on", device, float((fast.maps - general.maps).abs().max()) / scale)
print("fast on", device, "vs cpu", float((fast.maps.cpu() - cpu).abs().max()) / scale)
EOF
