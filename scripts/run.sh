#!/usr/bin/env bash
# `make run`: the Webex Connect simulator and alert2voice on config.example.yaml, both on loopback.
# Ctrl-C, SIGINT or SIGTERM to this script, or SIGINT to the make that runs it, stops both; the exit status is 0.
# CONFIG, LISTEN and SIM_LISTEN choose another config and addresses (its provider.base_url must be SIM_LISTEN's);
# BIN, another directory holding the alert2voice command.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
CONFIG=${CONFIG:-config.example.yaml}
LISTEN=${LISTEN:-127.0.0.1:9095}
SIM_LISTEN=${SIM_LISTEN:-127.0.0.1:9096}

"$BIN/alert2voice" check-config --config "$CONFIG"

pids=()

# Stop both and wait for them (a second signal meanwhile does not cut the wait short); exit with `status`.
stop() {
  local status=$1 pid
  trap : INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done
  done
  exit "$status"
}

# Whether process $1 has a handler for SIGINT (signal 2: bit 1 of /proc/PID/status SigCgt).
catches_sigint() {
  local key mask
  while read -r key mask; do
    [[ $key == SigCgt: ]] && return $(( (0x$mask & 2) == 0 ))
  done < "/proc/$1/status"
  return 1
} 2>/dev/null

# GNU make does not pass SIGINT on to its recipe (it forwards only SIGTERM): on SIGINT it resets the signal to
# its default action, waits for its children, then kills itself with it (commands.c, fatal_error_signal). A
# terminal's Ctrl-C reaches us anyway (it signals the whole process group), but `kill -INT <make>` does not:
# so while make runs us, its handler going away is our SIGINT. Linux only (/proc); elsewhere, Ctrl-C.
make_pid=
if [[ $(cat "/proc/$PPID/comm" 2>/dev/null) =~ ^g?make$ ]] && catches_sigint "$PPID"; then
  make_pid=$PPID
fi

"$BIN/alert2voice" --log-format text simulator --listen "$SIM_LISTEN" \
  --callback-auth "A2VSIM01=Authorization:Bearer example-callback-token" &
pids+=($!)
trap 'stop 0' INT TERM  # once pids has one: bash before 4.4 calls an empty "${pids[@]}" unbound under set -u

cat <<TXT

  alert2voice is starting on http://$LISTEN (simulator on http://$SIM_LISTEN).

  Fire a critical alert for the payments team (in another terminal):
    $BIN/alert2voice fire --token example-webhook-token team=payments severity=critical \\
        alertname=HighErrorRate instance=api-1:8080 --annotation summary="5xx above 5% on checkout"

  See the simulated call and its SSML:    curl -s http://$SIM_LISTEN/_sim/calls
  Every request the simulator received:   curl -s http://$SIM_LISTEN/_sim/requests
  Pages and their calls:                  curl -s http://$LISTEN/api/v1/pages
  Metrics:                                curl -s http://$LISTEN/metrics | grep '^alert2voice_'
  Stop both:                              Ctrl-C

TXT
"$BIN/alert2voice" --log-format text serve --config "$CONFIG" --listen "$LISTEN" &
pids+=($!)

# Until one of them ends by itself (its status is ours) or make is interrupted; a trapped signal ends the
# `wait` at once.
while true; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      status=0
      wait "$pid" || status=$?
      stop "$status"
    fi
  done
  if [[ -n $make_pid ]] && ! catches_sigint "$make_pid"; then
    stop 0
  fi
  sleep 0.5 &
  wait $! || true
done
