// The service-mode test extension (SERVICE.md §2): what an extension does with
// `jst service`. Each step is a function on `self` that the test calls through Playwright.
//
// * The endpoint comes from one `sendNativeMessage({type: "get_browser_endpoint"})` and
//   is cached in chrome.storage.local.
// * On (every) service-worker start, `start` connects with the cache, without Native
//   Messaging; only when that fails does it ask once, then connect.
// * `/control` and `/io` are opened directly on the daemon with the cached token.
// * While the daemon stays unreachable it backs off (1, 2, 4 ... 60 s) between asks.
// Native messages sent are counted in chrome.storage.local (`nativeMessages`). The test
// calls these functions through wake.html's messages (see the end of this file).

const HOST_NAME = "com.jstorrent.native";
const OP = { HELLO: 0x01, SERVER_HELLO: 0x02, AUTH: 0x03, AUTH_RESULT: 0x04, ERROR: 0x7f,
             ROOTS_CHANGED: 0xe0, EVENT: 0xe1, OPEN_PICKER: 0xe2 };
const CONNECT_MS = 5000;
const MAX_BACKOFF_MS = 60000;

self.control = null;
self.received = { roots: [], events: [] };

function frame(opcode, requestId, payload = new Uint8Array(0)) {
  const out = new Uint8Array(8 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, 1);
  view.setUint8(1, opcode);
  view.setUint32(4, requestId, true);
  out.set(payload, 8);
  return out;
}

function authPayload(token) {
  const bytes = new TextEncoder().encode(token);
  const out = new Uint8Array(bytes.length + 3);
  out[0] = 0;
  out.set(bytes, 1);
  return out;
}

// HELLO + AUTH on a daemon WebSocket; resolves with the socket once authenticated.
function openAuthenticated(endpoint, path, onFrame) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${endpoint.ip}:${endpoint.port}${path}`);
    ws.binaryType = "arraybuffer";
    const timer = setTimeout(() => { ws.close(); reject(new Error(`${path}: timeout`)); },
                             CONNECT_MS);
    let authed = false;
    ws.onopen = () => ws.send(frame(OP.HELLO, 1));
    ws.onerror = () => { clearTimeout(timer); reject(new Error(`${path}: connection failed`)); };
    ws.onclose = () => { clearTimeout(timer); if (!authed) reject(new Error(`${path}: closed`)); };
    ws.onmessage = (message) => {
      const data = new Uint8Array(message.data);
      const opcode = data[1];
      if (!authed && opcode === OP.SERVER_HELLO) {
        ws.send(frame(OP.AUTH, 2, authPayload(endpoint.token)));
      } else if (!authed && opcode === OP.AUTH_RESULT) {
        clearTimeout(timer);
        if (data[8] !== 0) { reject(new Error(`${path}: auth failed`)); return; }
        authed = true;
        resolve(ws);
      } else if (authed && onFrame) {
        onFrame(opcode, data.slice(8));
      }
    };
  });
}

async function openControl(endpoint) {
  let firstRoots;
  const rootsArrived = new Promise((resolve) => { firstRoots = resolve; });
  const ws = await openAuthenticated(endpoint, "/control", (opcode, payload) => {
    const value = JSON.parse(new TextDecoder().decode(payload));
    if (opcode === OP.ROOTS_CHANGED) { self.received.roots.push(value); firstRoots(value); }
    if (opcode === OP.EVENT) self.received.events.push(value);
  });
  const timeout = new Promise((_, reject) =>
    setTimeout(() => reject(new Error("no roots after AUTH")), CONNECT_MS));
  const roots = await Promise.race([rootsArrived, timeout]);
  return { ws, roots };
}

async function askNative(installId) {
  const { nativeMessages = 0 } = await chrome.storage.local.get("nativeMessages");
  await chrome.storage.local.set({ nativeMessages: nativeMessages + 1 });
  const reply = await chrome.runtime.sendNativeMessage(
    HOST_NAME, { type: "get_browser_endpoint", installId });
  if (!reply || reply.error) throw new Error(reply ? reply.error : "no reply");
  await chrome.storage.local.set({ endpoint: reply });
  return reply;
}

// Connect from the cache; ask Native Messaging once only if that fails.
self.start = async (installId) => {
  const { endpoint: cached } = await chrome.storage.local.get("endpoint");
  let used = "cache";
  let endpoint = cached;
  let control = null;
  if (endpoint) {
    try { control = await openControl(endpoint); } catch (error) { control = null; }
  }
  if (!control) {
    used = "native";
    endpoint = await askNative(installId);
    control = await openControl(endpoint);
  }
  self.control = control;
  const { nativeMessages = 0 } = await chrome.storage.local.get("nativeMessages");
  return { used, port: endpoint.port, roots: control.roots, nativeMessages };
};

// `start`, retried with back-off (1, 2, 4 ... 60 s) until it works or `budgetMs` is spent.
self.startWithBackoff = async (installId, budgetMs) => {
  const deadline = Date.now() + budgetMs;
  let delay = 1000;
  let lastError = null;
  while (Date.now() < deadline) {
    try { return { ok: true, ...(await self.start(installId)) }; }
    catch (error) { lastError = String(error); }
    await new Promise((resolve) => setTimeout(resolve, Math.min(delay, Math.max(0, deadline - Date.now()))));
    delay = Math.min(delay * 2, MAX_BACKOFF_MS);
  }
  const { nativeMessages = 0 } = await chrome.storage.local.get("nativeMessages");
  return { ok: false, lastError, nativeMessages };
};

// The /io WebSocket straight to the daemon with the cached endpoint.
self.ioWorks = async () => {
  const { endpoint } = await chrome.storage.local.get("endpoint");
  const ws = await openAuthenticated(endpoint, "/io");
  ws.close();
  return true;
};

self.nativeMessages = async () =>
  (await chrome.storage.local.get("nativeMessages")).nativeMessages || 0;

self.hasControl = () => self.control !== null;

// The test drives this worker from an extension page (wake.html): a message
// {call, args} runs `self[call](...args)` and answers {ok, value} or {ok: false, error}.
// A message also starts the worker when it is stopped.
chrome.runtime.onMessage.addListener((message, _sender, respond) => {
  if (!message || typeof message.call !== "string" || typeof self[message.call] !== "function") {
    respond({ ok: false, error: "unknown call" });
    return false;
  }
  Promise.resolve()
    .then(() => self[message.call](...(message.args || [])))
    .then((value) => respond({ ok: true, value }), (error) => respond({ ok: false, error: String(error) }));
  return true;
});
