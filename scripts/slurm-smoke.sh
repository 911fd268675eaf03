#!/usr/bin/env bash
# Local Slurm smoke test of partitioned extraction (docs/scale-out.md). It
#   1. installs Debian's slurm-wlm and munge with apt-get when they are missing,
#   2. starts a private one-node cluster on this machine: munged, slurmctld and slurmd, with their
#      config, key, state and logs in a temp dir and on non-default ports (SLURM_CONF points the
#      client commands at it, so a real cluster's /etc/slurm is neither read nor touched),
#   3. submits scripts/slurm/extract.sbatch as a PARTS-task array (--part auto/PARTS) into one
#      cache, plus `headstart cache merge` as a job depending on it (afterok), as the docs show,
#   4. extracts the same data with the same settings in one process into another cache, and
#   5. checks every shard-*.safetensors is byte-identical (cmp) and `cache info --json` agrees.
# The daemons it started are always stopped on exit (by pid, from their own pid files), and the
# temp dir is removed after a PASS (keep=1 keeps it; a FAIL keeps it for the logs).
#
# Usage: scripts/slurm-smoke.sh [key=value ...]
#   keys: data backbone weights views seed parts shard_size keep
# Defaults: data=data/flowers backbone=resnet18 views=1 seed=43 parts=3 shard_size=256 keep=0
#   (a small shard size gives several shards, so the merge's order across shards is checked).
# Offline, with the shared files next to the repository:
#   scripts/slurm-smoke.sh data=../shared/data/flowers backbone=efficientnet-lite0 \
#     weights=../shared/weights/efficientnet-lite0/efficientnet-lite0-57934424.pth
# Environment: HEADSTART=/path/to/headstart (default: $CARGO_TARGET_DIR or target, /release/headstart,
#   built with cargo when missing); SMOKE_PORT=16817 (slurmctld's port; slurmd uses the next one).
# Needs root or sudo: apt-get, and slurmd runs as root to start jobs as the submitting user.
set -euo pipefail
cd "$(dirname "$0")/.."
data=data/flowers backbone=resnet18 weights="" views=1 seed=43 parts=3 shard_size=256 keep=0
for kv in "$@"; do
  case "$kv" in
    data=*|backbone=*|weights=*|views=*|seed=*|parts=*|shard_size=*|keep=*) declare "$kv" ;;
    *) echo "unknown setting '$kv' (expected key=value with key in: data backbone weights views seed parts shard_size keep)" >&2; exit 2 ;;
  esac
done
export PATH=$PATH:/usr/sbin:/sbin   # munged, slurmctld and slurmd live in /usr/sbin

say() { printf '\n== %s\n' "$*"; }
die() { echo "slurm-smoke: $*" >&2; exit 1; }

# --- root or sudo -----------------------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then SUDO=()
elif command -v sudo >/dev/null; then SUDO=(sudo); sudo -v || die "sudo is needed (apt-get, slurmd)"
else die "run as root, or install sudo: apt-get and slurmd need root"; fi

# --- the binary -------------------------------------------------------------------------------
if [ -n "${HEADSTART:-}" ]; then
  bin=$(command -v "$HEADSTART") || die "HEADSTART=$HEADSTART: not found"
else
  bin=${CARGO_TARGET_DIR:-target}/release/headstart
  if [ ! -x "$bin" ]; then say "building headstart"; cargo build --release -p headstart; fi
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")   # jobs must find it too
help=$("$bin" extract --help 2>&1) || true
grep -q -- '--part' <<<"$help" \
  || die "$bin has no 'extract --part': rebuild it (cargo build --release -p headstart)"
if [ ! -d "$data" ]; then
  if [ "$data" = data/flowers ]; then "$bin" fetch-flowers --out "$data"
  else die "$data: no such folder"; fi
fi

# --- Slurm and munge --------------------------------------------------------------------------
if ! command -v munged >/dev/null || ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || die "Slurm or munge missing and no apt-get: install slurmctld, slurmd, the Slurm client commands and munge"
  say "installing slurm-wlm and munge"
  # On a systemd host the packages also start munge.service (harmless: we run our own munged on our
  # own socket); slurmd/slurmctld.service fail to start without /etc/slurm/slurm.conf, which is fine.
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
fi
slurm_version=$(slurmctld -V | awk '{print $NF}')   # "slurm-wlm 22.05.8" on Debian 12
munge_version=$(munged -V 2>&1 | awk '{print $1; exit}')
major=${slurm_version%%.*} minor=${slurm_version#*.}; minor=${minor%%.*}
# select/cons_tres exists since 19.05; older releases have cons_res.
if [ "$major" -gt 19 ] || { [ "$major" = 19 ] && [ "$minor" -ge 5 ]; }; then select=select/cons_tres
else select=select/cons_res; fi
echo "Slurm $slurm_version ($select), $munge_version"

# --- private cluster --------------------------------------------------------------------------
# munged refuses a socket, key or log whose directories (up to /) belong to another user than
# root or itself, or lack o+x: so the tree is root's, in /tmp (root's, sticky), mode 755; the
# caches and job logs go to work/, owned by the user who submits the jobs.
tmp=$("${SUDO[@]}" mktemp -d /tmp/headstart-slurm-smoke.XXXXXX)
S=$tmp/slurm M=$tmp/munge W=$tmp/work
"${SUDO[@]}" mkdir -p "$S"/etc "$S"/state "$S"/spool "$S"/log "$S"/run "$M"
"${SUDO[@]}" chmod 755 "$tmp" "$S" "$M"
"${SUDO[@]}" install -d -o "$(id -u)" -g "$(id -g)" "$W" "$W/logs"
node=$(hostname -s 2>/dev/null || hostname)
port=${SMOKE_PORT:-16817}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 20); do port_busy "$port" || port_busy $((port + 1)) || break; port=$((port + 2)); done

names=() pidfiles=()   # every daemon this script launched, and its pid file
jobs_submitted=0
stop_daemon() { # name pidfile: TERM the pid in the pid file if it is still that daemon, then KILL
  local name=$1 file=$2 pid="" i
  for i in 1 2 3; do [ -s "$file" ] && break; sleep 1; done
  pid=$("${SUDO[@]}" cat "$file" 2>/dev/null || true)
  [ -n "$pid" ] || { echo "  $name: no pid file ($file), nothing to stop"; return; }
  [ "$("${SUDO[@]}" cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || { echo "  $name (pid $pid) already gone"; return; }
  "${SUDO[@]}" kill "$pid" 2>/dev/null || true
  for i in $(seq 20); do "${SUDO[@]}" kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if "${SUDO[@]}" kill -0 "$pid" 2>/dev/null; then "${SUDO[@]}" kill -KILL "$pid" 2>/dev/null || true; fi
  echo "  stopped $name (pid $pid)"
}
cleanup() {
  local rc=$? i
  set +e
  if [ "$jobs_submitted" = 1 ]; then   # every job in this private cluster is ours
    squeue -h -o %A 2>/dev/null | sort -u | xargs -r scancel 2>/dev/null
    for i in $(seq 30); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
  fi
  if [ ${#names[@]} -gt 0 ]; then
    say "stopping the daemons this script started"
    for ((i = ${#names[@]} - 1; i >= 0; i--)); do stop_daemon "${names[i]}" "${pidfiles[i]}"; done
  fi
  if [ "$rc" = 0 ] && [ "$keep" = 0 ]; then "${SUDO[@]}" rm -rf "$tmp"
  else echo "kept $tmp (logs: $W/logs, daemons: $S/log, $M/munged.log)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "munged"
"${SUDO[@]}" dd if=/dev/urandom of="$M/munge.key" bs=1024 count=1 status=none
"${SUDO[@]}" chmod 400 "$M/munge.key"
names+=(munged) pidfiles+=("$M/munged.pid")
"${SUDO[@]}" munged --key-file="$M/munge.key" --socket="$M/munge.socket" --pid-file="$M/munged.pid" \
  --log-file="$M/munged.log" --seed-file="$M/munged.seed" \
  || { "${SUDO[@]}" cat "$M/munged.log" >&2; die "munged did not start"; }
echo ok | munge -S "$M/munge.socket" | unmunge -S "$M/munge.socket" >/dev/null \
  || die "munge round trip failed (see $M/munged.log)"

cpus=$(nproc)
cat > "$W/slurm.conf" <<EOF
# One-node cluster for scripts/slurm-smoke.sh: no cgroups, no accounting, everything under $tmp.
ClusterName=headstart-smoke
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$M/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=$select
SelectTypeParameters=CR_CPU
ReturnToService=2
# Keep finished jobs visible to scontrol for an hour (the checks read their state).
MinJobAge=3600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=smoke Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
"${SUDO[@]}" cp "$W/slurm.conf" "$S/etc/slurm.conf"
export SLURM_CONF=$S/etc/slurm.conf

say "slurmctld and slurmd on $node (127.0.0.1:$port, :$((port + 1)))"
names+=(slurmctld) pidfiles+=("$S/run/slurmctld.pid")
"${SUDO[@]}" slurmctld -f "$SLURM_CONF" || die "slurmctld did not start (see $S/log/slurmctld.log)"
names+=(slurmd) pidfiles+=("$S/run/slurmd.pid")
"${SUDO[@]}" slurmd -f "$SLURM_CONF" || die "slurmd did not start (see $S/log/slurmd.log)"
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -N -n "$node" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 1
done
if [ "$state" != idle ]; then
  sinfo -R >&2 || true
  "${SUDO[@]}" tail -n 20 "$S/log/slurmctld.log" "$S/log/slurmd.log" >&2 || true
  die "node $node is '${state:-unknown}', not idle, after 60 s"
fi
sinfo

# --- the array job and the dependent merge ----------------------------------------------------
cache=$W/cache-parts single=$W/cache-single
export DATA=$data CACHE=$cache PARTS=$parts BACKBONE=$backbone WEIGHTS=$weights VIEWS=$views SEED=$seed
export HEADSTART=$bin EXTRA_ARGS="--shard-size $shard_size"
cpt=$((cpus / parts)); [ "$cpt" -ge 1 ] || cpt=1
say "sbatch --array=0-$((parts - 1)) scripts/slurm/extract.sbatch (PARTS=$parts, $cpt CPU each)"
t0=$(date +%s)
jobs_submitted=1
jid=$(sbatch --parsable --array=0-$((parts - 1)) --cpus-per-task="$cpt" --chdir="$PWD" \
  --output="$W/logs/extract-%A_%a.out" --export=ALL scripts/slurm/extract.sbatch)
jid=${jid%%;*}
mid=$(sbatch --parsable --dependency=afterok:"$jid" --kill-on-invalid-dep=yes --job-name=headstart-merge \
  --chdir="$PWD" --output="$W/logs/merge-%j.out" --export=ALL \
  --wrap "$(printf '%q ' "$bin" cache merge "$cache")")
mid=${mid%%;*}
echo "array job $jid, merge job $mid (afterok:$jid)"
last=""
while [ -n "$(squeue -h -j "$jid,$mid" 2>/dev/null)" ]; do
  now=$(squeue -h -j "$jid,$mid" -o '%i:%t' | sort | tr '\n' ' ')
  [ "$now" != "$last" ] && echo "  $(date +%T) $now" && last=$now
  sleep 2
done
t1=$(date +%s)
echo "array + merge: $((t1 - t0)) s"

results=()
check() { # name, then a command: PASS when it succeeds
  local name=$1; shift
  if "$@"; then results+=("PASS  $name"); else results+=("FAIL  $name"); fi
}
job_ok() { # every record of job $1 COMPLETED with exit code 0:0
  local lines; lines=$(scontrol -o show job "$1" 2>/dev/null) || return 1
  [ -n "$lines" ] || return 1
  echo "$lines" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^(JobId|ArrayTaskId|JobState|ExitCode)=/) printf "  %s", $i; print "" }'
  ! echo "$lines" | grep -v 'JobState=COMPLETED .*ExitCode=0:0' | grep -q .
}
summary() {
  say "summary (Slurm $slurm_version, $parts parts, $backbone, views=$views, seed=$seed, shard_size=$shard_size)"
  printf '%s\n' "${results[@]}"
  if printf '%s\n' "${results[@]}" | grep -q '^FAIL'; then echo "FAIL"; exit 1; fi
}
echo "array tasks:"; check "all $parts array tasks completed (exit 0)" job_ok "$jid"
echo "merge job:"; check "merge job ran after them and succeeded" job_ok "$mid"
failed=0; printf '%s\n' "${results[@]}" | grep -q '^FAIL' && failed=1
for f in "$W"/logs/*.out; do echo "--- $(basename "$f")"; tail -n $((failed ? 25 : 4)) "$f"; done
[ "$failed" = 0 ] || summary   # no point extracting again: the Slurm side failed

# --- one process, same settings ---------------------------------------------------------------
say "single-process extract"
wflag=(); [ -n "$weights" ] && wflag=(--weights "$weights")
t0=$(date +%s)
check "single-process extract succeeded" \
  "$bin" extract "$data" --cache "$single" --backbone "$backbone" "${wflag[@]}" --views "$views" \
  --seed "$seed" --shard-size "$shard_size"
echo "single process: $(( $(date +%s) - t0 )) s"

# --- compare ----------------------------------------------------------------------------------
say "comparing $cache with $single"
shards() { (cd "$1" 2>/dev/null && ls shard-*.safetensors 2>/dev/null) || true; }
same_shards() {
  local a b f ok=0; a=$(shards "$cache"); b=$(shards "$single")
  echo "  merged: $(echo "$a" | wc -w) shards, single: $(echo "$b" | wc -w) shards"
  if [ -z "$a" ] || [ "$a" != "$b" ]; then echo "  shard lists differ"; return 1; fi
  for f in $a; do cmp "$cache/$f" "$single/$f" || ok=1; done
  return $ok
}
check "every shard-*.safetensors byte-identical (cmp)" same_shards
field() { # json-file key
  if command -v python3 >/dev/null; then python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' "$1" "$2"
  else sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p" "$1" | head -n 1; fi
}
same_info() {
  "$bin" cache info "$cache" --json > "$W/info-parts.json" && "$bin" cache info "$single" --json > "$W/info-single.json" || return 1
  local k a b ok=0
  for k in rows shards images_ok images_skipped; do
    a=$(field "$W/info-parts.json" $k) b=$(field "$W/info-single.json" $k)
    echo "  $k: merged $a, single $b"
    if [ -z "$a" ] || [ "$a" = None ] || [ "$a" != "$b" ]; then ok=1; fi
  done
  return $ok
}
check "cache info --json: rows, shards, images_ok, images_skipped equal" same_info
check "cache verify (merged)" "$bin" cache verify "$cache"
sums() { (cd "$1" && sha256sum shard-*.safetensors manifest.json); }
idempotent() {
  local before; before=$(sums "$cache") || return 1
  "$bin" cache merge "$cache" >/dev/null && [ "$(sums "$cache")" = "$before" ]
}
check "merge again: succeeds and changes nothing" idempotent
if cmp -s "$cache/manifest.json" "$single/manifest.json"; then manifest="identical"; else manifest="differs"; fi

results+=("info  manifest.json of the merged and the single-process cache: $manifest")
summary
echo "PASS"
