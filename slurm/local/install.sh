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
# The packages' own services would compete with the private daemons (ports, /run/munge);
# a policy-rc.d that denies starts keeps postinst from launching them, unless one is already there.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
fi

# A fresh image may have empty package lists; refresh them only when the packages are unknown.
if ! apt-cache show "${packages[@]}" >/dev/null 2>&1; then
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
[[ $own_policy -eq 1 ]] && rm -f "$policy"

echo "slurm/local/install.sh: installed ${packages[*]}"
