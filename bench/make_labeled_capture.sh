#!/usr/bin/env bash
# Builds a labeled capture on loopback with real tools, so anyone can reproduce the detection
# evaluation (issue 4):
#
#   bench/make_labeled_capture.sh OUTDIR [--seconds N] [--victim shared|separate]
#
# writes OUTDIR/benign.pcap (benign traffic only, N seconds: for training), OUTDIR/test.pcap (the
# same benign traffic plus five attacks, about N seconds), OUTDIR/labels.csv (frame,label,attack:
# frames numbered from 1 as in Wireshark, label 1 = attack, attack = scan_syn | scan_connect |
# syn_flood | udp_flood | http_flood, empty when benign) and OUTDIR/phases.csv (when each attack
# ran). --victim: the attacks target the servers the benign clients use (shared, the default), or
# the same services on another address that only the attackers talk to (separate). Shared is the
# harder case: benign conversations with the victim run beside the attacks on it (the features key
# host statistics by client and service so that the victim's state does not leak into them).
# Then:
#
#   .venv/bin/python manage.py evaluate_detector --train OUTDIR/benign.pcap \
#       --test OUTDIR/test.pcap --labels OUTDIR/labels.csv
#
# Needs root (capture on lo, raw sockets for nmap -sS and hping3), nmap, hping3, dumpcap and tshark
# (scripts/system-deps.sh installs them), python3 and a Redis on 127.0.0.1:6379 (benign clients send
# PING/GET/SET to its db 14; without Redis that part of the benign traffic is missing).
#
# Addresses (all of 127.0.0.0/8 is local, so every client binds its own source address):
#   127.0.0.2       servers: python3 -m http.server :8081, DNS-like UDP responder :5353,
#                   SSH-like TCP server :2222 (bench/label_capture.py servers); Redis is 127.0.0.1
#   127.0.0.3       the same servers, attacked instead of 127.0.0.2 with --victim separate
#   127.0.0.10-14   benign web browsing      127.0.0.15-17  benign DNS-like queries
#   127.0.0.18-20   benign interactive SSH-like sessions
#   127.0.0.1:61010-61019  benign Redis clients (Redis in protected mode accepts only 127.0.0.1)
#   127.0.0.66 nmap -sS (scan_syn)   127.0.0.65 nmap -sT (scan_connect)   127.0.0.67 hping3 -S
#   (syn_flood)   127.0.0.69 hping3 --udp (udp_flood)   127.0.0.68 HTTP GET flood (http_flood)
# The capture filter keeps only packets from or to these client addresses and the Redis clients'
# ports (other loopback traffic on the machine stays out), and labels follow from them: a packet
# from or to an attacker's address is that attack's packet, the victim's replies included
# (bench/label_capture.py label).
#
# Bounded rates (no --flood): scans at 10,000 and 5,000 ports per attack phase, hping3 every
# 1 ms, the HTTP flood at most 300 requests/s. With the default N=40: about 100 s in all, ~9k
# benign packets for training (8 MB), ~85k test packets (22 MB). The scans skip ports that
# something on this machine listens on at every address (0.0.0.0, ::). NETMON_BENCH_SEED (default
# 1) seeds the benign clients. The files appear in OUTDIR only when the run completes; Ctrl-C or
# a failure stops every process the script started and leaves nothing half-written.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [--seconds N] [--victim shared|separate]   (N >= 16, default 40)" >&2; exit 2; }

outdir=""
seconds=40
victim_mode=shared
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) [ $# -ge 2 ] || usage; seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
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
case "$victim_mode" in shared|separate) ;; *) usage ;; esac

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
  echo "needs root: capture on lo and raw packets for nmap -sS / hping3; run: sudo $0 $outdir --seconds $seconds --victim $victim_mode" >&2
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
http_src=(127.0.0.10 127.0.0.11 127.0.0.12 127.0.0.13 127.0.0.14)
dns_src=(127.0.0.15 127.0.0.16 127.0.0.17)
ssh_src=(127.0.0.18 127.0.0.19 127.0.0.20)
# Redis (protected mode) only accepts 127.0.0.1: its clients bind fixed source ports instead, 5 each
redis_src=(127.0.0.1:61010 127.0.0.1:61015)
redis_ports="61010-61019"
declare -A attacker=(
  [scan_syn]=127.0.0.66 [scan_connect]=127.0.0.65 [syn_flood]=127.0.0.67
  [udp_flood]=127.0.0.69 [http_flood]=127.0.0.68
)
attacks=(scan_syn syn_flood scan_connect udp_flood http_flood)

phase=$((seconds / 8))      # length of each attack, and of the benign lead-in
gap=$(((seconds + 8) / 16)) # benign traffic between attacks
syn_ports=10000
connect_ports=5000

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
for addr in "${http_src[@]}" "${dns_src[@]}" "${ssh_src[@]}" "${attacker[@]}"; do
  filter+="${filter:+ or }host $addr"
done
filter+=" or (host 127.0.0.1 and tcp port 6379 and tcp portrange $redis_ports)"

# ports open on every address (0.0.0.0, ::, *) belong to others: the scans leave them alone
exclude="$(ss -Hltn | awk '{print $4}' | sed -nE 's/^(0\.0\.0\.0|\*|\[::\]):([0-9]+)$/\2/p' \
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
  run "${helper[@]}" wait --addr "$addr" --tcp "$http_port" "$ssh_port"
done
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "warning: no Redis on 127.0.0.1:6379: the benign traffic has no Redis part" >&2
fi

"${helper[@]}" benign --server "$server" --http-port "$http_port" --udp-port "$udp_port" \
  --ssh-port "$ssh_port" --http-src "${http_src[@]}" --redis-src "${redis_src[@]}" \
  --dns-src "${dns_src[@]}" --ssh-src "${ssh_src[@]}" --seed "${NETMON_BENCH_SEED:-1}" >/dev/null &
services+=($!)
run sleep 3 # sessions open before the capture starts

log "benign capture: ${seconds} s -> $outdir/benign.pcap"
start_capture "$work/benign.pcap"
run sleep "$seconds"
stop_capture

log "test capture: benign traffic with ${#attacks[@]} attacks on $victim of ${phase} s, ${gap} s apart -> $outdir/test.pcap"
echo "attack,address,start,end" >"$work/phases.csv"
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
  esac
  t1="$(now)"
  printf '%s,%s,%s,%s\n' "$attack" "$addr" "$t0" "$t1" >>"$work/phases.csv"
  printf '  %-12s from %-10s %5.1f s\n' "$attack" "$addr" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
  run sleep "$gap"
done
stop_capture

log "labeling"
run "${helper[@]}" label --pcap "$work/test.pcap" --phases "$work/phases.csv" --out "$work/labels.csv"
chmod a+r "$work/benign.pcap" "$work/test.pcap"
mv "$work/benign.pcap" "$work/test.pcap" "$work/labels.csv" "$work/phases.csv" "$outdir/"
for f in benign test; do
  printf '%-11s %8d packets %6.1f MB\n' "$f.pcap" "$(capinfos -T -r -c -M "$outdir/$f.pcap" | cut -f2)" \
    "$(awk -v n="$(stat -c %s "$outdir/$f.pcap")" 'BEGIN { print n / 1e6 }')"
done
echo "done in $((SECONDS - started)) s; evaluate with:"
echo "  .venv/bin/python manage.py evaluate_detector --train $outdir/benign.pcap --test $outdir/test.pcap --labels $outdir/labels.csv"
