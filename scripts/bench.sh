#!/usr/bin/env bash
# Benchmarks: each writes a Markdown table (and JSON) under bench/results/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
. "$ROOT/scripts/env.sh"
cd "$ROOT"
export MIKA_DATA="${MIKA_DATA:-$ROOT/../shared/data}"
mkdir -p bench/results
python -m mika_fusion.benchmark --output bench/results/fusion
python -m mika_perception.benchmark --output bench/results/face
python -m mika_voice.benchmark --output bench/results/voice
python -m mika_evaluation.benchmark --output bench/results/evaluation
python -m mika_bringup.restart_benchmark --output bench/results/restart
echo "results: bench/results/"
