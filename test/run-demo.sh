#!/usr/bin/env bash
# make run: the edge simulator (two fake Twilio edges on loopback) and edgewise on
# configs/demo.yaml, in the foreground until Ctrl-C. Nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p run
bin/edgesim -c configs/edgesim.yaml >run/edgesim.log 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null; wait $sim 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -fsS http://127.0.0.1:9070/healthz >/dev/null 2>&1 && break
  kill -0 $sim 2>/dev/null || { echo "edgesim failed to start:"; cat run/edgesim.log; exit 1; }
  sleep 0.1
done
cat <<MSG

  edgesim   fake Twilio edges ashburn (127.0.1.1-3) and umatilla (127.0.2.1-3),
            DNS on 127.0.0.1:5353, control API http://127.0.0.1:9070 (log: run/edgesim.log)
  edgewise  SIP registrar on udp/tcp 127.0.0.1:5060 and ws://127.0.0.1:8080, realm edgewise.demo;
            WebRTC media for browsers on udp 127.0.0.1:3479

  Point a softphone at 127.0.0.1:5060 as alice / alice-secret (or bob / bob-secret),
  for example:  baresip -e '/uanew <sip:alice@127.0.0.1>;auth_pass=alice-secret'
  A browser softphone (SIP.js, JsSIP): WebSocket ws://127.0.0.1:8080, same users.
  Call out:     dial any number; edgesim answers and echoes the audio.
  Call in:      curl -X POST -d '{"to":"alice"}' http://127.0.0.1:9070/v1/calls
  Status page:  http://127.0.0.1:9060/   (terminal: bin/edgewise status -admin http://127.0.0.1:9060)
  Status JSON:  http://127.0.0.1:9060/v1/status
  Tokens:       POST http://127.0.0.1:9061/v1/token  (HTTP Basic alice:alice-secret)
  Break an edge: curl -X PUT -d '{"mode":"drop"}' http://127.0.0.1:9070/v1/edges/ashburn

MSG
bin/edgewise serve -c configs/demo.yaml
