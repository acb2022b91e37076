#!/bin/bash
# A one-node SLURM cluster, started and stopped here, runs a suite as a 3-task job array; the
# shards (taken from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, no --shard given) are merged
# with `normcheck merge` and compared with the unsharded run (docs/scale-out.md).
#
# Usage: check_slurm_array.sh NORMCHECK WORKDIR [SUITE]
# Exit 0 pass, 1 fail, 77 skipped (with the reason printed): not root, or slurm-wlm / munge not
# installed (tools/setup.sh installs them), or the daemons do not come up.
# Prints the timings of each phase ("timing: …").
set -u
normcheck=$(readlink -f "$1")
work=$2
suite=${3:-smoke}

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

[ "$(id -u)" -eq 0 ] || skip "needs root to run slurmctld, slurmd and munged as the test's own daemons"
for b in slurmctld slurmd munged sbatch sinfo; do
  command -v "$b" >/dev/null || skip "$b not found: apt-get install slurm-wlm munge (tools/setup.sh)"
done

rm -rf "$work"
mkdir -p "$work"
T=$(mktemp -d "$work/slurm.XXXXXX")  # mode 700, as munged requires
chmod 700 "$T"
mkdir -p "$T/state" "$T/spool" "$T/munge" "$T/out"
chmod 700 "$T/munge"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
}
trap cleanup EXIT

t_all=$(now)
# munge: a fresh key and socket of our own, so a system munged (if any) is not involved.
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge/munge.key"
munged -F --force --key-file="$T/munge/munge.key" --socket="$T/munge/munge.socket" \
  --pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" --seed-file="$T/munge/munged.seed" \
  >"$T/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$T/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$T/munge/munge.socket" ] || { cat "$T/munged.out" "$T/munge/munged.log" 2>/dev/null; skip "munged did not start"; }

host=$(hostname -s)
port=$((20000 + RANDOM % 20000))
node=$(slurmd -C | head -1 | sed 's/ UpTime=.*//')  # this machine's CPUs, sockets, memory
[[ "$node" == NodeName=* ]] || skip "slurmd -C did not describe this node: $node"
export SLURM_CONF="$T/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=normcheck-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

t=$(now)
slurmctld -D -c -f "$SLURM_CONF" >"$T/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$T/slurmd.out" 2>&1 &
pids+=($!)
up=""
for _ in $(seq 150); do
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1)
  if [ "$state" = "idle" ]; then up=1; break; fi
  sleep 0.2
done
if [ -z "$up" ]; then
  tail -5 "$T/slurmctld.log" "$T/slurmd.log" "$T/slurmctld.out" "$T/slurmd.out" 2>/dev/null
  skip "the one-node cluster did not come up (node state '${state:-none}') within 30 s"
fi
echo "timing: munged + slurmctld + slurmd up in $(elapsed "$t_all") s"

# The job: one shard per array task; the shard comes from SLURM's variables alone.
cat >"$T/job.sh" <<EOF
#!/bin/bash
exec "$normcheck" --suite $suite --json "$T/out/shard-\$SLURM_ARRAY_TASK_ID.json" --quiet
EOF
chmod +x "$T/job.sh"
t=$(now)
sbatch --wait --array=0-2 --job-name=normcheck-array -o "$T/out/task-%a.log" "$T/job.sh" >"$T/sbatch.out" 2>&1
rc=$?
echo "timing: 3-task array (sbatch --wait) $(elapsed "$t") s"
cat "$T/sbatch.out"
[ "$rc" -eq 0 ] || { tail -20 "$T"/out/task-*.log "$T/slurmctld.log"; fail "sbatch --wait exited $rc"; }

t=$(now)
"$normcheck" merge "$T"/out/shard-0.json "$T"/out/shard-1.json "$T"/out/shard-2.json -o "$T/merged.json" \
  >"$T/merge.out" 2>&1 || { cat "$T/merge.out"; fail "normcheck merge failed"; }
echo "timing: merge $(elapsed "$t") s"
t=$(now)
"$normcheck" --suite "$suite" --json "$T/full.json" --quiet >"$T/full.out" 2>&1 || { cat "$T/full.out"; fail "unsharded run failed"; }
echo "timing: unsharded run $(elapsed "$t") s"

# Same cases, same verdicts, same figures; each shard knew its index from SLURM.
python3 - "$T" <<'EOF' || fail "merged report differs from the unsharded run"
import json, pathlib, sys
t = pathlib.Path(sys.argv[1])
full = json.loads((t / "full.json").read_text())
merged = json.loads((t / "merged.json").read_text())
for i in range(3):
    shard = json.loads((t / "out" / f"shard-{i}.json").read_text())
    assert shard["shard"] == {"index": i, "count": 3}, shard["shard"]
    assert shard["cases"] and all(c["index"] % 3 == i for c in shard["cases"])
key = lambda c: (c["descriptor"], c["verdict"], [(x["name"], x["max_abs_err"], x["worst_ratio"]) for x in c["tensors"]])
a, b = [key(c) for c in full["cases"]], [key(c) for c in merged["cases"]]
assert a == b, (len(a), len(b))
assert merged["complete"] and merged["summary"] == full["summary"], (merged["summary"], full["summary"])
print(f"merged {len(b)} cases from 3 array tasks: identical to the unsharded run")
EOF
echo "timing: whole test $(elapsed "$t_all") s"
echo "PASS"
