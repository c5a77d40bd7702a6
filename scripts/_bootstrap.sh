# Sourced by scripts/serve, scripts/test, scripts/terminal and scripts/lock: makes .venv and installs
# exactly what requirements.lock pins (every file hash-checked), then the project itself (editable).
# Needs only Python 3.11+, pip and git. Re-installs when pyproject.toml, requirements.lock or this
# file changes (a hash stamp in .venv says so); several scripts starting at once install only once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "yibao needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.yibao-installed"
want="$("$PYTHON" -c '
import hashlib, sys
digest = hashlib.sha256()
for path in sys.argv[1:]:
    digest.update(open(path, "rb").read())
print(digest.hexdigest())' pyproject.toml requirements.lock scripts/_bootstrap.sh)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  exec 9>.venv/.yibao-install.lock
  if command -v flock >/dev/null 2>&1; then flock 9; fi  # another script may be installing right now
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing requirements.lock into .venv ..." >&2
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements.lock
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
    if .venv/bin/python scripts/check_lock.py > .venv/.yibao-lockcheck 2>&1; then
      echo "$want" > "$stamp"
    elif [ -z "${YIBAO_LOCKING:-}" ]; then  # (scripts/lock is about to fix it)
      cat .venv/.yibao-lockcheck >&2
      echo "warning: .venv is not what pyproject.toml asks for until you run scripts/lock" >&2
    fi
  fi
  exec 9>&-
fi
