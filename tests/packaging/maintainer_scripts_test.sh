#!/usr/bin/env bash
# The package's maintainer scripts, run as dpkg would run them, without root: in a scratch root
# ($DPKG_ROOT, which the scripts put before every path) with stand-ins, first on PATH, for the
# commands that would change this machine (adduser, deluser, delgroup, chown, getent, systemctl,
# deb-systemd-helper, deb-systemd-invoke); the stand-ins log their calls and keep the user and
# group in a state directory.
#   install: the user chunkd, a random token 0640 root:chunkd; nothing started or enabled;
#   upgrade: the token kept, the user not made twice;
#   remove: state, config, token and user kept;
#   purge: nothing left: state, token, /etc/chunkd, enable links, drop-ins, user and group.
# Usage: maintainer_scripts_test.sh DIR (holding postinst, prerm and postrm).
set -euo pipefail
control=$(realpath "$1")
fail() {
  echo "FAIL: $*" >&2
  [[ -f ${calls:-} ]] && sed 's/^/  call: /' "$calls" >&2
  exit 1
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
root=$scratch/root
state=$scratch/state
shims=$scratch/bin
calls=$scratch/calls
mkdir -p "$root/etc/chunkd" "$state" "$shims"
: >"$calls"

shim() {  # shim NAME SH-BODY: a stand-in that logs "NAME ARGS" and then runs BODY
  printf '#!/bin/sh\necho "%s $*" >>"%s"\n%s\n' "$1" "$calls" "$2" >"$shims/$1"
  chmod +x "$shims/$1"
}
shim getent "case \"\$1\" in passwd) test -e '$state/user' ;; group) test -e '$state/group' ;; *) exit 2 ;; esac || exit 2"
shim adduser "touch '$state/user'; case \" \$* \" in *' --group '*) touch '$state/group' ;; esac"
shim deluser "rm -f '$state/user'"
shim delgroup "rm -f '$state/group'"
shim chown ":"
shim systemctl ":"
shim deb-systemd-invoke ":"
shim deb-systemd-helper "case \"\$*\" in debian-installed*|*was-enabled*) exit 1 ;; esac"

run() {  # run SCRIPT ARGS...: as dpkg runs it
  env PATH="$shims:$PATH" DPKG_ROOT="$root" DPKG_MAINTSCRIPT_PACKAGE=chunkd \
    sh "$control/$1" "${@:2}" || fail "$* exited $?"
}
called() { grep -q -- "$1" "$calls"; }

# Install: dpkg unpacks the conffile, then runs postinst configure.
echo "# packaged config" >"$root/etc/chunkd/chunkd.toml"
run postinst configure
called '^adduser --system --group .*chunkd$' || fail "postinst did not add the system user chunkd"
[[ -e $state/user && -e $state/group ]] || fail "no user and group chunkd after install"
token=$root/etc/chunkd/token
[[ -f $token ]] || fail "postinst made no token"
[[ $(stat -c %a "$token") == 640 ]] || fail "the token's mode is $(stat -c %a "$token"), not 640"
grep -qxE '[0-9a-f]{64}' "$token" || fail "the token is not 64 hex digits: $(cat "$token")"
called "^chown root:chunkd $token.new$" || fail "the token is not given to group chunkd"
[[ ! -e $token.new ]] || fail "token.new left behind"
called '^deb-systemd-helper update-state chunkd.service$' || fail "no deb-systemd-helper update-state"
if called '^systemctl \|^deb-systemd-invoke '; then fail "install started or reloaded something"; fi
first_token=$(cat "$token")

# Upgrade: same user, same token.
: >"$calls"
run postinst configure 0.0.1
if called '^adduser'; then fail "postinst added the user again on upgrade"; fi
[[ $(cat "$token") == "$first_token" ]] || fail "the token changed on upgrade"

# What running and configuring chunkd leaves: state, enable link, a drop-in.
mkdir -p "$root/var/lib/chunkd/blobs" "$root/etc/systemd/system/multi-user.target.wants" \
  "$root/etc/systemd/system/chunkd.service.d"
echo registry >"$root/var/lib/chunkd/registry.db"
echo blob >"$root/var/lib/chunkd/blobs/ab"
ln -s /lib/systemd/system/chunkd.service \
  "$root/etc/systemd/system/multi-user.target.wants/chunkd.service"
printf '[Service]\nReadOnlyPaths=/srv/firmware\n' \
  >"$root/etc/systemd/system/chunkd.service.d/override.conf"

# Remove: dpkg removes the program files, config and state stay.
run prerm remove
run postrm remove
for kept in var/lib/chunkd/registry.db etc/chunkd/token etc/chunkd/chunkd.toml \
  etc/systemd/system/chunkd.service.d/override.conf; do
  [[ -e $root/$kept ]] || fail "remove deleted $kept (only purge may)"
done
[[ -e $state/user ]] || fail "remove deleted the user (only purge may)"

# Purge: dpkg deletes the conffile, then runs postrm purge.
: >"$calls"
rm "$root/etc/chunkd/chunkd.toml"
run postrm purge
called '^deb-systemd-helper purge chunkd.service$' || fail "no deb-systemd-helper purge"
[[ ! -e $state/user ]] || fail "purge left the user chunkd"
[[ ! -e $state/group ]] || fail "purge left the group chunkd"
left=$(cd "$root" && find . -mindepth 1 \( -type f -o -type l -o -name '*chunkd*' \))
[[ -z $left ]] || fail "purge left: $left"
echo "maintainer scripts: install, upgrade, remove and purge behave; purge leaves nothing"
