#!/usr/bin/env bash
# A one-node Slurm on this machine, for the tests of `--executor slurm` (tests/test_slurm.py)
# and for trying it by hand: installs Debian's slurm-wlm and munge when missing, writes a
# slurm.conf for this host (every CPU it has, one partition), starts munged, slurmctld and
# slurmd as root and waits until the node takes jobs. Run as root; stop_slurm.sh stops it.
#
# What it writes and starts is this machine's whole Slurm: do not run it on a machine that
# has a Slurm of its own (it exits when a slurmctld is already running and answering).
set -euo pipefail
trap 'echo "start_slurm.sh: failed at line $LINENO ($BASH_COMMAND); logs in $LOGS" >&2' ERR

CONF_DIR=/etc/slurm
STATE=/var/spool/patchbench-slurm
LOGS=/var/log/patchbench-slurm

if [ "$(id -u)" != 0 ]; then
    echo "start_slurm.sh: needs root (it starts munged, slurmctld and slurmd)" >&2
    exit 1
fi
if scontrol ping 2>/dev/null | grep -q "is UP"; then
    echo "start_slurm.sh: a Slurm controller already answers; leaving it as it is"
    exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

host=$(hostname -s)
cpus=$(nproc)
# Slurm refuses a node that reports less memory than slurm.conf says: leave 10% to the system.
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOGS"
# linuxproc and task/none: no cgroups, which containers rarely let a slurmd manage.
# KillWait 5: a cancelled job gets SIGKILL 5 s after SIGTERM (the tests' Ctrl-C waits for it).
cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=patchbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=2
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1024
CONF

mkdir -p /run/munge /var/log/munge /var/lib/munge
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
[ -e /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged --force" || munged --force
slurmctld -c  # -c: a clean state (no jobs of an earlier start)
slurmd

for _ in $(seq 1 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then
        echo "start_slurm.sh: Slurm is up: node $host, $cpus CPUs, partition debug"
        exit 0
    fi
    sleep 0.5
done
echo "start_slurm.sh: the node did not become idle within 30 s; see $LOGS" >&2
sinfo -N -l >&2 || true
exit 1
