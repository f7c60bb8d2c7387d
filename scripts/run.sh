#!/usr/bin/env bash
# `make run`: the Webex Connect simulator and alert2voice on config.example.yaml, both on loopback.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SIM_LISTEN=${SIM_LISTEN:-127.0.0.1:9096}

"$BIN/alert2voice" check-config config.example.yaml

"$BIN/alert2voice" --log-format text simulator --listen "$SIM_LISTEN" \
  --callback-auth "A2VSIM01=Authorization:Bearer example-callback-token" &
sim=$!
trap 'kill "$sim" 2>/dev/null; wait "$sim" 2>/dev/null || true' EXIT INT TERM

cat <<TXT

  alert2voice is starting on http://127.0.0.1:9095 (simulator on http://$SIM_LISTEN).

  Fire a critical alert for the payments team (in another terminal):
    $BIN/alert2voice fire --token example-webhook-token team=payments severity=critical \\
        alertname=HighErrorRate instance=api-1:8080 --annotation summary="5xx above 5% on checkout"

  See the simulated call and its SSML:    curl -s http://$SIM_LISTEN/_sim/calls
  Every request the simulator received:   curl -s http://$SIM_LISTEN/_sim/requests
  Pages and their calls:                  curl -s http://127.0.0.1:9095/api/v1/pages
  Metrics:                                curl -s http://127.0.0.1:9095/metrics | grep '^alert2voice_'

TXT
"$BIN/alert2voice" --log-format text serve --config config.example.yaml
