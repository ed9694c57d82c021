#!/usr/bin/env bash
# make run: the edge simulator (two fake Twilio edges on loopback) and edgewise on
# configs/demo.yaml, in the foreground until Ctrl-C. Nothing leaves the machine.
#
# SECURE=1 (make run SECURE=1) shows Secure Media: edgesim's domain takes only
# TLS and SDES-SRTP, and edgewise speaks both toward it (twilio.transport: tls,
# twilio.media_encryption: srtp) while the softphone stays on plain RTP. The
# two configs are derived from the demo ones into run/; edgewise's own TLS
# certificate is a throwaway self-signed one made with openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p run
simcfg=configs/edgesim.yaml
ewcfg=configs/demo.yaml
if [ "${SECURE:-}" = 1 ]; then
  command -v openssl >/dev/null || { echo "SECURE=1 needs openssl for edgewise's demo certificate"; exit 1; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout run/demo-tls.key -out run/demo-tls.pem 2>/dev/null
  # Each edit must hit, or the demo would quietly run without it.
  edit() { grep -qF -- "$2" "$1" || { echo "run-demo.sh: '$2' not found in $1"; exit 1; }; }
  edit configs/edgesim.yaml 'transports: [udp, tcp]'
  edit configs/edgesim.yaml 'calls:'
  sed -e 's/^transports: \[udp, tcp\]/transports: [udp, tcp, tls]\nca_file: run\/edgesim-ca.pem/' \
      -e 's/^calls:/calls:\n  secure_media: true/' configs/edgesim.yaml >run/edgesim-secure.yaml
  edit configs/demo.yaml '"tcp:127.0.0.1:5060", '
  edit configs/demo.yaml '  dns_server: 127.0.0.1:5353'
  sed -e 's/"tcp:127.0.0.1:5060", /"tcp:127.0.0.1:5060", "tls:127.0.0.1:5061", /' \
      -e 's/^  realm: edgewise.demo/  realm: edgewise.demo\n  tls: {cert_file: ..\/run\/demo-tls.pem, key_file: ..\/run\/demo-tls.key}/' \
      -e 's/^  dns_server: 127.0.0.1:5353.*/  dns_server: 127.0.0.1:5353\n  transport: tls\n  media_encryption: srtp\n  ca_file: edgesim-ca.pem/' \
      configs/demo.yaml >run/demo-secure.yaml
  simcfg=run/edgesim-secure.yaml
  ewcfg=run/demo-secure.yaml
fi
bin/edgesim -c "$simcfg" >run/edgesim.log 2>&1 &
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
if [ "${SECURE:-}" = 1 ]; then
  cat <<MSG
  SECURE=1: edgesim's domain has Secure Media; edgewise registers and calls over
  TLS (127.0.0.1:5061) with SRTP toward it, plain RTP toward your softphone.
  Calls at edgesim show "srtp": true and count what they decrypted:
                curl http://127.0.0.1:9070/v1/calls

MSG
fi
bin/edgewise serve -c "$ewcfg"
