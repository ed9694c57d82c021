// Unit tests of the browser helper under node's test runner, with a fake
// fetch. TestHelperUnderNode (node_test.go) copies edgewise.js next to this
// file as edgewise.mjs and runs `node --test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fetchToken, keepFresh, TokenError } from "./edgewise.mjs";

const answer = (url) => new Response(JSON.stringify({ identity: "alice", token: "tok:" + url, ttl: 600, expires_at: "", edges: ["ashburn"] }), { status: 200 });
const hang = (_url, init) => new Promise((_, reject) =>
  init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
const status = (code) => async () => new Response(JSON.stringify({ error: "status " + code }), { status: code });

function fakeFetch(routes) {
  const calls = [];
  const f = async (url, init) => {
    calls.push({ url, init });
    return (routes[url] ?? (async () => answer(url)))(url, init);
  };
  f.calls = calls;
  return f;
}

test("tries providers in order and returns the first answer", async () => {
  const fetch = fakeFetch({ dead: async () => { throw new TypeError("Failed to fetch"); }, busy: status(503) });
  const a = await fetchToken({ providers: ["dead", "busy", "good", "other"], fetch });
  assert.equal(a.provider, "good");
  assert.equal(a.token, "tok:good");
  assert.deepEqual(fetch.calls.map(c => c.url), ["dead", "busy", "good"]);
  const init = fetch.calls[2].init;
  assert.equal(init.method, "POST");
  assert.equal(init.credentials, "include");
  assert.equal(init.headers["Content-Type"], "application/json");
});

test("per-URL timeout moves on", async () => {
  const fetch = fakeFetch({ slow: hang });
  const t0 = Date.now();
  const a = await fetchToken({ providers: ["slow", "good"], timeoutMs: 100, fetch });
  assert.equal(a.provider, "good");
  assert.ok(Date.now() - t0 < 2000);
});

test("429 fails over, 401 and 403 are final", async () => {
  const fetch = fakeFetch({ limited: status(429), denied: status(401), forbidden: status(403) });
  assert.equal((await fetchToken({ providers: ["limited", "good"], fetch })).provider, "good");
  for (const final of ["denied", "forbidden"]) {
    await assert.rejects(fetchToken({ providers: [final, "good"], fetch }), (e) =>
      e instanceof TokenError && e.status === (final === "denied" ? 401 : 403) && e.failures.length === 1);
  }
});

test("all failing rejects with every reason", async () => {
  const fetch = fakeFetch({ a: status(500), b: hang, c: async () => new Response("not json", { status: 200 }) });
  await assert.rejects(fetchToken({ providers: ["a", "b", "c"], timeoutMs: 50, fetch }), (e) =>
    e instanceof TokenError && e.status === 0 && e.failures.length === 3 && /timed out/.test(e.failures[1]));
  await assert.rejects(fetchToken({ providers: [] }), TokenError);
});

test("basic credentials, UTF-8 safe", async () => {
  const fetch = fakeFetch({});
  await fetchToken({ providers: ["good"], username: "zoë", password: "pä:ss", fetch });
  const auth = fetch.calls[0].init.headers.Authorization;
  assert.equal(Buffer.from(auth.replace("Basic ", ""), "base64").toString("utf8"), "zoë:pä:ss");
});

test("an outer abort stops the search", async () => {
  const ctl = new AbortController();
  const fetch = fakeFetch({ slow: hang });
  setTimeout(() => ctl.abort(), 20);
  await assert.rejects(fetchToken({ providers: ["slow", "good"], signal: ctl.signal, timeoutMs: 5000, fetch }), TokenError);
  assert.deepEqual(fetch.calls.map(c => c.url), ["slow"]);
});

function fakeDevice() {
  const d = {
    listeners: {}, tokens: [], optionUpdates: [], isBusy: false,
    on(e, f) { this.listeners[e] = f; },
    off(e, f) { if (this.listeners[e] === f) delete this.listeners[e]; },
    updateToken(t) { this.tokens.push(t); },
    updateOptions(o) { this.optionUpdates.push(o); },
  };
  return d;
}

test("keepFresh retries with backoff, follows edges when idle, and stops", async () => {
  let n = 0;
  const fetch = async (url) => (++n < 3 ? new Response("{}", { status: 502 }) : answer(url));
  const d = fakeDevice();
  const errors = [];
  let done;
  const refreshed = new Promise(r => { done = r; });
  const stop = keepFresh(d, { providers: ["p"], fetch, retryMs: 10, edges: ["umatilla"],
    onError: e => errors.push(e), onToken: done });
  d.listeners.tokenWillExpire();
  await refreshed;
  assert.equal(errors.length, 2);
  assert.deepEqual(d.tokens, ["tok:p"]);
  assert.deepEqual(d.optionUpdates, [{ edge: ["ashburn"] }]);
  stop();
  assert.equal(d.listeners.tokenWillExpire, undefined);
});

test("keepFresh leaves a busy device's edges alone and stops on a final refusal", async () => {
  const d = fakeDevice();
  d.isBusy = true;
  let got;
  let p = new Promise(r => { got = r; });
  keepFresh(d, { providers: ["p"], fetch: fakeFetch({}), edges: ["umatilla"], onToken: got });
  d.listeners.tokenWillExpire();
  await p;
  assert.deepEqual(d.optionUpdates, []);

  let calls = 0;
  const d2 = fakeDevice();
  p = new Promise(r => { got = r; });
  keepFresh(d2, { providers: ["p"], retryMs: 10, fetch: async () => { calls++; return new Response("{}", { status: 401 }); }, onError: got });
  d2.listeners.tokenWillExpire();
  await p;
  await new Promise(r => setTimeout(r, 50));
  assert.equal(calls, 1);
});
