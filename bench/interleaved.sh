#!/usr/bin/env bash
# Interleaved CPU and throughput of gateway builds side by side, for changes smaller than the
# run-to-run spread of the peer benchmark. Every round runs wrk against the bare Hono proxy, the
# store's floor (bench/memory-floor.mjs or bench/redis-floor.mjs, with FLOOR=1) and each build in
# turn, and reads each process's CPU time from /proc, so that all share the machine's state of that
# moment. On 127.0.0.1 only; everything it starts it stops.
#
#   PEER_BENCH=<the peer benchmark's folder> bash bench/interleaved.sh STORE ROUNDS SCRIPT BUILD...
#     STORE   memory | redis | postgres       SCRIPT  unique.lua (first attempts) | replay.lua
#     BUILD   a built checkout (dist/cli.js); a file BUILD/extra.yaml is appended to its config
#   env: LATENCY_MS (0) backend latency, FLOOR=1 also run the floor, SECONDS_PER_ROUND (3),
#        PIN=1 the proxies on the last CPU, wrk, the backend and Redis on the others (less noise
#        from sharing a core; throughput is then one core's)
#
# Prints, per round, "name req/s gateway-us/req store-us/req" (the store: redis-server, or PostgreSQL's
# postmaster and backends), then the medians and x bare Hono. Needs wrk, redis-server, for postgres
# PostgreSQL's initdb and pg_ctl (run as the postgres user when root; fsync off, as in the tests: it
# measures CPU, not the disk), and the peer benchmark's `npm ci`. Each build gets a database of its
# own, migrated by its own start.
set -euo pipefail
STORE=$1 ROUNDS=$2 SCRIPT=$3; shift 3
PB=${PEER_BENCH:?set PEER_BENCH to the peer benchmark folder}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DUR=${SECONDS_PER_ROUND:-3}
LAST_CPU=$(($(nproc) - 1))
# With PIN=1: "proxy" runs the command on the last CPU, "rest" on the others.
# Always run in the background or in $(...): it replaces its shell, so that $! is the command's pid.
pinned() {
  local where=$1; shift
  if [ -z "${PIN:-}" ]; then exec "$@"; fi
  if [ "$where" = proxy ]; then exec taskset -c "$LAST_CPU" "$@"; fi
  exec taskset -c "0-$((LAST_CPU > 0 ? LAST_CPU - 1 : 0))" "$@"
}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# free_port VAR: a free port in VAR, never one handed out before (the kernel may give back a port it
# has just taken back, and two servers of one run would then share it).
TAKEN=" "
free_port() {
  local p
  while :; do
    p=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
    case "$TAKEN" in *" $p "*) ;; *) TAKEN+="$p "; printf -v "$1" '%s' "$p"; return ;; esac
  done
}
wait_http() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The store's CPU: redis-server, or the postmaster and its children (backends live as long as the
# gateways' pools keep their connections, so a round's delta counts them).
store_cpu() {
  if [ -z "${PG_PM:-}" ]; then cpu "$REDIS_PID"; return; fi
  local total=0 p
  for p in "$PG_PM" $(ps --ppid "$PG_PM" -o pid=); do total=$((total + $(cpu "$p" 2>/dev/null || echo 0))); done
  echo "$total"
}

free_port REDIS_PORT; free_port BACKEND_PORT
pinned rest redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >/dev/null 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
PORT=$BACKEND_PORT LATENCY_MS=${LATENCY_MS:-0} pinned rest node "$PB/src/backend.mjs" >/dev/null 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/ping"
if [ "$STORE" = postgres ]; then
  PG_BIN=""
  command -v pg_ctl >/dev/null || PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/"
  AS=(); PGDIR="$WORK/pg"; mkdir -p "$PGDIR"
  if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); chown postgres "$PGDIR"; chmod 755 "$WORK"; fi
  "${AS[@]}" "${PG_BIN}initdb" -D "$PGDIR/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
  free_port PG_PORT
  (pinned rest "${AS[@]}" "${PG_BIN}pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w start \
    -o "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off") >/dev/null
  PG_PM=$(head -1 "$PGDIR/data/postmaster.pid")
  pg_stop() { "${AS[@]}" "${PG_BIN}pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true; }
  trap 'pg_stop; cleanup' EXIT
fi

NAMES=(); PORTS=(); TARGETS=()
start() { # name port cmd...
  local name=$1 port=$2; shift 2
  pinned proxy "$@" >>"$WORK/$name.log" 2>&1 &
  PIDS+=($!); NAMES+=("$name"); PORTS+=("$port"); TARGETS+=($!)
}
env_for() { echo "PORT=$1 UPSTREAM=http://127.0.0.1:$BACKEND_PORT REDIS_URL=redis://127.0.0.1:$REDIS_PORT"; }
free_port port; start hono "$port" env $(env_for "$port") node "$PB/src/hono-proxy.mjs"
if [ -n "${FLOOR:-}" ]; then
  [ -f "$ROOT/bench/$STORE-floor.mjs" ] || { echo "no floor for $STORE" >&2; exit 2; }
  # Beside the peer benchmark's packages, which its bare proxy runs on.
  ln -s "$PB/node_modules" "$WORK/node_modules"; cp "$ROOT/bench/$STORE-floor.mjs" "$ROOT/bench/floor-proxy.mjs" "$WORK/"
  free_port port; start "$STORE-floor" "$port" env $(env_for "$port") node "$WORK/$STORE-floor.mjs"
fi
i=0
for build in "$@"; do
  i=$((i + 1)); free_port port; cfg="$WORK/gateway-$i.yaml"
  pg="postgres://postgres@127.0.0.1:${PG_PORT:-5432}/g$i"
  [ -n "${PG_PM:-}" ] && "${AS[@]}" "${PG_BIN}createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "g$i"
  printf '%s\n' "listen: { host: 127.0.0.1, port: $port }" "upstream: { url: \"http://127.0.0.1:$BACKEND_PORT\" }" \
    "store: { kind: $STORE, redis: { url: \"redis://127.0.0.1:$REDIS_PORT\", prefix: \"g$i:\" }, postgres: { url: \"$pg\" } }" \
    "admin: { port: false }" >"$cfg"
  [ -f "$build/extra.yaml" ] && cat "$build/extra.yaml" >>"$cfg"
  start "$(basename "$build")" "$port" node "$build/dist/cli.js" serve --config "$cfg"
done
for p in "${PORTS[@]}"; do wait_http "http://127.0.0.1:$p/ping"; done

for round in $(seq "$ROUNDS"); do
  for j in "${!NAMES[@]}"; do
    pid=${TARGETS[$j]}; c0=$(cpu "$pid"); r0=$(store_cpu)
    out=$(cd "$PB/wrk" && RUN_TAG="r$round-$j-$$" pinned rest wrk -t2 -c64 -d"${DUR}s" -s "$SCRIPT" "http://127.0.0.1:${PORTS[$j]}/invoices")
    c1=$(cpu "$pid"); r1=$(store_cpu)
    n=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    awk -v name="${NAMES[$j]}" -v rps="$rps" -v n="$n" -v c="$((c1 - c0))" -v r="$((r1 - r0))" \
      'BEGIN { printf "%s %s %.1f %.1f\n", name, rps, c * 10000 / n, r * 10000 / n }' | tee -a "$WORK/rounds"
  done
done
echo "medians over $ROUNDS rounds (x bare Hono: of req/s):"
node -e '
  const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split(" "));
  const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
  const by = new Map();
  for (const [name, ...v] of rows) { if (!by.has(name)) by.set(name, []); by.get(name).push(v.map(Number)); }
  const hono = med(by.get("hono").map((v) => v[0]));
  for (const [name, vs] of by) {
    const rps = med(vs.map((v) => v[0]));
    console.log(`${name.padEnd(16)} ${String(Math.round(rps)).padStart(7)} req/s  x${(rps / hono).toFixed(2)}  ` +
      `${med(vs.map((v) => v[1])).toFixed(1)} us/req  store ${med(vs.map((v) => v[2])).toFixed(1)} us/req`);
  }' "$WORK/rounds"
