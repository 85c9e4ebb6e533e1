#!/usr/bin/env bash
# README command 1: installs what is missing, builds the workspace, and runs the whole
# pipeline (face, voice, fusion) on a sample camera and microphone, printing the fused
# emotion stream; stops by itself (about a minute, most of it loading models).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
. "$ROOT/scripts/env.sh"
exec python -m mika_bringup.demo "$@"
