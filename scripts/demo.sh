#!/usr/bin/env bash
# The README's main job (`make demo`): the whole pipeline on the shipped Shakespeare slice,
# a small model on CPU in a few minutes, then a sample generation and where to look.
# Everything it writes stays under ./demo-run/ (store, models, MLflow, Prefect home).
# A second `make demo` finds every stage cached and finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
LMCORE="$ROOT/.venv/bin/lmcore"
mkdir -p demo-run
cd demo-run

"$LMCORE" run "$ROOT/examples/demo.yaml" "$@"

echo
echo "Next:"
echo "  $LMCORE models list --models-dir $ROOT/demo-run/models"
echo "  $LMCORE generate latest --models-dir $ROOT/demo-run/models --prompt 'JULIET:'"
echo "  printf 'Who wrote Romeo and Juliet?\n/exit\n' | $LMCORE chat latest --models-dir $ROOT/demo-run/models"
echo "  $LMCORE run $ROOT/examples/demo.yaml --set training.learning_rate=1e-3   # reruns train, evaluate, register only"
