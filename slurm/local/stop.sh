#!/usr/bin/env bash
# Stop the one-node cluster that slurm/local/start.sh STATE_DIR started: cancel its jobs, then stop
# slurmd, slurmctld, slurmdbd, mariadbd and munged by their PID files in STATE_DIR, and wait for
# each to exit. Idempotent: a missing folder, PID file or process is not an error.
# Usage: slurm/local/stop.sh STATE_DIR
# No -e: one daemon that will not stop must not keep the others running.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
state=$1
[[ -d $state ]] || exit 0
state=$(cd "$state" && pwd)
export SLURM_CONF=$state/etc/slurm.conf PATH=$PATH:/usr/sbin
grace=${SLURM_LOCAL_STOP_TIMEOUT:-20}

pid_of() {
    local pidfile=$state/run/$1.pid pid
    [[ -s $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] || return 1
    # The name check guards against a recycled PID that now belongs to something else.
    [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$1" ]] || return 1
    echo "$pid"
}

wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.1
    done
}

# Stop a group of daemons together (each takes 1-3 s to shut down), waiting for all of them.
stop_daemons() {
    local name pid pids=() names=()
    for name in "$@"; do
        if pid=$(pid_of "$name"); then
            kill -TERM "$pid" 2>/dev/null
            pids+=("$pid")
            names+=("$name")
        fi
    done
    local i
    for i in "${!pids[@]}"; do
        if ! wait_gone "${pids[$i]}" "$grace"; then
            echo "slurm/local/stop.sh: ${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for ${grace}s; killing it" >&2
            kill -KILL "${pids[$i]}" 2>/dev/null
            wait_gone "${pids[$i]}" 5
        fi
    done
    for name in "$@"; do
        rm -f "$state/run/$name.pid"
    done
}

# Jobs first: slurmstepd outlives slurmd, so a running job would otherwise be left behind.
if pid_of slurmctld >/dev/null && [[ -f $SLURM_CONF ]]; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null
        # Each step's slurmstepd removes its socket in the spool folder when it exits.
        deadline=$((SECONDS + grace))
        while compgen -G "$state/slurmd/$(hostname -s)_*" >/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
fi

# slurmctld hands its last job records to slurmdbd, which writes them to MariaDB; all of them
# authenticate through munged. So: Slurm daemons, then slurmdbd, then the database and munge.
stop_daemons slurmd slurmctld
stop_daemons slurmdbd
stop_daemons mariadbd munged
exit 0
