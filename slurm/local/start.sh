#!/usr/bin/env bash
# Start a one-node Slurm cluster with accounting, entirely inside STATE_DIR:
#   munged -> mariadbd -> slurmdbd -> (sacctmgr registration) -> slurmctld -> slurmd
# Usage: slurm/local/start.sh STATE_DIR     (as root; install first with slurm/local/install.sh)
# Prints `export SLURM_CONF=...` and writes STATE_DIR/env.sh; stop with slurm/local/stop.sh STATE_DIR.
# Environment: SLURM_LOCAL_TIMEOUT (seconds per wait, default 60), SLURM_LOCAL_PARTITION (debug).
set -Eeuo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
state=$(cd "$1" && pwd)
timeout=${SLURM_LOCAL_TIMEOUT:-60}
partition=${SLURM_LOCAL_PARTITION:-debug}
cluster=forgetmi
export SLURM_CONF=$state/etc/slurm.conf

die() {
    echo "slurm/local/start.sh: $*" >&2
    exit 1
}

for bin in munged mungekey mariadbd mariadb-install-db slurmdbd slurmctld slurmd sinfo sacct sacctmgr; do
    command -v "$bin" >/dev/null || [[ -x /usr/sbin/$bin ]] || die "$bin not found; run slurm/local/install.sh"
done
export PATH=$PATH:/usr/sbin
[[ $(id -u) -eq 0 ]] || die "must run as root (the daemons run as root to keep the setup to one user)"

# Refuse to start over a live cluster in the same folder: its daemons would fight over files.
for name in munged mariadbd slurmdbd slurmctld slurmd; do
    pidfile=$state/run/$name.pid
    if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "$name already running from $state (pid $(cat "$pidfile")); run slurm/local/stop.sh $state first"
    fi
done

mkdir -p "$state"/{etc,run,log,munge,mariadb,slurmctld,slurmd}
# munged wants its socket folder searchable by all (clients of any user) and writable by none.
chmod 755 "$state" "$state/munge"

tail_logs() {
    local f
    for f in "$state"/log/*.log; do
        [[ -f $f ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 25 "$f" >&2
    done
}

# On any failure: show what the daemons said, then take down whatever did start.
on_error() {
    local rc=$?
    trap - ERR
    echo "slurm/local/start.sh: failed (exit $rc); daemon logs follow" >&2
    tail_logs
    if [[ -s $state/run/slurmctld.pid ]]; then
        echo "----- sinfo (node state and reason) -----" >&2
        timeout 5 sinfo -N -o '%N %T %E' >&2 || true
    fi
    "$here/stop.sh" "$state" >&2 || true
    exit "$rc"
}
trap on_error ERR

# Wait until a command succeeds, or fail naming what never came up.
wait_for() {
    local what=$1
    shift
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "slurm/local/start.sh: timed out after ${timeout}s waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

port_listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Ports already bound (any TCP state) on this machine, from /proc: no ss/netstat needed.
used_ports() {
    awk 'FNR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null |
        while read -r hex; do echo $((16#$hex)); done | sort -u
}

# Random free ports, so a second cluster or a leftover one never shares a port with this one.
pick_ports() {
    local used chosen=() port
    used=" $(used_ports | tr '\n' ' ') "
    while ((${#chosen[@]} < $1)); do
        port=$((20000 + RANDOM % 20000))
        [[ $used == *" $port "* || " ${chosen[*]} " == *" $port "* ]] && continue
        chosen+=("$port")
    done
    echo "${chosen[@]}"
}
read -r ctld_port slurmd_port dbd_port db_port <<<"$(pick_ports 4)"

host=$(hostname -s)
# The node description must match what slurmd detects, or the node is drained as invalid.
node_line=$(slurmd -C)
node_line=${node_line%%$'\n'*}
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$node_line"; }
cpus=$(field CPUs)
detected_mem=$(field RealMemory)
topology="Boards=$(field Boards) SocketsPerBoard=$(field SocketsPerBoard) CoresPerSocket=$(field CoresPerSocket) ThreadsPerCore=$(field ThreadsPerCore)"
# Leave headroom for the daemons and the test process itself: 10%, at least 512 MiB.
headroom=$((detected_mem / 10 > 512 ? detected_mem / 10 : 512))
real_mem=$((detected_mem - headroom))
((real_mem > 0)) || die "slurmd -C reports only ${detected_mem} MiB"
mem_per_cpu=$((real_mem / cpus))

# The database password is generated once per state folder and kept with the data it opens.
if [[ ! -s $state/etc/db.pass ]]; then
    (umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/etc/db.pass")
fi
db_pass=$(cat "$state/etc/db.pass")

render() {
    sed -e "s|@STATE_DIR@|$state|g" -e "s|@HOST@|$host|g" -e "s|@CLUSTER@|$cluster|g" \
        -e "s|@PARTITION@|$partition|g" -e "s|@CTLD_PORT@|$ctld_port|g" \
        -e "s|@SLURMD_PORT@|$slurmd_port|g" -e "s|@DBD_PORT@|$dbd_port|g" \
        -e "s|@DB_PORT@|$db_port|g" -e "s|@DB_PASS@|$db_pass|g" \
        -e "s|@MUNGE_SOCKET@|$state/munge/munge.socket|g" \
        -e "s|@CPUS@|$cpus|g" -e "s|@TOPOLOGY@|$topology|g" \
        -e "s|@REAL_MEMORY@|$real_mem|g" -e "s|@MEM_PER_CPU@|$mem_per_cpu|g" "$1"
}
(umask 077 && render "$here/slurmdbd.conf.in" >"$state/etc/slurmdbd.conf")
render "$here/slurm.conf.in" >"$state/etc/slurm.conf"
render "$here/mariadb.cnf.in" >"$state/etc/mariadb.cnf"
# Run by mariadbd on every start: the slurm account exists and has the password of this folder.
(umask 077 && cat >"$state/etc/mariadb-init.sql" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
)

# munge: a private key and socket; nothing shared with a system munged.
[[ -s $state/munge/munge.key ]] || mungekey --create --keyfile="$state/munge/munge.key"
chmod 600 "$state/munge/munge.key"
munged --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
    --pid-file="$state/run/munged.pid" --log-file="$state/log/munged.log" \
    --seed-file="$state/munge/munged.seed" </dev/null >>"$state/log/munged.log" 2>&1
wait_for "munged socket" test -S "$state/munge/munge.socket"

# MariaDB: initialise the data folder once, then run it on its own port and socket.
if [[ ! -d $state/mariadb/data/mysql ]]; then
    mariadb-install-db --defaults-file="$state/etc/mariadb.cnf" --user=root --skip-test-db \
        --auth-root-authentication-method=socket >"$state/log/mariadb-install-db.log" 2>&1
fi
# setsid + nohup: the server must outlive this script and the shell or test that ran it.
setsid nohup mariadbd --defaults-file="$state/etc/mariadb.cnf" --init-file="$state/etc/mariadb-init.sql" \
    >>"$state/log/mariadbd.log" 2>&1 </dev/null &
wait_for "mariadbd on 127.0.0.1:$db_port" port_listening "$db_port"
wait_for "mariadbd pid file" test -s "$state/run/mariadbd.pid"

# slurmdbd finds slurmdbd.conf beside $SLURM_CONF; the first start creates the schema.
# Daemons get no stdio of ours, so a caller reading this script's output sees it end.
slurmdbd </dev/null >>"$state/log/slurmdbd.log" 2>&1
wait_for "slurmdbd on 127.0.0.1:$dbd_port" port_listening "$dbd_port"

# Associations: the cluster, one account and root in it. "-i" answers yes; re-runs on an existing
# state folder find them already there ("add" of an existing one fails), hence the look-ups.
has() { [[ -n $(sacctmgr -n -P show "$@" 2>/dev/null) ]]; }
wait_for "slurmdbd answering sacctmgr" sacctmgr -n show cluster
has cluster "$cluster" format=cluster ||
    sacctmgr -i -Q add cluster "$cluster" >/dev/null
has account forgetmi format=account ||
    sacctmgr -i -Q add account forgetmi cluster="$cluster" description=tests organization=forgetmi >/dev/null
has assoc where cluster="$cluster" account=forgetmi user=root format=user ||
    sacctmgr -i -Q add user root account=forgetmi cluster="$cluster" defaultaccount=forgetmi >/dev/null

slurmctld </dev/null >>"$state/log/slurmctld.log" 2>&1
wait_for "slurmctld answering" scontrol ping
slurmd </dev/null >>"$state/log/slurmd.log" 2>&1
node_idle() { [[ $(sinfo -h -N -n "$host" -o '%T' 2>/dev/null) == idle ]]; }
wait_for "node $host idle in sinfo" node_idle
wait_for "sacct answering" sacct -n -X -S now

cat >"$state/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
export FORGETMI_SLURM_STATE=$state
export FORGETMI_SLURM_PARTITION=$partition
EOF
trap - ERR
echo "export SLURM_CONF=$SLURM_CONF"
