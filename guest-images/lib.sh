# Shared by guest-images/build.sh and build-os.sh (sourced, not run): their messages, the one-build-at-a-time
# lock, and installing a missing host tool from Debian's packages. The caller sets TAG (the message prefix),
# OUT (the cache folder) and FORCE, and defines up_to_date.

log() { echo "[$TAG] $*" >&2; }
die() { echo "[$TAG] error: $*" >&2; exit 1; }

# Exits at once when the outputs are current; otherwise takes the build lock (a test and an experiment may
# both ask for the image) and checks again, since a concurrent run may have built it meanwhile.
exit_if_up_to_date() { # what (for the message)
  if [ "$FORCE" = 0 ] && up_to_date; then
    log "$1 up to date in $OUT"
    exit 0
  fi
  mkdir -p "$OUT"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$OUT/.lock"
    flock 9
    if [ "$FORCE" = 0 ] && up_to_date; then
      log "$1 up to date in $OUT (built by a concurrent run)"
      exit 0
    fi
  fi
}

# apt-get install PACKAGE (root only), after one `apt-get update` per build: the update may fail on one
# mirror mid-sync, so the install alone is judged.
apt_install() { # package
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

# Makes sure COMMAND exists (also in /sbin and /usr/sbin), installing PACKAGE when root.
need_tool() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  [ -x "/sbin/$1" ] || [ -x "/usr/sbin/$1" ] && return 0
  [ "$(id -u)" = 0 ] || die "'$1' not found and not root: install the '$2' package (apt-get install $2)"
  log "installing $2 (for $1)..."
  apt_install "$2" || die "could not install $2"
  command -v "$1" >/dev/null 2>&1 || [ -x "/sbin/$1" ] || [ -x "/usr/sbin/$1" ] || die "$2 installed but '$1' still not found"
}
