# Sourced, not run: puts the project's virtual environment, its ROS 2 (a sourced
# /opt/ros/<distro>, or the PyPI wheels inside the venv) and the built workspace on
# this shell's paths. scripts/setup.sh creates all three.
MIKA_ROOT="${MIKA_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
MIKA_VENV="${MIKA_VENV:-$MIKA_ROOT/.venv}"
export MIKA_ROOT MIKA_VENV

if [ ! -x "$MIKA_VENV/bin/python" ]; then
  echo "mika: no environment at $MIKA_VENV; run scripts/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi

# shellcheck disable=SC1091
. "$MIKA_VENV/bin/activate"

if [ -f "$MIKA_VENV/.mika-ros-from-wheels" ]; then
  # The venv is the ROS install prefix (see FIELD_NOTES: ROS 2 from PyPI wheels).
  _site="$("$MIKA_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  _libs="$MIKA_VENV/lib"
  for _d in "$_site"/ros_*.libs; do [ -d "$_d" ] && _libs="$_libs:$_d"; done
  export LD_LIBRARY_PATH="$_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export AMENT_PREFIX_PATH="$MIKA_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$MIKA_VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  unset _site _libs _d
fi

# Fast DDS (Jazzy and newer) sends large samples over TCP/shared memory with LARGE_DATA;
# its default UDP transport loses most 640x480 frames on a loaded machine (measured:
# 12-32% of camera frames reached face_node). Older Fast DDS ignores the variable. Seen
# with it: node processes started and stopped seconds apart sometimes never matched (the
# tests run with DEFAULT for that reason, see scripts/test.sh).
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}"

if [ -f "$MIKA_ROOT/install/local_setup.bash" ]; then
  # colcon's setup scripts read unset variables: tolerate them even under `set -u`
  case $- in *u*) _mika_nounset=1; set +u ;; *) _mika_nounset= ;; esac
  # shellcheck disable=SC1091
  . "$MIKA_ROOT/install/local_setup.bash"
  [ -n "$_mika_nounset" ] && set -u
  unset _mika_nounset
fi

# ament installs console scripts in lib/<package>, which is not on PATH; the README runs the
# graph runner as a command (`run_graph ...`, with `demo` and `sample_player` beside it)
_bin="$MIKA_ROOT/install/mika_bringup/lib/mika_bringup"
if [ -d "$_bin" ]; then
  case ":$PATH:" in *":$_bin:"*) ;; *) export PATH="$_bin:$PATH" ;; esac
fi
unset _bin
