#!/usr/bin/env bash
# Makes sure Redis answers at REDIS_URL. If nothing answers on a local address and redis-server is
# installed, starts a private one (data and pid under var/redis). Otherwise stops with one line.
set -u
url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=6379
ping() { redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG \
  || (exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
ping && exit 0
case "$host" in 127.0.0.1|localhost|::1) ;; *)
  echo "Redis does not answer at $url: start it there or point REDIS_URL at a running Redis" >&2; exit 1;;
esac
if ! command -v redis-server >/dev/null 2>&1; then
  echo "Redis does not answer at $url and redis-server is not installed: apt-get install redis-server" >&2
  exit 1
fi
mkdir -p var/redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$PWD/var/redis" --save "" \
  --appendonly no --pidfile "$PWD/var/redis/redis.pid" --logfile "$PWD/var/redis/redis.log" >/dev/null
for _ in $(seq 50); do ping && { echo "started a private redis-server on $host:$port (var/redis)"; exit 0; }; sleep 0.1; done
echo "started redis-server on $host:$port but it does not answer; see var/redis/redis.log" >&2
exit 1
