#!/usr/bin/env bash
# The benchmark's independent checks: fio (its nbd engine replays the bench's requests) and strace (the
# oracle for the flushes the baselines issue). Install Debian's fio and strace when missing.
set -u
missing=()
command -v fio >/dev/null 2>&1 || missing+=(fio)
command -v strace >/dev/null 2>&1 || missing+=(strace)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "${missing[*]} not found and not root: install them (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]} (benchmark checks)..." >&2
# apt-get update may exit non-zero when one mirror index is mid-sync; judge by the install.
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
for t in "${missing[@]}"; do
  if ! command -v "$t" >/dev/null 2>&1; then
    echo "could not install $t" >&2
    exit 1
  fi
done
