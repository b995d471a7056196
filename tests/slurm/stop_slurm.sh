#!/usr/bin/env bash
# Stop what start_slurm.sh started: slurmd, slurmctld, munged (by their pid files).
set -uo pipefail
STATE=/var/spool/patchbench-slurm
for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
done
echo "stop_slurm.sh: Slurm stopped"
