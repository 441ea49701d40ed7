#!/usr/bin/env bash
# A single-node SLURM cluster with accounting on this (Debian) machine, for tests/test_slurm.py and CI.
#
#   tests/cluster/slurm_cluster.sh up      # start munged, MariaDB, slurmdbd, slurmctld, slurmd
#   tests/cluster/slurm_cluster.sh down    # stop exactly the daemons `up` started (by their PID files)
#   tests/cluster/slurm_cluster.sh status  # exit 0 when the cluster answers
#
# Needs root and the Debian packages: munge slurmctld slurmd slurm-client slurmdbd mariadb-server.
# No systemd and no cgroups: proctrack/linuxproc and task/none.
#
# The cluster: one node (this host's short name, CPUs and memory, plus one stand-in GPU of type `testgpu`
# with File=/dev/null, so that `--gpus=1` and `--gpus=testgpu:1` are scheduled; there is no device: torch sees
# no CUDA and runs on the CPU), two partitions (`debug`, the default, and `compute`), two accounts (`ci`, the
# user's default, and `myproject`), accounting enforced, so a job under an unknown account is refused. The
# README's cluster commands use `myproject` and `compute`, so sacct shows whether they were applied.
#
# State (the daemons' spool folders, logs and PID files) lives in $CLIP_INTERP_SLURM_STATE
# (default /tmp/clip-interp-slurm). slurm.conf, gres.conf and slurmdbd.conf go to /etc/slurm, where the
# client commands find them; `up` refuses to overwrite files there that it did not write.
set -euo pipefail

STATE=${CLIP_INTERP_SLURM_STATE:-/tmp/clip-interp-slurm}
CLUSTER=clipci
DEFAULT_PARTITION=debug
PARTITION=compute
DEFAULT_ACCOUNT=ci
ACCOUNT=myproject
MARKER="# written by tests/cluster/slurm_cluster.sh"
ETC=/etc/slurm
DB_PASSWORD=clip-interp-ci
NODE=$(hostname -s)
USER_NAME=$(id -un)

log() { echo "slurm_cluster: $*" >&2; }
die() { log "$*"; exit 1; }

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

write_conf() {  # write_conf PATH MODE: stdin to PATH, refusing to replace a file this script did not write
    local path=$1 mode=$2
    if [[ -e "$path" ]] && ! grep -qF "$MARKER" "$path"; then
        die "$path exists and was not written by this script; not touching it (is a real SLURM configured here?)"
    fi
    { echo "$MARKER"; cat; } >"$path"
    chmod "$mode" "$path"
}

start_munge() {
    if pid_alive "$STATE/munged.pid"; then return; fi
    if munge -n </dev/null >/dev/null 2>&1; then
        log "munged already running (not started here; will not be stopped)"
        return
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    [[ -s /etc/munge/munge.key ]] || { mungekey --create --force 2>/dev/null || create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 "$STATE/munge"
    # munged forks into the background and writes its PID file
    setpriv --reuid=munge --regid=munge --init-groups \
        munged --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log"
    ln -sf "$STATE/munge/munged.pid" "$STATE/munged.pid"
    wait_for 20 munge sh -c 'munge -n </dev/null | unmunge' || die "munged did not start ($STATE/munge/munged.log)"
}

start_mariadb() {
    if pid_alive "$STATE/mariadb.pid"; then return; fi
    if mariadb-admin ping >/dev/null 2>&1; then
        log "MariaDB already running (not started here; will not be stopped)"
        return
    fi
    install -d -o mysql -g root -m 0755 /run/mysqld
    install -d -o mysql -g mysql -m 0755 "$STATE/mariadb"
    # mariadbd writes its PID file itself; nohup + & keeps it running after this script exits
    nohup mariadbd --user=mysql --pid-file="$STATE/mariadb/mariadbd.pid" \
        --log-error="$STATE/mariadb/mariadbd.log" >/dev/null 2>&1 &
    wait_for 60 mariadb mariadb-admin ping || die "MariaDB did not start ($STATE/mariadb/mariadbd.log)"
    wait_for 10 "pid file" test -s "$STATE/mariadb/mariadbd.pid" || die "MariaDB wrote no PID file"
    ln -sf "$STATE/mariadb/mariadbd.pid" "$STATE/mariadb.pid"
}

write_configs() {
    mkdir -p "$ETC" "$STATE/slurmctld" "$STATE/slurmd" "$STATE/log"
    local node_line
    node_line=$(slurmd -C | head -1)   # NodeName=<host> CPUs=... RealMemory=...
    [[ $node_line == NodeName=$NODE* ]] || die "unexpected 'slurmd -C' output: $node_line"
    write_conf "$ETC/slurm.conf" 0644 <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
GresTypes=gpu
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$node_line Gres=gpu:testgpu:1 State=UNKNOWN
PartitionName=$DEFAULT_PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=$PARTITION Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    write_conf "$ETC/gres.conf" 0644 <<EOF
NodeName=$NODE Name=gpu Type=testgpu File=/dev/null
EOF
    write_conf "$ETC/slurmdbd.conf" 0600 <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
}

setup_database() {
    mariadb <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_daemon() {  # start_daemon NAME: the daemon forks and writes $STATE/NAME.pid (set in the configs)
    local name=$1
    if pid_alive "$STATE/$name.pid"; then return; fi
    "$name" || die "$name did not start ($STATE/log/$name.log)"
    wait_for 20 "$name pid" test -s "$STATE/$name.pid" || die "$name wrote no PID file ($STATE/log/$name.log)"
}

add_associations() {
    wait_for 30 slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer ($STATE/log/slurmdbd.log)"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i add account "$DEFAULT_ACCOUNT,$ACCOUNT" Cluster="$CLUSTER" Description=clip-interp-ci \
        Organization=clip-interp >/dev/null 2>&1 || true
    sacctmgr -i add user "$USER_NAME" Account="$DEFAULT_ACCOUNT,$ACCOUNT" DefaultAccount="$DEFAULT_ACCOUNT" \
        Cluster="$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -n -P list assoc user="$USER_NAME" format=account | grep -qx "$ACCOUNT" \
        || die "account $ACCOUNT was not added for $USER_NAME"
}

node_idle() { sinfo -h -N -n "$NODE" -o %t | grep -Eq '^(idle|mix|alloc)$'; }
node_registered() { sinfo -h -N -n "$NODE" -o %t | grep -Evq '^(unk|down|inval)'; }

up() {
    [[ $(id -u) == 0 ]] || die "needs root"
    for cmd in munged mariadbd slurmdbd slurmctld slurmd sbatch sacctmgr; do
        command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install -y munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
    done
    mkdir -p "$STATE"
    chmod 0755 "$STATE"
    start_munge
    start_mariadb
    setup_database
    write_configs
    start_daemon slurmdbd
    add_associations
    start_daemon slurmctld
    start_daemon slurmd
    # a node drained in an earlier run (state is kept in $STATE/slurmctld) is resumed
    wait_for 30 "node registration" node_registered || die "node $NODE did not register ($STATE/log/slurmd.log)"
    if ! node_idle; then scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true; fi
    wait_for 30 "node" node_idle || die "node $NODE did not come up: $(sinfo -N -h -o '%N %t %E' 2>&1) ($STATE/log)"
    log "up: cluster $CLUSTER, node $NODE, partitions $DEFAULT_PARTITION (default) and $PARTITION," \
        "accounts $DEFAULT_ACCOUNT (default) and $ACCOUNT; state in $STATE"
}

stop_pid_file() {  # stop_pid_file NAME PIDFILE: TERM the process and wait for it to exit
    local name=$1 file=$2 pid
    [[ -s "$file" ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) did not stop; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

down() {
    [[ -d "$STATE" ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
    # the PID files of slurmd/slurmctld/slurmdbd are written by the daemons (paths set in our configs);
    # those of munged and MariaDB are symlinks into their own folders, present only if `up` started them
    stop_pid_file slurmd "$STATE/slurmd.pid"
    stop_pid_file slurmctld "$STATE/slurmctld.pid"
    stop_pid_file slurmdbd "$STATE/slurmdbd.pid"
    if [[ -L "$STATE/mariadb.pid" ]]; then stop_pid_file mariadbd "$(readlink "$STATE/mariadb.pid")"; rm -f "$STATE/mariadb.pid"; fi
    if [[ -L "$STATE/munged.pid" ]]; then stop_pid_file munged "$(readlink "$STATE/munged.pid")"; rm -f "$STATE/munged.pid"; fi
    for conf in slurm.conf gres.conf slurmdbd.conf; do
        if [[ -f "$ETC/$conf" ]] && grep -qF "$MARKER" "$ETC/$conf"; then rm -f "$ETC/$conf"; fi
    done
    log "down (logs kept in $STATE/log)"
}

status() { node_idle; }

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
