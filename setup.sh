#!/usr/bin/env bash
# One command from a fresh machine to a working sera: system packages, the Python package, then the
# main job (analysing the bundled voice note on the shipped model). No Discord token needed.
#   ./setup.sh            set up and analyse examples/voice-note.ogg
#   ./setup.sh --no-run   set up only (CI uses this)
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)        # decoding (with libopus for voice notes)
command -v espeak-ng >/dev/null || need+=(espeak-ng)  # speech for the tests
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# torch==2.13.0 (CPU) for the [train] extra comes from local disk; never another version.
python3 -m pip install --quiet --disable-pip-version-check -e '.[train,test,voice,postgres]'

if [ "${1:-}" != "--no-run" ]; then
  sera analyze examples/voice-note.ogg
fi
