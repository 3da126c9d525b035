# Sourced by the bench scripts: ports and waiting for `keystone serve`.

# A TCP port free on 127.0.0.1 right now, chosen by the kernel (a random
# pick in the ephemeral range can be the local port of a live connection).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_serving PID PORT: return once /health answers on PORT. Fails at once
# with the server's last log lines when PID (the server, or a wrapper of it
# such as /usr/bin/time) has exited, and after 30 s otherwise.
wait_serving() {
  local pid=$1 port=$2 log=${3:-}
  for _ in $(seq 300); do
    curl -sf "127.0.0.1:$port/health" >/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "keystone serve exited before answering on port $port" >&2
      if [ -n "$log" ]; then tail -5 "$log" >&2; fi
      return 1
    fi
    sleep 0.1
  done
  echo "keystone serve did not answer on port $port within 30 s" >&2
  return 1
}
