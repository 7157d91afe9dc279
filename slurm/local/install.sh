#!/usr/bin/env bash
# Install what the one-node test cluster needs: Slurm 22.05 (controller, node daemon, client,
# accounting daemon), munge, and the MariaDB server/client cores (no system service is configured:
# start.sh runs a private mariadbd inside its state folder). Idempotent, non-interactive.
set -euo pipefail

packages=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server-core mariadb-client-core)
# One binary per package: when all are present there is nothing to do (no apt lock, no network).
binaries=(slurmctld slurmd sbatch slurmdbd munged mariadbd mariadb-install-db)

missing=()
for bin in "${binaries[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] || missing+=("$bin")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm/local/install.sh: already installed"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "slurm/local/install.sh: missing ${missing[*]}; run as root (sudo $0)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# The packages' own services would compete with the private daemons (ports, /run/munge): a
# policy-rc.d that denies starts keeps postinst from launching them (an existing one is kept).
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
fi

# A fresh image has empty package lists, an old one may name versions the mirror no longer has:
# refresh them when the packages are unknown or the first attempt fails.
install_packages() { apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }
if ! apt-cache show "${packages[@]}" >/dev/null 2>&1; then
    apt-get update -qq
fi
install_packages || { apt-get update -qq && install_packages; }

echo "slurm/local/install.sh: installed ${packages[*]}"
