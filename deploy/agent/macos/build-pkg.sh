#!/usr/bin/env bash
# Builds farmwatch-agent-VERSION.pkg on a Mac (it cannot run on Linux: pkgbuild and codesign are
# Apple's). The package installs
#   /opt/farmwatch/bin/farmwatch-agent (+ _internal/)   the self-contained agent from ../freeze.sh
#   /Library/LaunchDaemons/com.farmwatch.agent.plist    ../com.farmwatch.agent.plist
#   /Library/LaunchAgents/com.farmwatch.agent.input-helper.plist   the per-user input helper
# and its postinstall loads the daemon once /etc/farmwatch/agent.toml and enroll-secret exist
# (push them first with your MDM, or load later: see deploy/README.md).
#
#   DEVELOPER_ID_APP="Developer ID Application: Example (TEAMID)" \
#   DEVELOPER_ID_INSTALLER="Developer ID Installer: Example (TEAMID)" deploy/agent/macos/build-pkg.sh
#
# Without the two variables the package is unsigned: fine for a test Mac, refused by Gatekeeper
# and useless with the PPPC profile, whose code requirement names the signing team.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bundle=$("$here/../freeze.sh" | tail -n 1)
bundle=$(dirname "$bundle")
version=$("${PYTHON:-python3}" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -d "$stage/root/opt/farmwatch" "$stage/root/Library/LaunchDaemons" "$stage/root/Library/LaunchAgents"
cp -R "$bundle" "$stage/root/opt/farmwatch/bin"
install -m 0644 "$here/../com.farmwatch.agent.plist" "$stage/root/Library/LaunchDaemons/com.farmwatch.agent.plist"
install -m 0644 "$here/com.farmwatch.agent.input-helper.plist" \
  "$stage/root/Library/LaunchAgents/com.farmwatch.agent.input-helper.plist"
if [ -n "${DEVELOPER_ID_APP:-}" ]; then
  # The identifier is the one the PPPC profile's code requirement names.
  codesign --force --options runtime --timestamp --identifier farmwatch-agent --sign "$DEVELOPER_ID_APP" \
    "$stage/root/opt/farmwatch/bin/farmwatch-agent"
fi
sign=()
[ -n "${DEVELOPER_ID_INSTALLER:-}" ] && sign=(--sign "$DEVELOPER_ID_INSTALLER")
mkdir -p "$repo/build/packages"
out=$repo/build/packages/farmwatch-agent-$version.pkg
pkgbuild --root "$stage/root" --scripts "$here/scripts" --identifier com.farmwatch.agent --version "$version" \
  --install-location / ${sign[@]+"${sign[@]}"} "$out"  # (bash 3.2: an empty array is unset)
echo "$out"
