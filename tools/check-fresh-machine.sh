#!/usr/bin/env bash
# Runs the README's two quick-start commands, exactly as README.md writes them, on a pristine
# Debian root: what a new user who clones the project gets.
#
#   bash tools/check-fresh-machine.sh            # Debian bookworm (the default)
#   FRESH_SUITE=trixie bash tools/check-fresh-machine.sh
#   bash tools/check-fresh-machine.sh --print-commands README.md   # only the two commands it runs
#
# Steps:
#  1. A minimal Debian root (`debootstrap --variant=minbase SUITE`) from the mirror of this
#     machine's own apt configuration (/etc/apt/sources.list, /etc/apt/sources.list.d/*), cached in
#     $NORMCHECK_CACHE/fresh-SUITE/root (default ~/.cache/normcheck) and copied fresh for each run.
#     debootstrap is installed with apt-get when missing (only this check needs it).
#  2. The committed tree (`git clone` of HEAD: uncommitted changes are not tested) goes to
#     /root/normcheck in the copy, and ../shared (the folder beside the checkout), when present,
#     to /root/shared.
#  3. The two ```sh blocks under "## Quick start" of the cloned README.md run verbatim, one after
#     the other, in `chroot` as root from /root/normcheck, with a clean environment and /proc,
#     /sys, /dev, /dev/pts and /dev/shm mounted. The copy gets what a machine on this network
#     needs and nothing else: /etc/resolv.conf, Debian sources for SUITE, SUITE-updates and
#     SUITE-security from the host's mirrors, the host's apt proxy and Check-Valid-Until/Check-Date
#     settings (from `apt-config dump`), and a policy-rc.d that keeps package scripts from starting
#     daemons.
#     Downloaded .deb files are kept in $NORMCHECK_CACHE/fresh-SUITE/archives (bind-mounted at
#     /var/cache/apt/archives), so later runs do not download them again; setup.sh inside the
#     root still installs every package.
#  4. One line per command: its exit code and wall time (the output is kept in
#     $NORMCHECK_CACHE/fresh-SUITE/command-N.log), then whether the onednn backend was built: setup.sh
#     installs libdnnl-dev, so a fresh root without the backend means setup.sh misses a package.
#     Mounts and the copy are removed on every exit path (normal, error, Ctrl-C, TERM).
#     FRESH_TMPFS=SIZE (e.g. 8G; about 4G are used) puts the copy on a tmpfs: faster on a slow
#     disk, and removing it is instant; off by default, since the memory stays pinned meanwhile.
#
# Needs root (or sudo without a password), mount permission, and network access to the mirror.
# Exit codes: 0 both commands exited 0 and the onednn backend was built; 1 a README command failed
# or the backend was not built; 2 the check itself could not be prepared (bootstrap, clone or README
# parse failed); 77 it cannot run on this machine (not root, no debootstrap obtainable, no mount
# permission): the line starting "check-fresh-machine: SKIPPED:" says why.
set -euo pipefail
{ # The whole script is read before it runs: editing it meanwhile cannot change a running check.

suite=${FRESH_SUITE:-bookworm}
cache=${NORMCHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/normcheck}
base=$cache/fresh-$suite
say() { echo "check-fresh-machine: $*"; }
skip() { say "SKIPPED: $*"; exit 77; }
die() { say "ERROR: $*" >&2; exit 2; }

# The README's quick-start commands into the array `commands`: the ```sh blocks of the
# "## Quick start" section, each block one command (its lines joined by newlines).
read_quick_start() {
  mapfile -d '' commands < <(awk '
    /^## / { in_qs = ($0 ~ /^## Quick start/); next }
    in_qs && /^```sh[ \t]*$/ { in_block = 1; block = ""; next }
    in_qs && in_block && /^```[ \t]*$/ { in_block = 0; printf "%s%c", block, 0; next }
    in_qs && in_block { block = block (block == "" ? "" : "\n") $0 }' "$1")
  [ "${#commands[@]}" -eq 2 ] ||
    die "$1: expected two \`\`\`sh blocks under '## Quick start', found ${#commands[@]}"
}
if [ "${1:-}" = "--print-commands" ]; then  # --print-commands README: what would run, and stop
  read_quick_start "${2:?--print-commands README.md}"
  printf 'command 1: %s\ncommand 2: %s\n' "${commands[0]}" "${commands[1]}"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n env "FRESH_SUITE=$suite" "NORMCHECK_CACHE=$cache" bash "$0" "$@"
  fi
  skip "needs root (debootstrap, chroot, mount) and sudo -n is not available"
fi
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel) || die "$(dirname "$0")/.. is not a git checkout"

# --- the host's Debian mirrors, from its apt configuration --------------------------------------
# Prints "TYPE URI SUITE" for every deb entry of sources.list (one-line format) and of
# sources.list.d/*.list and *.sources (deb822).
host_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -E 's/#.*//; s/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print "deb", $2, $3 }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no")
                              for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print "deb", u[i], s[j];
                            types = ""; enabled = ""; nu = 0; ns = 0 }
         /^[ \t]*#/ { next }
         /^[ \t]*$/ { flush(); next }
         { key = tolower($1); sub(/:$/, "", key); $1 = "" }
         key == "types" { types = $0 }
         key == "enabled" { enabled = tolower($2) }
         key == "uris" { nu = split($0, u, " ") }
         key == "suites" { ns = split($0, s, " ") }
         END { flush() }' "$f"
  done
}
# The mirror of the main archive: an entry for a plain suite (no -updates/-security/-backports)
# at a URI with "debian" in it. The security mirror: an entry for a *-security suite, if any.
sources=$(host_sources)
mirror=$(awk '$3 !~ /-/ && $2 ~ /debian/ { print $2; exit }' <<<"$sources")
security=$(awk '$3 ~ /-security$/ && $2 ~ /debian/ { print $2; exit }' <<<"$sources")
[ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/ (found: ${sources:-nothing})"

# --- debootstrap, chroot and mount are available ------------------------------------------------
if ! command -v debootstrap >/dev/null 2>&1; then
  say "debootstrap is not installed; installing it with apt-get (only this check needs it)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1; } ||
    skip "debootstrap is not installed and apt-get could not install it"
fi
[ -e "/usr/share/debootstrap/scripts/$suite" ] || skip "this debootstrap ($(debootstrap --version)) does not know '$suite'"
mkdir -p "$base"
# One check per suite and cache at a time: they share the cached root, the .deb cache and the logs.
exec 9>"$base/lock"
flock -n 9 || { say "another check of $suite is running ($base/lock); waiting for it"; flock 9; }
probe=$(mktemp -d "$base/mount-probe.XXXXXX")
if ! mount --bind "$probe" "$probe" 2>/dev/null; then
  rmdir "$probe"
  skip "no permission to mount (an unprivileged container?); chroot needs /proc, /sys and /dev"
fi
umount "$probe" && rmdir "$probe"

# --- cleanup on every exit path -----------------------------------------------------------------
run_dir=""
mounted=()
in_copy() {  # the processes whose root is the copy (the README commands and what they started)
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" != "$run_dir/root" ] || echo "${p#/proc/}"
  done
}
cleanup() {
  local rc=$? m pids i t0=$SECONDS
  trap - EXIT INT TERM
  if [ -n "$run_dir" ]; then
    # Processes a package script left running inside the copy (ours: their root is the copy).
    for i in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(in_copy)
      [ -n "$pids" ] || break
      # shellcheck disable=SC2086
      kill $pids 2>/dev/null || true
      sleep 1
    done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
      m=${mounted[i]}
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "could not unmount $m" >&2
    done
    if grep -q " $run_dir[/ ]" /proc/mounts; then
      say "mounts remain under $run_dir; not removing it" >&2
    else
      rm -rf --one-file-system "$run_dir"
      say "cleanup: unmounted and removed the copy in $((SECONDS - t0)) s"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the cached pristine root -------------------------------------------------------------------
stamp="$suite $mirror (debootstrap --variant=minbase)"
# Rebuilt when the suite or mirror changes, and after 14 days (setup.sh updates the package lists,
# but the base system itself should stay close to what debootstrap gives today).
if [ -d "$base/root" ] && [ "$(cat "$base/root.stamp" 2>/dev/null)" = "$stamp" ] &&
   [ -n "$(find "$base/root.stamp" -mtime -14)" ]; then
  say "bootstrap: cached root $base/root ($stamp)"
else
  say "bootstrap: debootstrap --variant=minbase $suite from $mirror"
  rm -rf --one-file-system "$base/root" "$base/root.new" "$base/root.stamp"
  t0=$(date +%s)
  debootstrap --variant=minbase "$suite" "$base/root.new" "$mirror" >"$base/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $base/debootstrap.log: $(tail -n 1 "$base/debootstrap.log")"
  mv "$base/root.new" "$base/root"
  echo "$stamp" >"$base/root.stamp"
  say "bootstrap: exit 0, $(($(date +%s) - t0)) s"
fi

run_dir=$(mktemp -d "$base/run.XXXXXX")
root=$run_dir/root
if [ -n "${FRESH_TMPFS:-}" ]; then  # e.g. FRESH_TMPFS=8G: the copy in memory (removing it is instant)
  mount -t tmpfs -o "size=$FRESH_TMPFS" normcheck-fresh "$run_dir"
  mounted+=("$run_dir")
fi
t0=$(date +%s)
cp -a "$base/root" "$root"

# Network and apt configuration of this machine; a pristine Debian root otherwise.
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
rm -f "$root/etc/apt/sources.list"
{
  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" "$suite"
  [ -z "$security" ] ||
    printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$security" "$suite"
} >"$root/etc/apt/sources.list.d/debian.sources"
apt-config dump | grep -E '^Acquire::([^ ]*::)?([Pp]roxy|Check-Valid-Until|Check-Date)' \
  >"$root/etc/apt/apt.conf.d/00host-network" || rm -f "$root/etc/apt/apt.conf.d/00host-network"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"

# The committed tree and ../shared.
commit=$(git -C "$repo" rev-parse HEAD)
git clone -q --no-hardlinks "$repo" "$root/root/normcheck" || die "git clone of $repo failed"
git -C "$root/root/normcheck" checkout -q --detach "$commit" || die "checkout of $commit failed"
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] ||
  say "note: the work tree has uncommitted changes; they are not tested (commit $commit is)"
if [ -d "$repo/../shared" ]; then
  cp -a "$repo/../shared" "$root/root/shared"
else
  say "note: no ../shared beside the checkout ($repo/../shared); cloned without it"
fi
say "copy of the root with the clone of ${commit:0:12} ready in $(($(date +%s) - t0)) s"

read_quick_start "$root/root/normcheck/README.md"

mount_at() {  # mount_at TARGET MOUNT-ARGS...
  local target=$root$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}
mount_at /proc -t proc proc
mount_at /sys --bind /sys
mount_at /dev --bind /dev
mount_at /dev/pts --bind /dev/pts
[ ! -d /dev/shm ] || mount_at /dev/shm --bind /dev/shm
mkdir -p "$base/archives/partial"
mount_at /var/cache/apt/archives --bind "$base/archives"

failed=0
for i in 0 1; do
  log=$base/command-$((i + 1)).log
  t0=$(date +%s)
  rc=0
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    TERM="${TERM:-dumb}" /bin/bash -c "cd /root/normcheck && ${commands[i]}" >"$log" 2>&1 9>&- &
  wait $! || rc=$?  # in the background, so that INT/TERM reach the trap at once
  secs=$(($(date +%s) - t0))
  say "command $((i + 1)): exit $rc, $secs s: ${commands[i]}"
  if [ "$rc" -ne 0 ]; then
    failed=1
    say "command $((i + 1)) failed; last lines of $log:"
    tail -n 25 "$log" | sed 's/^/    /'
  fi
done
# setup.sh installs libdnnl-dev, so on a fresh root the onednn backend must be built: the AUTO
# detection must not have dropped it (as a missing OpenCL package would).
if line=$(grep -m 1 -E 'normcheck: (oneDNN unusable|no oneDNN found)' "$base/command-1.log"); then
  say "onednn backend: NOT built on the fresh root (a package missing from setup.sh?): ${line#-- }"
  failed=1
elif line=$(grep -m 1 'normcheck: oneDNN backend against' "$base/command-1.log"); then
  say "onednn backend: configured, against ${line#-- normcheck: oneDNN backend against }"
fi
exit "$failed"
}
