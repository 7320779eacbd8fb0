#!/usr/bin/env bash
# Builds a labeled capture on loopback with real tools, so anyone can reproduce the detection
# evaluations (issue 4, packet ranking; issue 12, incidents):
#
#   bench/make_labeled_capture.sh OUTDIR [--seconds N] [--train-seconds M] [--victim shared|separate]
#                                        [--attacks a,b,c]
#
# writes into OUTDIR:
#   benign.pcap  benign traffic only, M seconds (default 120): for training
#   test.pcap    the same benign traffic with the attacks, one after another: N/8 s of benign
#                lead-in, then per attack N/8 s of attack and N/16 s of benign traffic (N default
#                40: 5 s and 3 s, about 100 s with all 12 attacks)
#   labels.csv   frame,label,attack: frames numbered from 1 as in Wireshark, label 1 = attack,
#                attack = its name below, empty when benign
#   phases.csv   attack,address,start,end: when each attack ran (epoch seconds)
#   attacks.csv  attack,kind,attacker,targets,start,end: the incident kind each attack should
#                become (issue 12's vocabulary) and what it targets, HOSTS[:PORTS]/PROTO with
#                HOSTS an address or a range A-B
#
# Attacks (--attacks picks some, in the order given; default all, in this order):
#   scan_syn         nmap -sS, 10,000 ports                      -> port_scan
#   syn_flood        hping3 -S to :8081, one every 1 ms          -> syn_flood
#   scan_connect     nmap -sT, 5,000 ports                       -> port_scan
#   udp_flood        hping3 --udp to :5353, one every 1 ms       -> udp_flood
#   http_flood       HTTP GETs, at most 300/s                    -> request_flood
#   scan_udp         nmap -sU, 1,000 ports                       -> port_scan
#   icmp_flood       hping3 --icmp, one every 1 ms (bounded count) -> icmp_flood
#   brute_force      30 logins/s on the SSH-like :2222, each a banner, a password line, close
#                                                                -> brute_force
#   scan_xmas        nmap -sX, 5,000 ports                       -> port_scan
#   slowloris        300 HTTP connections held open with a partial request, a header line
#                    every 2 s                                   -> slow_connections
#   bulk_transfer    64 MB on one connection in 4 s to a discard listener on :40404
#                                                                -> large_transfer
#   horizontal_scan  nmap -sS -p 22 across 127.0.0.100-199       -> horizontal_scan
#
# --victim: the attacks target the servers the benign clients use (shared, the default), or the
# same services on another address that only the attackers talk to (separate). Shared is the
# harder case: benign conversations with the victim run beside the attacks on it (the features key
# host statistics by client and service so that the victim's state does not leak into them).
# Then:
#
#   .venv/bin/python manage.py evaluate_detector --train OUTDIR/benign.pcap \
#       --test OUTDIR/test.pcap --labels OUTDIR/labels.csv
#   .venv/bin/python bench/incidents.py OUTDIR            # incidents through the real pipeline
#
# Needs root (capture on lo, raw sockets for nmap -sS and hping3), nmap, hping3, dumpcap and tshark
# (scripts/system-deps.sh installs them), python3 and a Redis on 127.0.0.1:6379 (benign clients send
# PING/GET/SET to its database NETMON_BENCH_REDIS_DB, default 11; without Redis that part of the
# benign traffic is missing).
#
# Addresses (all of 127.0.0.0/8 is local, so every client binds its own source address):
#   127.0.0.2       servers: python3 -m http.server :8081, DNS-like UDP responder :5353,
#                   SSH-like TCP server :2222 (bench/label_capture.py servers), a discard
#                   listener :40404; Redis is 127.0.0.1
#   127.0.0.3       the same servers, attacked instead of 127.0.0.2 with --victim separate
#   127.0.0.10-14   benign web browsing      127.0.0.15-17  benign DNS-like queries
#   127.0.0.18-20   benign interactive SSH-like sessions
#   127.0.0.1:61010-61019  benign Redis clients (Redis in protected mode accepts only 127.0.0.1)
#   attackers, one address each: 127.0.0.65 scan_connect, .66 scan_syn, .67 syn_flood,
#   .68 http_flood, .69 udp_flood, .70 scan_udp, .71 scan_xmas, .72 icmp_flood, .73 brute_force,
#   .74 slowloris, .75 bulk_transfer, .76 horizontal_scan (targets 127.0.0.100-199, where nothing
#   listens on port 22: they answer with resets)
# The capture filter keeps only packets from or to these client addresses and the Redis clients'
# ports (other loopback traffic on the machine stays out), and labels follow from them: a packet
# from or to an attacker's address is that attack's packet, the victim's replies included
# (bench/label_capture.py label).
#
# Bounded rates (no --flood): scans at their port count per attack phase, hping3 every 1 ms, the
# HTTP flood at most 300 requests/s. With the defaults: about 4 minutes in all. The scans skip
# ports that something on this machine listens on at every address (0.0.0.0, ::). NETMON_BENCH_SEED
# (default 1) seeds the benign clients. The files appear in OUTDIR only when the run completes;
# Ctrl-C or a failure stops every process the script started and leaves nothing half-written.
set -euo pipefail

all_attacks=(scan_syn syn_flood scan_connect udp_flood http_flood scan_udp icmp_flood brute_force
  scan_xmas slowloris bulk_transfer horizontal_scan)
usage() {
  echo "usage: $0 OUTDIR [--seconds N] [--train-seconds M] [--victim shared|separate] [--attacks a,b,c]" >&2
  echo "  N >= 16 (default 40), M >= 16 (default 120); attacks: $(IFS=,; echo "${all_attacks[*]}")" >&2
  exit 2
}

outdir=""
seconds=40
train_seconds=120
victim_mode=shared
attack_list=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) [ $# -ge 2 ] || usage; seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --train-seconds) [ $# -ge 2 ] || usage; train_seconds="$2"; shift 2 ;;
    --train-seconds=*) train_seconds="${1#*=}"; shift ;;
    --attacks) [ $# -ge 2 ] || usage; attack_list="$2"; shift 2 ;;
    --attacks=*) attack_list="${1#*=}"; shift ;;
    --victim) [ $# -ge 2 ] || usage; victim_mode="$2"; shift 2 ;;
    --victim=*) victim_mode="${1#*=}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) usage ;;
    *) [ -z "$outdir" ] || usage; outdir="$1"; shift ;;
  esac
done
[ -n "$outdir" ] || usage
case "$seconds" in ''|*[!0-9]*) usage ;; esac
[ "$seconds" -ge 16 ] || usage
case "$train_seconds" in ''|*[!0-9]*) usage ;; esac
[ "$train_seconds" -ge 16 ] || usage
case "$victim_mode" in shared|separate) ;; *) usage ;; esac
attacks=("${all_attacks[@]}")
if [ -n "$attack_list" ]; then
  IFS=, read -r -a attacks <<<"$attack_list"
  for attack in "${attacks[@]}"; do
    [[ " ${all_attacks[*]} " == *" $attack "* ]] || { echo "unknown attack: $attack" >&2; usage; }
  done
fi
redis_db="${NETMON_BENCH_REDIS_DB:-11}"
case "$redis_db" in ''|*[!0-9]*) echo "NETMON_BENCH_REDIS_DB must be a number" >&2; exit 2 ;; esac

declare -A package=([nmap]=nmap [hping3]=hping3 [dumpcap]=tshark [tshark]=tshark [capinfos]=tshark
  [python3]=python3 [ss]=iproute2)
missing=()
packages=()
for tool in nmap hping3 dumpcap tshark capinfos python3 ss; do
  command -v "$tool" >/dev/null 2>&1 || { missing+=("$tool"); packages+=("${package[$tool]}"); }
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing ${missing[*]}: install with: sudo apt-get install -y $(printf '%s\n' "${packages[@]}" | sort -u | paste -sd' ' -) (or run scripts/system-deps.sh as root)" >&2
  exit 1
fi
if [ "$(id -u)" != "0" ]; then
  echo "needs root: capture on lo and raw packets for nmap -sS / hping3; run: sudo $0 $*" >&2
  exit 1
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
helper=(python3 "$here/label_capture.py")
server=127.0.0.2
victim=$server
[ "$victim_mode" = shared ] || victim=127.0.0.3
http_port=8081
udp_port=5353
ssh_port=2222
discard_port=40404
http_src=(127.0.0.10 127.0.0.11 127.0.0.12 127.0.0.13 127.0.0.14)
dns_src=(127.0.0.15 127.0.0.16 127.0.0.17)
ssh_src=(127.0.0.18 127.0.0.19 127.0.0.20)
# Redis (protected mode) only accepts 127.0.0.1: its clients bind fixed source ports instead, 5 each
redis_src=(127.0.0.1:61010 127.0.0.1:61015)
redis_ports="61010-61019"
declare -A attacker=(
  [scan_syn]=127.0.0.66 [scan_connect]=127.0.0.65 [syn_flood]=127.0.0.67
  [udp_flood]=127.0.0.69 [http_flood]=127.0.0.68 [scan_udp]=127.0.0.70 [scan_xmas]=127.0.0.71
  [icmp_flood]=127.0.0.72 [brute_force]=127.0.0.73 [slowloris]=127.0.0.74 [bulk_transfer]=127.0.0.75
  [horizontal_scan]=127.0.0.76
)
# the incident each attack should become (issue 12's vocabulary)
declare -A kind=(
  [scan_syn]=port_scan [scan_connect]=port_scan [scan_udp]=port_scan [scan_xmas]=port_scan
  [horizontal_scan]=horizontal_scan [syn_flood]=syn_flood [udp_flood]=udp_flood
  [icmp_flood]=icmp_flood [http_flood]=request_flood [brute_force]=brute_force
  [slowloris]=slow_connections [bulk_transfer]=large_transfer
)

phase=$((seconds / 8))      # length of each attack, and of the benign lead-in
gap=$(((seconds + 8) / 16)) # benign traffic between attacks
syn_ports=10000
connect_ports=5000
udp_scan_ports=1000
xmas_ports=5000
horizontal_range=127.0.0.100-199
horizontal_port=22
bulk_mb=64
bulk_seconds=$((phase < 4 ? phase : 4))
declare -A targets=(
  [scan_syn]="$victim:1-$syn_ports/tcp" [scan_connect]="$victim:1-$connect_ports/tcp"
  [scan_udp]="$victim:1-$udp_scan_ports/udp" [scan_xmas]="$victim:1-$xmas_ports/tcp"
  [horizontal_scan]="127.0.0.100-127.0.0.199:$horizontal_port/tcp" [syn_flood]="$victim:$http_port/tcp"
  [udp_flood]="$victim:$udp_port/udp" [icmp_flood]="$victim/icmp" [http_flood]="$victim:$http_port/tcp"
  [brute_force]="$victim:$ssh_port/tcp" [slowloris]="$victim:$http_port/tcp"
  [bulk_transfer]="$victim:$discard_port/tcp"
)

mkdir -p "$outdir"
work="$(mktemp -d "${TMPDIR:-/tmp}/netmon-labeled.XXXXXX")"
services=() # long-running background processes (servers, benign clients)
child=""    # the foreground step in progress (sleep, capture, attack), run in the background
capture_pid=""
cleanup() {
  local pid
  for pid in $child $capture_pid "${services[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $child $capture_pid "${services[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run CMD...: in the background and wait for it, so that a signal to this script is handled at once
run() {
  local rc=0
  "$@" &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}

filter=""
for addr in "${http_src[@]}" "${dns_src[@]}" "${ssh_src[@]}"; do
  filter+="${filter:+ or }host $addr"
done
for attack in "${attacks[@]}"; do
  addr="${attacker[$attack]}"
  filter+="${filter:+ or }host $addr"
done
filter+=" or (host 127.0.0.1 and tcp port 6379 and tcp portrange $redis_ports)"

# ports open on every address (0.0.0.0, ::, *) belong to others: the scans leave them alone
exclude="$( (ss -Hltn; ss -Hlun) | awk '{print $4}' | sed -nE 's/^(0\.0\.0\.0|\*|\[::\]):([0-9]+)$/\2/p' \
  | sort -un | paste -sd, -)"
exclude_opt=()
[ -z "$exclude" ] || exclude_opt=(--exclude-ports "$exclude")

now() { date +%s.%N; }
started=$SECONDS
log() { printf '[%3d s] %s\n' $((SECONDS - started)) "$*"; }

# start_capture FILE: dumpcap in the background; returns once it writes
start_capture() {
  dumpcap -q -P -i lo -B 64 -f "$filter" -w "$1" 2>"$work/dumpcap.log" &
  capture_pid=$!
  local _
  for _ in $(seq 50); do
    [ -s "$1" ] && { sleep 0.3; return 0; }
    kill -0 "$capture_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "dumpcap did not start: $(cat "$work/dumpcap.log")" >&2
  exit 1
}

stop_capture() {
  sleep 0.5 # the last replies
  kill -INT "$capture_pid" 2>/dev/null || true
  wait "$capture_pid" 2>/dev/null || true
  capture_pid=""
}

"${helper[@]}" site "$work/www"
for addr in $(printf '%s\n' "$server" "$victim" | sort -u); do
  log "servers on $addr: HTTP :$http_port, DNS-like UDP :$udp_port, SSH-like :$ssh_port"
  python3 -m http.server "$http_port" --bind "$addr" --directory "$work/www" >/dev/null 2>&1 &
  services+=($!)
  "${helper[@]}" servers --addr "$addr" --udp-port "$udp_port" --ssh-port "$ssh_port" >/dev/null &
  services+=($!)
  "${helper[@]}" discard --addr "$addr" --port "$discard_port" >/dev/null &
  services+=($!)
  run "${helper[@]}" wait --addr "$addr" --tcp "$http_port" "$ssh_port" "$discard_port"
done
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "warning: no Redis on 127.0.0.1:6379: the benign traffic has no Redis part" >&2
fi

"${helper[@]}" benign --server "$server" --http-port "$http_port" --udp-port "$udp_port" \
  --ssh-port "$ssh_port" --http-src "${http_src[@]}" --redis-src "${redis_src[@]}" \
  --dns-src "${dns_src[@]}" --ssh-src "${ssh_src[@]}" --seed "${NETMON_BENCH_SEED:-1}" \
  --redis-db "$redis_db" >/dev/null &
services+=($!)
run sleep 3 # sessions open before the capture starts

log "benign capture: ${train_seconds} s -> $outdir/benign.pcap"
start_capture "$work/benign.pcap"
run sleep "$train_seconds"
stop_capture

log "test capture: benign traffic with ${#attacks[@]} attacks on $victim of ${phase} s, ${gap} s apart -> $outdir/test.pcap"
echo "attack,address,start,end" >"$work/phases.csv"
echo "attack,kind,attacker,targets,start,end" >"$work/attacks.csv"
start_capture "$work/test.pcap"
run sleep "$phase"
for attack in "${attacks[@]}"; do
  addr="${attacker[$attack]}"
  t0="$(now)"
  case "$attack" in
    scan_syn)
      run timeout $((phase + 10)) nmap -sS -Pn -n -T4 --max-retries 1 -S "$addr" -e lo \
        -p "1-$syn_ports" "${exclude_opt[@]}" --max-rate $((syn_ports / phase)) "$victim" >/dev/null \
        || echo "warning: nmap -sS failed or timed out" >&2 ;;
    scan_connect) # -S with a local address: nmap binds it (and warns that it does)
      run timeout $((phase + 10)) nmap -sT -Pn -n -T4 --max-retries 1 -S "$addr" -e lo \
        -p "1-$connect_ports" "${exclude_opt[@]}" --max-rate $((connect_ports / phase)) "$victim" \
        >/dev/null 2>&1 || echo "warning: nmap -sT failed or timed out" >&2 ;;
    syn_flood)
      run timeout -s INT "$phase" hping3 -q -S -p "$http_port" -a "$addr" -i u1000 "$victim" \
        >/dev/null 2>&1 || true ;;
    udp_flood)
      run timeout -s INT "$phase" hping3 -q --udp -p "$udp_port" -a "$addr" -d 120 -i u1000 "$victim" \
        >/dev/null 2>&1 || true ;;
    http_flood)
      run "${helper[@]}" http-flood --src "$addr" --host "$victim" --port "$http_port" --rate 300 \
        --threads 8 --seconds "$phase" ;;
    scan_udp)
      run timeout $((phase + 10)) nmap -sU -Pn -n -T4 --max-retries 0 -S "$addr" -e lo \
        -p "1-$udp_scan_ports" "${exclude_opt[@]}" --max-rate $((udp_scan_ports / phase)) "$victim" \
        >/dev/null || echo "warning: nmap -sU failed or timed out" >&2 ;;
    scan_xmas)
      run timeout $((phase + 10)) nmap -sX -Pn -n -T4 --max-retries 1 -S "$addr" -e lo \
        -p "1-$xmas_ports" "${exclude_opt[@]}" --max-rate $((xmas_ports / phase)) "$victim" \
        >/dev/null || echo "warning: nmap -sX failed or timed out" >&2 ;;
    icmp_flood)
      run timeout -s INT "$phase" hping3 -q --icmp -a "$addr" -d 56 -i u1000 -c $((phase * 1000)) \
        "$victim" >/dev/null 2>&1 || true ;;
    brute_force)
      run "${helper[@]}" brute-force --src "$addr" --host "$victim" --port "$ssh_port" --rate 30 \
        --seconds "$phase" ;;
    slowloris)
      run "${helper[@]}" slowloris --src "$addr" --host "$victim" --port "$http_port" --connections 300 \
        --open-rate 150 --interval 2 --seconds "$phase" ;;
    bulk_transfer)
      run "${helper[@]}" bulk --src "$addr" --host "$victim" --port "$discard_port" \
        --megabytes "$bulk_mb" --seconds "$bulk_seconds" ;;
    horizontal_scan)
      run timeout $((phase + 10)) nmap -sS -Pn -n -T4 --max-retries 1 -S "$addr" -e lo \
        -p "$horizontal_port" --max-rate 50 "$horizontal_range" >/dev/null \
        || echo "warning: nmap -sS (horizontal) failed or timed out" >&2 ;;
  esac
  t1="$(now)"
  printf '%s,%s,%s,%s\n' "$attack" "$addr" "$t0" "$t1" >>"$work/phases.csv"
  printf '%s,%s,%s,%s,%s,%s\n' "$attack" "${kind[$attack]}" "$addr" "${targets[$attack]}" "$t0" "$t1" \
    >>"$work/attacks.csv"
  printf '  %-15s from %-11s %5.1f s\n' "$attack" "$addr" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
  run sleep "$gap"
done
stop_capture

log "labeling"
run "${helper[@]}" label --pcap "$work/test.pcap" --phases "$work/phases.csv" --out "$work/labels.csv"
chmod a+r "$work/benign.pcap" "$work/test.pcap"
mv "$work/benign.pcap" "$work/test.pcap" "$work/labels.csv" "$work/phases.csv" "$work/attacks.csv" "$outdir/"
for f in benign test; do
  printf '%-11s %8d packets %6.1f MB\n' "$f.pcap" "$(capinfos -T -r -c -M "$outdir/$f.pcap" | cut -f2)" \
    "$(awk -v n="$(stat -c %s "$outdir/$f.pcap")" 'BEGIN { print n / 1e6 }')"
done
echo "done in $((SECONDS - started)) s; evaluate with:"
echo "  .venv/bin/python manage.py evaluate_detector --train $outdir/benign.pcap --test $outdir/test.pcap --labels $outdir/labels.csv"
echo "  .venv/bin/python bench/incidents.py $outdir"
