# Sourced by the ensure-*.sh scripts: ensure_package PACKAGE WHY COMMAND... installs Debian's PACKAGE (as
# root) unless every COMMAND is found already, and exits 1 with a line naming it when it cannot.
# apt-get update may exit non-zero while a mirror is mid-sync: what counts is whether the install succeeds.
ensure_package() {
  local package=$1 why=$2 missing=0 c
  shift 2
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing=1; done
  [ "$missing" = 0 ] && return 0
  if [ "$(id -u)" != "0" ]; then
    echo "$* not found and not root: install $package (apt-get install $package)" >&2
    exit 1
  fi
  echo "installing $package ($why)..." >&2
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || { echo "could not install $package" >&2; exit 1; }; done
}
