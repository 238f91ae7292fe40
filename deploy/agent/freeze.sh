#!/usr/bin/env bash
# Builds the self-contained agent for the OS it runs on (Linux, macOS; Windows under Git Bash): a
# PyInstaller "onedir" folder holding farmwatch-agent, its Python runtime and the [agent] extra,
# so laptops need no Python. No collector-side library (pandas, scikit-learn, FastAPI) is in it:
# the build venv has only the agent extra. The packagers take the folder from here:
# build-deb.sh (Linux), macos/build-pkg.sh, windows/ (see deploy/README.md).
#
#   deploy/agent/freeze.sh            -> build/agent/dist/farmwatch-agent/farmwatch-agent[.exe]
#                                        (Windows also: dist/farmwatch-agent-helper/farmwatch-agent-helper.exe,
#                                        windowless, for the per-user input helper)
#
# Environment: PYTHON (default python3; its libpython is what the bundle carries, so build on the
# oldest glibc you support), FARMWATCH_BUILD_DIR (default build/agent). The build venv is kept
# there and reused while pyproject.toml is unchanged; delete the folder for a clean build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${FARMWATCH_BUILD_DIR:-$repo/build/agent}
python=${PYTHON:-python3}
venv=$build/venv
stamp=$venv/.pyproject-$("$python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])' "$repo/pyproject.toml")

bin=$venv/bin
[ -d "$venv/Scripts" ] && bin=$venv/Scripts  # a Windows venv
if [ ! -e "$stamp" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  [ -d "$venv/Scripts" ] && bin=$venv/Scripts
  "$bin/pip" install -q --disable-pip-version-check 'pyinstaller>=6.10,<7'
  touch "$stamp"
fi
# The project itself is reinstalled every time: the bundle must hold the code as it is now.
"$bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$repo"
"$bin/pip" install -q --disable-pip-version-check "${repo}[agent]"

# Probes are imported by name (farmwatch/agent/probes/registry.py), so PyInstaller cannot see
# them: collect every agent module. Catalogues and the JSON Schema are package data; the runner
# reads the version from the distribution's metadata.
freeze() {  # NAME [PYINSTALLER FLAGS...]
  local name=$1; shift
  "$bin/pyinstaller" --noconfirm --clean --log-level WARN --onedir --name "$name" "$@" \
    --distpath "$build/dist" --workpath "$build/work" --specpath "$build" \
    --collect-submodules farmwatch.agent --collect-data farmwatch --copy-metadata farmwatch \
    "$repo/deploy/agent/pyinstaller_entry.py"
}
freeze farmwatch-agent
echo "$build/dist/farmwatch-agent/farmwatch-agent"
if [ -d "$venv/Scripts" ]; then
  # Windows: the same program without a console window, for the per-user input helper a Scheduled
  # Task starts at sign-in (deploy/agent/windows/farmwatch-agent-input-helper.xml); a console
  # program would open a window on every user's desktop.
  freeze farmwatch-agent-helper --noconsole
  echo "$build/dist/farmwatch-agent-helper/farmwatch-agent-helper.exe"
fi
