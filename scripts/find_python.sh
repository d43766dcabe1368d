#!/usr/bin/env bash
# Print the path of a working Python X.Y interpreter: python X.Y on PATH, else pyenv's, else fail.
# Usage: scripts/find_python.sh 3.12
set -euo pipefail
version="$1"
candidates=("$(command -v "python$version" || true)")
if command -v pyenv >/dev/null 2>&1; then
    root="$(pyenv root)"
    candidates+=("$root"/versions/"$version".*/bin/"python$version")
fi
candidates+=("/usr/bin/python$version" "/usr/local/bin/python$version")
for python in "${candidates[@]}"; do
    if [[ -n "$python" && -x "$python" ]] && "$python" -c '' 2>/dev/null; then
        echo "$python"
        exit 0
    fi
done
echo "find_python: no working Python $version (install it, or set OTHER_PYTHONS)" >&2
exit 1
