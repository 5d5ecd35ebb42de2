#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for running the pipeline's Slurm profile locally.
#
#   scripts/local_slurm.sh up DIR           install slurm-wlm and munge when absent (apt-get, as root),
#                                           write DIR/slurm.conf, start munged, slurmctld and slurmd,
#                                           wait until the node accepts jobs
#   scripts/local_slurm.sh down DIR         stop the daemons that `up DIR` started, by their PIDs
#   scripts/local_slurm.sh run DIR CMD...   up, run CMD with SLURM_CONF=DIR/slurm.conf, down;
#                                           exits with CMD's status
#
# Clients (sbatch, squeue, snakemake --executor slurm) find the cluster through
# SLURM_CONF=DIR/slurm.conf. Everything (config, state, logs, munge key and socket) lives in DIR,
# except /etc/slurm/slurm.conf: while the cluster is up it links to DIR/slurm.conf, because job
# steps (srun inside a job) read that path; the slurm-jobstep executor drops SLURM_* variables,
# SLURM_CONF included. `up` refuses to run where /etc/slurm/slurm.conf already exists.
# The node has this machine's CPUs and memory and LOCAL_SLURM_GPUS (default 2) GPUs whose device
# files stand in for /dev/nvidia*: jobs may request --gpus and get CUDA_VISIBLE_DEVICES, no device.
# Two partitions hold the node: local_gpu (the default) and local_cpu, for the profile's GPU and
# CPU partitions.
# Ports: LOCAL_SLURM_PORT (slurmctld, default 16817) and the next one (slurmd).
set -euo pipefail

SYSTEM_CONF=/etc/slurm/slurm.conf

usage() {
    sed -n '2,8p' "$0" >&2
    exit 2
}

die() {
    echo "local_slurm: $*" >&2
    exit 1
}

install_slurm() {
    local missing=()
    for tool in munged slurmctld slurmd sbatch squeue; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    [[ $(id -u) -eq 0 ]] || die "${missing[*]} not found; install slurm-wlm and munge (needs root)"
    echo "local_slurm: installing slurm-wlm and munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    local dir=$1 node hardware gpus port
    node=$(hostname -s)
    # CPUs, sockets, cores, threads and RealMemory as slurmd detects them
    hardware=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')
    gpus=${LOCAL_SLURM_GPUS:-2}
    port=${LOCAL_SLURM_PORT:-16817}
    mkdir -p "$dir"/{state,spool,log,munge,dev}
    chmod 755 "$dir/munge"
    [[ -f "$dir/munge/munge.key" ]] || mungekey --create --keyfile="$dir/munge/munge.key" >/dev/null
    # Slurm drops GPUs without device files; these stand in for /dev/nvidia*.
    for ((i = 0; i < gpus; i++)); do ln -sfn /dev/null "$dir/dev/gpu$i"; done
    cat >"$dir/slurm.conf" <<EOF
ClusterName=localcluster
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd.daemon.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=86400
SchedulerType=sched/backfill
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 $hardware Gres=gpu:$gpus State=UNKNOWN
PartitionName=local_gpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=local_cpu Nodes=$node MaxTime=INFINITE State=UP
EOF
    if ((gpus > 0)); then
        echo "Name=gpu File=$dir/dev/gpu[0-$((gpus - 1))]" >"$dir/gres.conf"
    else
        : >"$dir/gres.conf"
    fi
}

start() {
    local dir=$1 name=$2
    shift 2
    setsid "$@" >"$dir/log/$name.out" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
}

wait_for() {
    local what=$1 dir=$2 seconds=$3
    shift 3
    for ((i = 0; i < seconds * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    for log in "$dir"/log/*; do echo "== $log" >&2; tail -n 20 "$log" >&2; done
    die "$what did not come up within ${seconds}s (logs above)"
}

node_ready() {
    local state
    state=$(sinfo --noheader --format=%t | head -n 1) # one line per partition, the same node
    [[ $state == idle* || $state == mix* || $state == alloc* ]]
}

up() {
    local dir
    [[ $(id -u) -eq 0 ]] || die "slurmd must run as root"
    install_slurm
    mkdir -p "$1"
    dir=$(cd "$1" && pwd)
    [[ ! -f "$dir/slurmctld.pid" ]] || die "$dir already holds a running cluster (run: $0 down $dir)"
    trap 'down "$dir"' EXIT # stops what started if the cluster does not come up
    if [[ -L $SYSTEM_CONF && ! -e $SYSTEM_CONF ]]; then
        rm "$SYSTEM_CONF" # left by a cluster whose folder is gone
    fi
    if [[ -e $SYSTEM_CONF ]]; then
        die "$SYSTEM_CONF exists: this machine has a Slurm configuration of its own"
    fi
    write_config "$dir"
    export SLURM_CONF=$dir/slurm.conf
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$SLURM_CONF" "$SYSTEM_CONF"
    start "$dir" munged munged --foreground --force --key-file="$dir/munge/munge.key" \
        --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
        --seed-file="$dir/munge/munged.seed" --log-file="$dir/log/munged.log"
    wait_for munged "$dir" 10 munge --socket="$dir/munge/munge.socket" --string=ping
    start "$dir" slurmctld slurmctld -D -i -f "$SLURM_CONF"
    wait_for slurmctld "$dir" 30 scontrol ping
    start "$dir" slurmd slurmd -D -f "$SLURM_CONF" -N "$(hostname -s)"
    wait_for "the node" "$dir" 30 node_ready
    echo "SLURM_CONF=$SLURM_CONF"
}

down() {
    local dir pid
    dir=$(cd "$1" && pwd)
    for name in slurmd slurmctld munged; do
        [[ -f "$dir/$name.pid" ]] || continue
        pid=$(<"$dir/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for ((i = 0; i < 40; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.25
            done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$dir/$name.pid"
    done
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$dir/slurm.conf" ]]; then
        rm "$SYSTEM_CONF"
    fi
}

[[ $# -ge 2 ]] || usage
command=$1 dir=$2
shift 2
case $command in
up)
    up "$dir"
    trap - EXIT
    ;;
down) down "$dir" ;;
run)
    [[ $# -ge 1 ]] || usage
    up "$dir" >/dev/null
    SLURM_CONF=$(cd "$dir" && pwd)/slurm.conf "$@"
    ;;
*) usage ;;
esac
