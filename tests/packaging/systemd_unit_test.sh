#!/usr/bin/env bash
# The shipped systemd unit, checked offline (this needs no running systemd, so it works where
# PID 1 is something else): `systemd-analyze verify` prints nothing, `systemd-analyze security`
# rates the sandbox 2.0 or lower ("OK"), the settings chunkd relies on are there, and the system
# call filter still allows io_uring.
# Usage: systemd_unit_test.sh UNIT CHUNKD_BINARY. Exits 77 (ctest: skipped) without systemd-analyze.
set -euo pipefail
unit=$1
chunkd=$2

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze is not installed (Debian package 'systemd'; tools/deps installs it)"
  exit 77
fi
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The package installs chunkd in /usr/bin; verify needs ExecStart's binary to exist, so the copy
# under test runs the one just built. Nothing else changes.
grep -qx 'ExecStart=/usr/bin/chunkd --config /etc/chunkd/chunkd.toml' "$unit" ||
  fail "ExecStart is not '/usr/bin/chunkd --config /etc/chunkd/chunkd.toml'"
copy=$scratch/chunkd.service
sed "s|^ExecStart=/usr/bin/chunkd |ExecStart=$chunkd |" "$unit" >"$copy"
grep -q "^ExecStart=$chunkd " "$copy" || fail "could not point ExecStart at $chunkd"

verify_out=$(systemd-analyze verify --man=no "$copy" 2>&1) || fail "systemd-analyze verify failed: $verify_out"
[[ -z $verify_out ]] || fail "systemd-analyze verify is not clean: $verify_out"
echo "systemd-analyze verify: clean"

security_out=$(systemd-analyze security --offline=true --threshold=20 "$copy" 2>&1) ||
  fail "systemd-analyze security rates the unit above 2.0: $(tail -n 5 <<<"$security_out")"
overall=$(grep -o 'Overall exposure level for chunkd.service: [0-9.]*' <<<"$security_out") ||
  fail "no overall exposure level in: $security_out"
echo "systemd-analyze security: ${overall##*: } (the limit is 2.0)"
awk -v v="${overall##*: }" 'BEGIN { exit !(v <= 2.0) }' || fail "exposure ${overall##*: } > 2.0"

# What chunkd and the README rely on.
for line in Type=notify NotifyAccess=main 'ExecReload=/bin/kill -HUP $MAINPID' Restart=on-failure \
  User=chunkd StateDirectory=chunkd ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
  PrivateDevices=yes NoNewPrivileges=yes 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
  SystemCallErrorNumber=EPERM; do
  grep -qxF -- "$line" "$unit" || fail "the unit lacks '$line'"
done

# io_uring_setup/enter/register must be in an allowed set and in no denied one. A set lists
# system calls and other sets (@system-service holds @aio, which holds io_uring_*): expand them.
expand() {
  local item
  for item in "$@"; do
    if [[ $item == @* ]]; then
      expand $(systemd-analyze syscall-filter "$item" | sed -e 's/#.*//' | tail -n +2)
    else
      echo "$item"
    fi
  done
}
allowed=() denied=()
while IFS= read -r filter; do
  value=${filter#SystemCallFilter=}
  if [[ $value == ~* ]]; then denied+=(${value#\~}); else allowed+=($value); fi
done < <(grep '^SystemCallFilter=' "$unit")
((${#allowed[@]} > 0)) || fail "no SystemCallFilter allow list"
allowed_calls=$(expand "${allowed[@]}")
denied_calls=$(expand "${denied[@]}")
for call in io_uring_setup io_uring_enter io_uring_register; do
  grep -qx "$call" <<<"$allowed_calls" || fail "$call is not in ${allowed[*]}"
  if grep -qx "$call" <<<"$denied_calls"; then fail "$call is denied by ~${denied[*]}"; fi
done
echo "system call filter: io_uring_setup, io_uring_enter, io_uring_register allowed"
echo "PASS"
