#!/usr/bin/env bash
# Install the Debian packages of the single-node Slurm test cluster (tests/slurm_cluster.py):
# Slurm 22.05 controller + node daemon + clients, munge auth, and slurmdbd + MariaDB for
# accounting (submitit needs sacct to learn that a job died without a result).
# Idempotent: does nothing when all packages are installed. Needs root (or sudo) and apt.
# Package scripts are kept from starting system-wide munge/mariadb/slurm services: the tests start
# their own daemons, on private sockets and ports.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_slurm.sh: needs a Debian/Ubuntu system (dpkg, apt-get); install: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" != installed ]; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_slurm.sh: already installed: ${PACKAGES[*]}"
  exit 0
fi
echo "install_slurm.sh: installing ${missing[*]}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  trap '"${SUDO[@]}" rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
echo "install_slurm.sh: done"
