#!/usr/bin/env bash
# Prints the path of a python that has numpy and safetensors (for the test that reads a cache
# from Python as docs/cache-format.md shows), installing them once into
# ${XDG_CACHE_HOME:-~/.cache}/headstart/pyenv when neither $HEADSTART_PYTHON nor python3 has them.
# Exits 1 (and says why on stderr) when that cannot be done, e.g. offline.
set -euo pipefail
for py in "${HEADSTART_PYTHON:-}" python3; do
  if [ -n "$py" ] && "$py" -c 'import numpy, safetensors.numpy' 2>/dev/null; then
    command -v "$py"
    exit 0
  fi
done
env=${XDG_CACHE_HOME:-$HOME/.cache}/headstart/pyenv
if ! "$env/bin/python" -c 'import numpy, safetensors.numpy' 2>/dev/null; then
  echo "python-env: installing numpy and safetensors into $env (once)" >&2
  python3 -m venv "$env" >&2
  "$env/bin/pip" install --quiet --disable-pip-version-check numpy safetensors >&2
fi
echo "$env/bin/python"
