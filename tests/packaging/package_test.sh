#!/usr/bin/env bash
# The Debian package as `tools/package` builds it, checked without root: its control fields
# (version, Depends from the binaries' shared libraries, conffiles), its files, lintian (no
# error), the extracted chunkd (--version, --check on the packaged default config), and the
# maintainer scripts run in a scratch root ($DPKG_ROOT) with stand-ins for the commands that need
# root (adduser, chown, deluser, ...): install makes the user and a private token, remove keeps
# state and config, purge leaves nothing behind.
# Usage: package_test.sh SOURCE_DIR VERSION (VERSION: CMakeLists.txt's project version).
set -euo pipefail
source_dir=$1
version=$2
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

deb=$("$source_dir/tools/package" | tail -n 1)
deb=$source_dir/$deb
[[ -f $deb ]] || fail "tools/package printed no package path"
arch=$(dpkg --print-architecture)
[[ $(basename "$deb") == "chunkd_${version}_${arch}.deb" ]] || fail "unexpected name $(basename "$deb")"
echo "package: $deb ($(stat -c %s "$deb") bytes)"

# Control fields.
[[ $(dpkg-deb -f "$deb" Package) == chunkd ]] || fail "Package is not chunkd"
[[ $(dpkg-deb -f "$deb" Version) == "$version" ]] || fail "Version is not $version"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
depends_names=$(tr ',|' '\n\n' <<<"$depends" | awk 'NF {print $1}')
dpkg-deb -e "$deb" "$scratch/control"
[[ $(cat "$scratch/control/conffiles") == /etc/chunkd/chunkd.toml ]] ||
  fail "conffiles is not exactly /etc/chunkd/chunkd.toml: $(cat "$scratch/control/conffiles")"
for script in postinst prerm postrm; do
  [[ -x $scratch/control/$script ]] || fail "$script is missing or not executable"
  sh -n "$scratch/control/$script" || fail "$script is not valid sh"
done

# Files.
listing=$(dpkg-deb -c "$deb" | awk '{print $6}')
for path in ./usr/bin/chunkd ./usr/bin/chunkctl ./usr/bin/chunkload ./etc/chunkd/chunkd.toml \
  ./lib/systemd/system/chunkd.service ./usr/share/doc/chunkd/copyright \
  ./usr/share/doc/chunkd/changelog.gz ./usr/share/doc/chunkd/README.md \
  ./usr/share/doc/chunkd/chunkd.example.toml ./usr/share/doc/chunkd/control-api.md; do
  grep -qx -- "$path" <<<"$listing" || fail "$path is not in the package"
done
if grep -q '^\./var/\|^\./etc/chunkd/token' <<<"$listing"; then
  fail "the package ships state or a token: $(grep '^\./var/\|token' <<<"$listing")"
fi
root=$scratch/root
dpkg-deb -x "$deb" "$root"
cmp "$root/lib/systemd/system/chunkd.service" "$source_dir/packaging/systemd/chunkd.service" ||
  fail "the packaged unit differs from packaging/systemd/chunkd.service"

# Every shared library a binary links to directly (NEEDED) comes from a package named in Depends. Debian 12 merged
# /lib into /usr/lib, but dpkg records a library under either name: try both.
owner_of() {
  local path
  for path in "$1" "$(realpath "$1")"; do
    for path in "$path" "${path#/usr}"; do
      dpkg-query -S "$path" 2>/dev/null | cut -d: -f1 | grep -v -- '-dev$' | head -n 1 && return 0
    done
  done
  return 1
}
for bin in chunkd chunkctl chunkload; do
  file "$root/usr/bin/$bin" | grep -q ', stripped' || fail "usr/bin/$bin is not stripped"
  resolved=$(ldd "$root/usr/bin/$bin")
  while read -r needed; do
    lib=$(awk -v name="$needed" '$1 == name && $3 ~ /^\// {print $3}' <<<"$resolved")
    [[ -n $lib ]] || fail "$bin needs $needed, which ldd cannot find"
    owner=$(owner_of "$lib") || fail "no package owns $lib (needed by $bin)"
    grep -qxF -- "$owner" <<<"$depends_names" || fail "$bin needs $lib from $owner: not in Depends"
  done < <(objdump -p "$root/usr/bin/$bin" | awk '$1 == "NEEDED" {print $2}')
done
grep -qxF adduser <<<"$depends_names" || fail "Depends lacks adduser (postinst uses it)"
echo "Depends covers every shared library of chunkd, chunkctl and chunkload"

# The extracted chunkd: its version, and the packaged default config is valid as shipped. Only
# the token path moves (postinst writes /etc/chunkd/token, which this test cannot).
[[ $("$root/usr/bin/chunkd" --version) == "chunkd $version" ]] ||
  fail "chunkd --version says '$("$root/usr/bin/chunkd" --version)', not 'chunkd $version'"
config=$root/etc/chunkd/chunkd.toml
grep -qx 'data_dir = "/var/lib/chunkd"' "$config" || fail "data_dir is not /var/lib/chunkd"
grep -qx 'uri = "tcp://127.0.0.1:1883"' "$config" || fail "the broker is not on loopback"
grep -qx 'listen = "127.0.0.1:8080"' "$config" || fail "the control API is not on loopback"
grep -qx 'token_file = "/etc/chunkd/token"' "$config" || fail "token_file is not /etc/chunkd/token"
if sed -n '/^\[buckets\]/,/^\[/p' "$config" | grep -q '^[^#[]'; then
  fail "the default config maps a bucket"
fi
echo "0123456789abcdef" >"$scratch/token"
sed "s|\"/etc/chunkd/token\"|\"$scratch/token\"|" "$config" >"$scratch/chunkd.toml"
check=$("$root/usr/bin/chunkd" --config "$scratch/chunkd.toml" --check 2>&1) ||
  fail "chunkd --check refuses the packaged config: $check"
[[ $check == "config ok" ]] || fail "chunkd --check said: $check"
echo "chunkd --version: chunkd $version; --check on the packaged config: config ok"

if ! command -v lintian >/dev/null; then fail "lintian is not installed (tools/deps installs it)"; fi
lintian_out=$(lintian --fail-on error "$deb" 2>&1) || fail "lintian reports errors: $lintian_out"
echo "lintian (no error):"
grep -v 'running with root privileges' <<<"$lintian_out" | sed 's/^/  /' || true

"$(dirname "$0")/maintainer_scripts_test.sh" "$scratch/control"
echo "PASS"
