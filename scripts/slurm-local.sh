#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine, for fkp's Slurm tests and benchmarks:
# munged, slurmctld and slurmd run as root, directly (no systemd), with every CPU of
# the machine and its memory in one partition `debug`. Job states come from squeue and
# scontrol (there is no slurmdbd, so no sacct).
#
#   sudo bash scripts/slurm-local.sh          start it (installs slurm-wlm and munge if missing)
#   bash scripts/slurm-local.sh --stop        stop it
#
# Idempotent: a cluster already answering `sinfo` is left as it is.
set -euo pipefail

STATE=/var/lib/fkp-slurm
CONF=/etc/slurm/slurm.conf

stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    pkill -x munged 2>/dev/null || true
}

if [[ "${1:-}" == "--stop" ]]; then
    stop
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

if sinfo -h -o %t 2>/dev/null | grep -qE 'idle|mix|alloc'; then
    echo "slurm: already running"
    exit 0
fi
stop

host=$(hostname -s)
cpus=$(nproc)
# The node as slurmd sees it (sockets, cores, threads), less RealMemory, set below.
node=$(slurmd -C | head -1 | sed -E 's/ RealMemory=[0-9]+//')
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge "$STATE"/{ctld,d} /var/log/slurm
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
runuser -u munge -- munged --force

cat >"$CONF" <<CONF
# Written by fkp's scripts/slurm-local.sh: one node, this machine.
ClusterName=fkp-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Finished jobs stay visible to scontrol for 10 minutes (no accounting database here).
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
$node RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld
slurmd
for _ in $(seq 1 30); do
    if sinfo -h -o %t 2>/dev/null | grep -qE 'idle|mix|alloc'; then
        echo "slurm: node $host up with $cpus CPUs, ${mem_mb} MB"
        exit 0
    fi
    sleep 1
done
echo "slurm did not come up; see /var/log/slurm/" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
