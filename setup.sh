#!/usr/bin/env bash
# One command from a fresh machine to a working sera: system packages, a virtual environment in .venv
# with sera and its test tools, then the main job (analysing the bundled voice note on the shipped
# model). No Discord token needed. Works where the system's python3 is "externally managed" (PEP 668:
# Debian 12, Ubuntu 23.04 and later): nothing is installed into it.
usage="usage: ./setup.sh [--no-run] [--train] [--transcripts]
  (none)         set up, then analyse examples/voice-note.ogg on the shipped model
  --no-run       set up only
  --train        also the [train] extra (PyTorch, CPU build): for \`sera train\` and the training tests
  --transcripts  also the [transcripts] extra (faster-whisper, Whisper tiny.en and base): the transcript plugin
Afterwards: .venv/bin/sera ..., or \`source .venv/bin/activate\` once per shell and then sera ..."
set -euo pipefail
cd "$(dirname "$0")"

run=yes
extras="test,voice,postgres,chart"  # chart: a voice note's reply carries one
for option in "$@"; do
  case "$option" in
    --no-run) run=no ;;
    --train) extras="$extras,train" ;;
    --transcripts) extras="$extras,transcripts" ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "setup.sh: unknown option $option" >&2; echo "$usage" >&2; exit 2 ;;
  esac
done

need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)        # decoding (with libopus for voice notes)
command -v espeak-ng >/dev/null || need+=(espeak-ng)  # speech for the tests
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)  # Debian splits venv out of python3
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip "setuptools>=77"  # a distribution's pip and setuptools can be too old for today's packaging
# torch==2.13.0 (CPU) for the [train] extra comes from local disk where it lies there; never another version.
"${pip[@]}" -e ".[$extras]"

if [ "$run" = yes ]; then
  .venv/bin/sera analyze examples/voice-note.ogg
fi
