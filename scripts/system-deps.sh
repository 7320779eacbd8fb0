#!/usr/bin/env bash
# Installs the system tools Netmon uses when they are missing and we may (root + apt-get):
# tshark/dumpcap/capinfos (capture), redis-server (private Redis when none answers),
# chromium (browser test), nmap and hping3 (bench/make_labeled_capture.sh; NETMON_SKIP_BENCH_TOOLS=1
# skips them). Without root or apt-get it says what is missing and carries on:
# capture falls back to demo mode and the tests that need a tool skip with the reason.
set -u
need=()
command -v dumpcap >/dev/null 2>&1 || need+=(tshark)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "${NETMON_SKIP_BROWSER:-0}" != "1" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
if [ "${NETMON_SKIP_BENCH_TOOLS:-0}" != "1" ]; then
  command -v nmap >/dev/null 2>&1 || need+=(nmap)
  command -v hping3 >/dev/null 2>&1 || need+=(hping3)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  # dumpcap without setuid: root captures anyway; other users get the wireshark group or setcap.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
      || echo "warning: could not install ${need[*]} (apt-get failed); continuing without them" >&2
  fi
else
  echo "note: missing ${need[*]}; install with: sudo apt-get install ${need[*]}" >&2
fi
exit 0
