// A token server written the way Twilio's Voice quickstarts write one: the
// official `twilio` npm package mints an Access Token with a Voice grant per
// request. It is the reference the edgewise provider is benchmarked against
// (test/bench, suite "token"); it answers in the same JSON shape so one load
// generator drives both. Usage: node server.mjs HOST PORT
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import twilio from 'twilio';

const { AccessToken } = twilio.jwt;
const { VoiceGrant } = AccessToken;

const [host, port] = [process.argv[2] ?? '127.0.0.1', Number(process.argv[3] ?? 0)];
const hex = (n) => randomBytes(n).toString('hex');
const accountSid = 'AC' + hex(16);
const keySid = 'SK' + hex(16);
const keySecret = hex(32);
const appSid = 'AP' + hex(16);
const expected = 'Basic ' + Buffer.from('bench:bench-password').toString('base64');
const ttl = 3600;

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/v1/token') {
    res.writeHead(404).end();
    return;
  }
  req.resume();
  req.on('end', () => {
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="ref"' }).end();
      return;
    }
    const token = new AccessToken(accountSid, keySid, keySecret, { identity: 'bench', ttl });
    token.addGrant(new VoiceGrant({ outgoingApplicationSid: appSid, incomingAllow: true }));
    const body = JSON.stringify({
      identity: 'bench',
      token: token.toJwt(),
      ttl,
      expires_at: new Date(Date.now() + ttl * 1000).toISOString(),
      edges: ['ashburn', 'umatilla'],
    });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }).end(body);
  });
});
server.listen(port, host, () => {
  const a = server.address();
  console.log(`listening ${a.address}:${a.port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
