#!/usr/bin/env bash
# GPU check: ONE command for a GPU machine. Prints hardware, the auto preset, attention
# backend agreement, flex attention vs SDPA math (values and gradients), and a bf16 sweep of a
# ~110M model (documents per row 1/2 x batch 16/32 x eager/compiled, then max-autotune while
# time is left): tokens/s, MFU, peak memory. No network, no installs; under 8 minutes on an
# H100/H200 (the sweep starts no run after 400 s; the whole is cut at 470 s, the JSON kept).
#
#   bash benchmarks/gpu_check.sh            # figures to stdout (+ $OUT/gpu_check.json when OUT is set)
#   bash benchmarks/gpu_check.sh --no-sweep # the short check: one bf16 + compile run and one fp16 run
#   bash benchmarks/gpu_check.sh --help     # options of benchmarks/gpu_check.py
#
# Needs: python3 with a CUDA torch, pydantic and pyyaml (lmcore.config). PYTHON=... picks another
# interpreter; a repo .venv is used when its torch sees a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

# Interpreter: $PYTHON; else the first of (.venv with a GPU torch, python3 with torch, .venv, python3).
has_torch() { "$1" -c "import torch" 2>/dev/null; }
has_gpu() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ] && has_gpu .venv/bin/python; then PY=.venv/bin/python
elif has_torch python3; then PY=python3
elif [ -x .venv/bin/python ] && has_torch .venv/bin/python; then PY=.venv/bin/python
else PY=python3
fi

missing=$("$PY" - <<'PYEOF'
import importlib.util
print(" ".join(m for m in ("torch", "pydantic", "yaml") if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "gpu_check: $PY lacks: $missing (pyyaml provides 'yaml'). Install them on this machine" >&2
  echo "           (pip install torch pydantic pyyaml) or set PYTHON=/path/to/python that has them." >&2
  exit 3
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"

json_args=()
if [ -n "${OUT:-}" ]; then json_args=(--json "$OUT/gpu_check.json"); fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
sweep_args=(--sweep)
args=()
for a in "$@"; do
  if [ "$a" = "--no-sweep" ]; then sweep_args=(); else args+=("$a"); fi
done
exec timeout 470 "$PY" benchmarks/gpu_check.py ${json_args[@]+"${json_args[@]}"} ${sweep_args[@]+"${sweep_args[@]}"} \
  ${args[@]+"${args[@]}"}
