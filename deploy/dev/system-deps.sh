#!/usr/bin/env bash
# Installs the Debian packages listed in system-packages.txt that are missing. Needs root and apt;
# elsewhere it says what it skipped and the tests that need those tools skip with the reason.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
missing=()
# Names that installed packages provide count as present (nodesource's nodejs provides npm and
# conflicts with Debian's, so asking apt for npm there would fail).
provided=" $(dpkg-query -W -f='${db:Status-Abbrev}|${Provides}\n' 2>/dev/null | sed -n 's/^ii *|//p' \
  | sed 's/([^)]*)//g' | tr ',\n' '  ' | tr -s ' ') "
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || [[ "$provided" == *" $pkg "* ]] \
    || missing+=("$pkg")
done < "$here/system-packages.txt"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: not root or no apt-get; not installing: ${missing[*]} (tests needing them will skip)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A package source that cannot be reached must not stop the suite: the tests needing a missing
# tool skip and name it.
if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "system-deps: apt-get could not install ${missing[*]} (tests needing them will skip)" >&2
fi
