// edgewise.js: fetch Twilio Voice access tokens from redundant edgewise
// token providers and keep a Twilio.Device supplied with fresh ones.
// A dependency-free ES module; see token/README.md for the five lines a page
// needs. Served by every provider at /v1/sdk/edgewise.js; pages may also host
// their own copy so the import itself has no single point of failure.

const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_RETRY_MS = 2000;
const MAX_RETRY_MS = 60000;

// TokenError says why no token could be had. status is the HTTP status of a
// final refusal (401, 403, ...), or 0 when every provider failed; failures
// lists what went wrong with each provider tried.
export class TokenError extends Error {
  constructor(message, { status = 0, provider = "", failures = [] } = {}) {
    super(message);
    this.name = "TokenError";
    this.status = status;
    this.provider = provider;
    this.failures = failures;
  }
}

// A refusal that another replica with the same config would repeat: stop
// instead of spending the other providers' rate-limit budgets. Timeouts,
// overload (429), server errors and network errors move on to the next URL.
function isFinal(status) {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

function basicAuthorization(username, password) {
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return "Basic " + btoa(binary);
}

// Fetch one provider, aborting after timeoutMs (connect, answer and body).
async function fetchOne(url, opts, outer) {
  const controller = new AbortController();
  const abort = () => controller.abort();
  const timer = setTimeout(abort, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  outer?.addEventListener("abort", abort);
  try {
    const headers = { "Content-Type": "application/json", ...(opts.headers ?? {}) };
    if (opts.username !== undefined) {
      headers.Authorization = basicAuthorization(opts.username, opts.password ?? "");
    }
    const fetchImpl = opts.fetch ?? globalThis.fetch;
    const res = await fetchImpl(url, {
      method: "POST",
      mode: "cors",
      cache: "no-store",
      credentials: opts.credentials ?? "include",
      headers,
      body: JSON.stringify(opts.identity ? { identity: opts.identity } : {}),
      signal: controller.signal,
    });
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const why = (data && data.error) || res.statusText || "refused";
      return { status: res.status, error: `${url}: ${res.status} ${why}` };
    }
    if (!data || typeof data.token !== "string" || !Array.isArray(data.edges)) {
      return { status: 0, error: `${url}: answer is not a token` };
    }
    return { answer: { ...data, provider: url } };
  } catch (err) {
    const why = controller.signal.aborted && !outer?.aborted ? "timed out" : String(err?.message ?? err);
    return { status: 0, error: `${url}: ${why}` };
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener("abort", abort);
  }
}

// fetchToken tries options.providers (token URLs, in order of preference)
// one after the other, each with a timeout of options.timeoutMs, and returns
// the first answer: {identity, token, ttl, expires_at, edges, provider}.
// Other options: username/password (HTTP Basic), headers, credentials
// (default "include", for cookies of an authenticating proxy), identity (the
// identity the page expects), signal (an AbortSignal), fetch (for tests).
export async function fetchToken(options = {}) {
  const providers = options.providers ?? [];
  if (providers.length === 0) throw new TokenError("no token providers given");
  const failures = [];
  for (const url of providers) {
    if (options.signal?.aborted) break;
    const r = await fetchOne(url, options, options.signal);
    if (r.answer) return r.answer;
    failures.push(r.error);
    if (isFinal(r.status)) {
      throw new TokenError(r.error, { status: r.status, provider: url, failures });
    }
  }
  throw new TokenError(`no token provider answered: ${failures.join("; ")}`, { failures });
}

function sameList(a, b) {
  return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((v, i) => v === b[i]);
}

// keepFresh refreshes device's token whenever the Twilio Device emits
// tokenWillExpire, fetching with the same options as fetchToken. When
// options.edges (the edge list the Device was built with) is given and a new
// answer carries a different order, the Device is moved to it with
// updateOptions, but only while it has no call. Failed refreshes are retried
// with backoff; options.onToken(answer) and options.onError(err) observe.
// Returns a function that stops it.
export function keepFresh(device, options = {}) {
  let stopped = false;
  let timer = null;
  let retryMs = options.retryMs ?? DEFAULT_RETRY_MS;
  let edges = options.edges ?? null;

  const refresh = async () => {
    clearTimeout(timer);
    timer = null;
    if (stopped) return;
    try {
      const answer = await fetchToken(options);
      if (stopped) return;
      device.updateToken(answer.token);
      retryMs = options.retryMs ?? DEFAULT_RETRY_MS;
      if (edges !== null && !sameList(edges, answer.edges) && !device.isBusy &&
          typeof device.updateOptions === "function") {
        device.updateOptions({ edge: answer.edges });
        edges = answer.edges;
      }
      options.onToken?.(answer);
    } catch (err) {
      if (stopped) return;
      options.onError?.(err);
      if (!(err instanceof TokenError && isFinal(err.status))) {
        timer = setTimeout(refresh, retryMs);
        retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
      }
    }
  };

  device.on("tokenWillExpire", refresh);
  return () => {
    stopped = true;
    clearTimeout(timer);
    (device.off ?? device.removeListener)?.call(device, "tokenWillExpire", refresh);
  };
}
