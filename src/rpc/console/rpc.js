// JSON-RPC to the gateway that served this page: calls over HTTP POST with the key as a Bearer
// token, live readings over a WebSocket opened with a one-time ticket (the key never goes into a
// URL). The key lives in sessionStorage: this tab only, no cookie, so no cross-site request can
// use it.

const KEY = 'osgate.key';

/** An error answer of a method (code and message as the gateway gave them). */
export class RpcError extends Error {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

export const METHOD_NOT_FOUND = -32601;

export function key() { return sessionStorage.getItem(KEY); }
export function setKey(k) { sessionStorage.setItem(KEY, k); }
export function clearKey() { sessionStorage.removeItem(KEY); }

let nextId = 1;
let onUnauthorized = () => {};
/** What to do when the gateway refuses the key (HTTP 401): back to the login. */
export function whenUnauthorized(f) { onUnauthorized = f; }

/** Calls `method`; resolves to its result, rejects with an RpcError (code 401: the key). */
export async function call(method, params) {
  const body = {jsonrpc: '2.0', id: nextId++, method};
  if (params !== undefined) body.params = params;
  let resp;
  try {
    resp = await fetch('/', {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + (key() || '')},
      body: JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new RpcError(0, 'the gateway cannot be reached');
  }
  if (resp.status === 401) {
    onUnauthorized();
    throw new RpcError(401, 'the key was refused');
  }
  if (resp.status === 403) {
    throw new RpcError(403, 'this key may not do that');
  }
  let answer;
  try {
    answer = await resp.json();
  } catch (e) {
    throw new RpcError(resp.status, 'HTTP ' + resp.status);
  }
  if (answer.error) {
    throw new RpcError(answer.error.code, answer.error.message, answer.error.data);
  }
  return answer.result;
}

/**
 * A live readings subscription on its own WebSocket: `onBatch({connector, device, readings})`
 * for each batch. It reconnects with backoff (a new ticket each time) until `close()`.
 * `onState(text)` tells the connection's state for the page.
 */
export class Live {
  constructor(params, onBatch, onState) {
    this.params = params;
    this.onBatch = onBatch;
    this.onState = onState || (() => {});
    this.closed = false;
    this.delay = 500;
    this.ws = null;
    this.timer = 0;
    this.open();
  }

  async open() {
    if (this.closed) return;
    let ticket;
    try {
      ticket = await call('session.ticket');
    } catch (e) {
      if (e.code === METHOD_NOT_FOUND) {
        this.onState('live values need a gateway with WebSocket tickets (session.ticket)');
        return;
      }
      this.onState('live values: ' + e.message + '; retrying');
      this.retry();
      return;
    }
    if (this.closed) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(proto + '//' + location.host + '/?ticket=' + encodeURIComponent(ticket.ticket));
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({jsonrpc: '2.0', id: 1, method: 'readings.subscribe', params: this.params}));
    };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      if (msg.id === 1) {
        if (msg.error) {
          this.onState('live values refused: ' + msg.error.message);
        } else {
          this.delay = 500;
          this.onState('');
        }
      } else if (msg.method === 'readings' && msg.params) {
        this.onBatch(msg.params.result);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.closed) return;
      this.onState('live values interrupted; reconnecting');
      this.retry();
    };
  }

  retry() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), this.delay);
    this.delay = Math.min(this.delay * 2, 10000);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
    this.ws = null;
  }
}
