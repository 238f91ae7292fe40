#!/usr/bin/env bash
# Packs the self-contained agent (from freeze.sh) into a Debian package with dpkg-deb:
#   /usr/lib/farmwatch-agent/            the PyInstaller folder (farmwatch-agent + _internal/)
#   /usr/bin/farmwatch-agent             a symlink to it
#   /lib/systemd/system/farmwatch-agent.service   deploy/agent/farmwatch-agent.service
#   /usr/share/farmwatch-agent/agent.toml.example deploy/agent/agent.toml
#   /etc/farmwatch/                      where the admin's MDM puts agent.toml and enroll-secret
# and the maintainer scripts in deploy/agent/debian/. No config file is shipped under /etc, so
# an MDM that pushed its agent.toml first never meets a dpkg conffile prompt.
#
#   deploy/agent/build-deb.sh BUNDLE_DIR OUT_DIR   -> OUT_DIR/farmwatch-agent_VERSION_ARCH.deb
#
# DEB_MAINTAINER overrides the Maintainer field; SOURCE_DATE_EPOCH (default: the last commit's
# time) pins file times so the same tree gives the same package.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bundle=${1:?usage: build-deb.sh BUNDLE_DIR OUT_DIR}
out=${2:?usage: build-deb.sh BUNDLE_DIR OUT_DIR}
[ -x "$bundle/farmwatch-agent" ] || { echo "build-deb.sh: no farmwatch-agent in $bundle (run freeze.sh first)" >&2; exit 64; }

version=$("${PYTHON:-python3}" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
arch=$(dpkg --print-architecture)
# The bundle carries the build host's libpython and links against its glibc: no older one will do.
libc=$(dpkg-query -W -f='${Version}' libc6 | cut -d- -f1)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d "$root/usr/lib" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/farmwatch-agent" \
  "$root/usr/share/doc/farmwatch-agent" "$root/etc/farmwatch" "$root/DEBIAN"
cp -a "$bundle" "$root/usr/lib/farmwatch-agent"
ln -s ../lib/farmwatch-agent/farmwatch-agent "$root/usr/bin/farmwatch-agent"
install -m 0644 "$here/farmwatch-agent.service" "$root/lib/systemd/system/farmwatch-agent.service"
install -m 0644 "$here/agent.toml" "$root/usr/share/farmwatch-agent/agent.toml.example"
printf 'farmwatch agent, self-contained build. License: Apache-2.0 (/usr/share/common-licenses/Apache-2.0).\n' \
  > "$root/usr/share/doc/farmwatch-agent/copyright"
chmod -R u+rwX,go+rX,go-w "$root"
chmod 0755 "$root/etc/farmwatch"
install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" -e "s/@LIBC@/$libc/" \
  -e "s/@MAINTAINER@/${DEB_MAINTAINER:-farmwatch packagers <packaging@farmwatch.invalid>}/" \
  "$here/debian/control.in" > "$root/DEBIAN/control"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb=$out/farmwatch-agent_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
