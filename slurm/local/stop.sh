#!/usr/bin/env bash
# Stop the one-node cluster that slurm/local/start.sh STATE_DIR started: cancel its jobs, then stop
# slurmd, slurmctld, slurmdbd, mariadbd and munged by their PID files in STATE_DIR, and wait for
# each to exit. Idempotent: a missing folder, PID file or process is not an error.
# Usage: slurm/local/stop.sh STATE_DIR
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

stop_daemon() {
    local name=$1 pid
    if pid=$(pid_of "$name"); then
        kill -TERM "$pid" 2>/dev/null
        if ! wait_gone "$pid" "$grace"; then
            echo "slurm/local/stop.sh: $name (pid $pid) ignored SIGTERM for ${grace}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
            wait_gone "$pid" 5
        fi
    fi
    rm -f "$state/run/$name.pid"
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

for name in slurmd slurmctld slurmdbd mariadbd munged; do
    stop_daemon "$name"
done
exit 0
