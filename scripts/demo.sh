#!/usr/bin/env bash
# The README's main job. Until the pipeline exists it prints the plan.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/lmcore plan
