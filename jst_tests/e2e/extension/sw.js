// The jst end-to-end test extension's service worker.
//
// It does what the JSTorrent extension does (PROTOCOL.md §2.7), step by step, and each
// step is a function on `self` that the test calls through Playwright and whose result
// the test checks: connectNative + handshake, the 5-second /health poll from this
// extension's origin (CORS, no host permissions), the /io WebSocket with HELLO/AUTH,
// TCP connect/send/receive/close, listen/accept, UDP, HTTP file routes, and the
// one-shot sendNativeMessage.

const HOST_NAME = "com.jstorrent.native";
const OP = {
  HELLO: 0x01, SERVER_HELLO: 0x02, AUTH: 0x03, AUTH_RESULT: 0x04, ERROR: 0x7f,
  TCP_CONNECT: 0x10, TCP_CONNECTED: 0x11, TCP_SEND: 0x12, TCP_RECV: 0x13, TCP_CLOSE: 0x14,
  TCP_LISTEN: 0x15, TCP_LISTEN_RESULT: 0x16, TCP_ACCEPT: 0x17, TCP_STOP_LISTEN: 0x18,
  UDP_BIND: 0x20, UDP_BOUND: 0x21, UDP_SEND: 0x22, UDP_RECV: 0x23, UDP_CLOSE: 0x24,
};
const WAIT_MS = 10000;

self.state = { daemon: null, disconnected: false, disconnectError: null,
               healthOk: 0, healthFailed: 0, events: [] };
let nativePort = null;
let healthTimer = null;
const waitingReplies = new Map();
let io = null;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// -- Native Messaging ------------------------------------------------------------------

self.connect = async (installId) => {
  nativePort = chrome.runtime.connectNative(HOST_NAME);
  nativePort.onDisconnect.addListener(() => {
    self.state.disconnected = true;
    self.state.disconnectError = chrome.runtime.lastError ? chrome.runtime.lastError.message : null;
  });
  const daemonInfo = new Promise((resolve) => {
    nativePort.onMessage.addListener((message) => {
      if (message.type === "DaemonInfo" && message.payload && !self.state.daemon) {
        resolve(message.payload);
      } else if (message.id && waitingReplies.has(message.id)) {
        waitingReplies.get(message.id)(message);
        waitingReplies.delete(message.id);
      } else if (message.event) {
        self.state.events.push(message);
      }
    });
  });
  nativePort.postMessage({ op: "handshake", extensionId: chrome.runtime.id, installId,
                           id: crypto.randomUUID() });
  self.state.daemon = await withTimeout(daemonInfo, WAIT_MS, "handshake");
  healthTimer = setInterval(pollHealth, 5000);
  return self.state.daemon;
};

self.request = (message) => {
  const id = crypto.randomUUID();
  const reply = new Promise((resolve) => waitingReplies.set(id, resolve));
  nativePort.postMessage({ ...message, id });
  return withTimeout(reply, WAIT_MS, message.op);
};

self.oneShot = (message) => chrome.runtime.sendNativeMessage(HOST_NAME, message);

self.disconnect = () => {
  clearInterval(healthTimer);
  nativePort.disconnect();
  return true;
};

// -- HTTP ------------------------------------------------------------------------------

function daemonUrl(path) {
  return `http://127.0.0.1:${self.state.daemon.port}${path}`;
}

self.health = async () => {
  const response = await fetch(daemonUrl("/health"));
  return { status: response.status, body: await response.text() };
};

async function pollHealth() {
  // As the extension: a failure (network error or non-2xx) tears the native port down.
  try {
    const response = await fetch(daemonUrl("/health"));
    if (!response.ok) throw new Error(`status ${response.status}`);
    self.state.healthOk += 1;
  } catch (error) {
    self.state.healthFailed += 1;
    self.disconnect();
  }
}

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

self.files = async (rootKey, relativePath, text) => {
  const auth = { "X-JST-Auth": self.state.daemon.token };
  const body = new TextEncoder().encode(text);
  const write = await fetch(daemonUrl(`/write/${rootKey}`), {
    method: "POST", body,
    headers: { ...auth, "X-Path-Base64": b64(relativePath), "X-Offset": "0" },
  });
  const read = await fetch(daemonUrl(`/read/${rootKey}`), {
    headers: { ...auth, "X-Path-Base64": b64(relativePath), "X-Offset": "0",
               "X-Length": String(body.length) },
  });
  const readText = new TextDecoder().decode(await read.arrayBuffer());
  const query = `path=${encodeURIComponent(relativePath)}&root_key=${rootKey}`;
  const stat = await fetch(daemonUrl(`/ops/stat?${query}`), { headers: auth });
  const hash = await fetch(daemonUrl("/hash/sha1"), { method: "POST", body, headers: auth });
  return {
    writeStatus: write.status,
    readStatus: read.status,
    readText,
    stat: await stat.json(),
    daemonSha1: hex(await hash.arrayBuffer()),
    browserSha1: hex(await crypto.subtle.digest("SHA-1", body)),
  };
};

// -- /io ---------------------------------------------------------------------------------

function frame(opcode, requestId, payload = new Uint8Array()) {
  const out = new Uint8Array(8 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, 1);
  view.setUint8(1, opcode);
  view.setUint16(2, 0, true);
  view.setUint32(4, requestId, true);
  out.set(payload, 8);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function u32(value) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, value, true); return b; }
function u16(value) { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, value, true); return b; }
const text = (s) => new TextEncoder().encode(s);
const untext = (b) => new TextDecoder().decode(b);

class Io {
  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.waiters = [];
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      const data = new Uint8Array(event.data);
      const view = new DataView(data.buffer);
      this.frames.push({ opcode: view.getUint8(1), requestId: view.getUint32(4, true),
                         payload: data.subarray(8) });
      this.wake();
    };
    ws.onclose = () => { this.closed = true; this.wake(); };
  }

  static open(port) {
    return withTimeout(new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/io`);
      ws.onopen = () => resolve(new Io(ws));
      ws.onerror = () => reject(new Error("WebSocket failed"));
    }), WAIT_MS, "WebSocket open");
  }

  wake() { for (const w of this.waiters.splice(0)) w(); }

  send(opcode, requestId, payload) { this.ws.send(frame(opcode, requestId, payload)); }

  async expect(test, what) {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const index = this.frames.findIndex(test);
      if (index >= 0) return this.frames.splice(index, 1)[0];
      if (this.closed) throw new Error(`${what}: WebSocket closed`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: not received`);
      await withTimeout(new Promise((r) => this.waiters.push(r)), left, what).catch(() => {});
    }
  }

  socketId(f) { return new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(0, true); }

  async authenticate(token) {
    this.send(OP.HELLO, 1);
    await this.expect((f) => f.opcode === OP.SERVER_HELLO, "SERVER_HELLO");
    this.send(OP.AUTH, 2, concat(new Uint8Array([0]), text(token), new Uint8Array([0, 0])));
    const result = await this.expect((f) => f.opcode === OP.AUTH_RESULT || f.opcode === OP.ERROR, "AUTH_RESULT");
    return result.opcode === OP.AUTH_RESULT && result.payload[0] === 0;
  }

  async receiveBytes(socketId, count) {
    const chunks = [];
    let have = 0;
    while (have < count) {
      const f = await this.expect((g) => g.opcode === OP.TCP_RECV && this.socketId(g) === socketId, "TCP_RECV");
      chunks.push(f.payload.subarray(4));
      have += f.payload.length - 4;
    }
    return concat(...chunks);
  }
}

self.openIo = async () => {
  io = await Io.open(self.state.daemon.port);
  return io.authenticate(self.state.daemon.token);
};

self.tcpEcho = async (port, message, socketId) => {
  io.send(OP.TCP_CONNECT, 0x1000 + socketId, concat(u32(socketId), u16(port), text("127.0.0.1")));
  const connected = await io.expect((f) => f.opcode === OP.TCP_CONNECTED && f.requestId === 0x1000 + socketId, "TCP_CONNECTED");
  if (connected.payload[4] !== 0) return { connected: false };
  io.send(OP.TCP_SEND, 0, concat(u32(socketId), text(message)));
  const echoed = untext(await io.receiveBytes(socketId, text(message).length));
  io.send(OP.TCP_CLOSE, 0, u32(socketId));
  await io.expect((f) => f.opcode === OP.TCP_CLOSE && io.socketId(f) === socketId, "TCP_CLOSE");
  return { connected: true, echoed };
};

self.listen = async (serverId) => {
  io.send(OP.TCP_LISTEN, 0x2000, concat(u32(serverId), u16(0), text("127.0.0.1")));
  const result = await io.expect((f) => f.opcode === OP.TCP_LISTEN_RESULT && f.requestId === 0x2000, "TCP_LISTEN_RESULT");
  const view = new DataView(result.payload.buffer, result.payload.byteOffset);
  return { status: result.payload[4], port: view.getUint16(5, true) };
};

self.acceptAndEcho = async (serverId, expectedLength) => {
  const accept = await io.expect((f) => f.opcode === OP.TCP_ACCEPT && io.socketId(f) === serverId, "TCP_ACCEPT");
  const view = new DataView(accept.payload.buffer, accept.payload.byteOffset);
  const socketId = view.getUint32(4, true);
  const data = await io.receiveBytes(socketId, expectedLength);
  io.send(OP.TCP_SEND, 0, concat(u32(socketId), text("pong:"), data));
  io.send(OP.TCP_STOP_LISTEN, 0, u32(serverId));
  return { socketId, remoteIp: untext(accept.payload.subarray(10)), data: untext(data) };
};

self.udpEcho = async (port, message, socketId) => {
  io.send(OP.UDP_BIND, 0x3000, concat(u32(socketId), u16(0), text("127.0.0.1")));
  const bound = await io.expect((f) => f.opcode === OP.UDP_BOUND && f.requestId === 0x3000, "UDP_BOUND");
  if (bound.payload[4] !== 0) return { bound: false };
  const address = text("127.0.0.1");
  io.send(OP.UDP_SEND, 0, concat(u32(socketId), u16(port), u16(address.length), address, text(message)));
  const got = await io.expect((f) => f.opcode === OP.UDP_RECV && io.socketId(f) === socketId, "UDP_RECV");
  const view = new DataView(got.payload.buffer, got.payload.byteOffset);
  const length = view.getUint16(6, true);
  io.send(OP.UDP_CLOSE, 0, u32(socketId));
  return { bound: true, fromPort: view.getUint16(4, true),
           from: untext(got.payload.subarray(8, 8 + length)),
           data: untext(got.payload.subarray(8 + length)) };
};

// Streaming: the engine side of the player page (player.html), kept in its own file.
importScripts("player.sw.js");
