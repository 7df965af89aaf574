// The engine's side of streaming (STREAMING.md §4), loaded into the service worker by
// one importScripts line in sw.js; it uses sw.js's `io`, `daemonUrl` and byte helpers.
//
// streamStart writes the first pieces of a file (verified writes), opens a stream with
// them as `have`, and returns the URL. Every STREAM_NEED is then queued; once
// streamAnswer(true) is called the engine answers the newest NEED first (a piece
// deadline, as a torrent engine would), writing the missing pieces it covers one by one
// with X-Expected-SHA1, and relies on those verified writes to wake the daemon's
// readers (no STREAM_HAVE).

const STREAM_OP = { OPEN: 0x40, OPENED: 0x41, HAVE: 0x42, NEED: 0x43, CLOSE: 0x44 };
let streamJob = null;

function bytesFromBase64(encoded) {
  const raw = atob(encoded);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) out[i] = raw.charCodeAt(i);
  return out;
}

function kickEngine(job) {
  const wake = job.wake;
  job.wake = null;
  if (wake) wake();
}

async function writeStreamPiece(job, index) {
  const start = index * job.pieceSize;
  const piece = job.data.subarray(start, Math.min(start + job.pieceSize, job.data.length));
  const sha1 = hex(await crypto.subtle.digest("SHA-1", piece));
  const response = await fetch(daemonUrl(`/write/${job.rootKey}`), {
    method: "POST",
    body: piece,
    headers: {
      "X-JST-Auth": self.state.daemon.token, "X-Path-Base64": b64(job.path),
      "X-Offset": String(start), "X-Expected-SHA1": sha1,
    },
  });
  if (!response.ok) throw new Error(`piece ${index}: HTTP ${response.status}`);
  job.written.add(index);
}

async function collectNeeds(job) {
  const isNeed = (f) => f.opcode === STREAM_OP.NEED && io.socketId(f) === job.sid;
  while (streamJob === job && !io.closed) {
    const need = await io.expect(isNeed, "STREAM_NEED").catch(() => null);
    if (!need) continue; // nothing for a while: keep listening
    const view = new DataView(need.payload.buffer, need.payload.byteOffset);
    const range = [Number(view.getBigUint64(4, true)), Number(view.getBigUint64(12, true))];
    job.needs.push(range);
    job.needLog.push(range);
    kickEngine(job);
  }
}

async function answerNeeds(job) {
  while (streamJob === job && !io.closed) {
    if (!job.answering || job.needs.length === 0) {
      await new Promise((resolve) => { job.wake = resolve; });
      continue;
    }
    const [start, end] = job.needs[job.needs.length - 1];
    let index = Math.floor(start / job.pieceSize);
    const last = Math.ceil(end / job.pieceSize);
    while (index < last && job.written.has(index)) index += 1;
    if (index >= last) {
      job.needs.pop(); // this NEED is answered
      continue;
    }
    try {
      await writeStreamPiece(job, index);
    } catch (error) {
      job.errors.push(String(error));
      job.needs.pop();
    }
  }
}

self.streamStart = async (rootKey, path, dataBase64, firstPieces, pieceSize) => {
  const data = bytesFromBase64(dataBase64);
  const job = { sid: 1, rootKey, path, data, pieceSize, written: new Set(), needs: [],
                needLog: [], errors: [], answering: false, wake: null };
  streamJob = job;
  for (let i = 0; i < firstPieces; i += 1) await writeStreamPiece(job, i);
  const have = [[0, Math.min(firstPieces * pieceSize, data.length)]];
  const request = JSON.stringify({ root_key: rootKey, path, length: data.length, have });
  io.send(STREAM_OP.OPEN, 0x4000, concat(u32(job.sid), text(request)));
  const opened = await io.expect(
    (f) => f.opcode === STREAM_OP.OPENED && f.requestId === 0x4000, "STREAM_OPENED");
  if (opened.payload[4] !== 0) throw new Error(untext(opened.payload.subarray(5)));
  collectNeeds(job);
  answerNeeds(job);
  return untext(opened.payload.subarray(5));
};

self.streamAnswer = (on) => {
  const writtenBefore = [...streamJob.written].sort((a, b) => a - b);
  streamJob.answering = on;
  kickEngine(streamJob);
  return writtenBefore;
};

self.streamStatus = () => ({
  written: [...streamJob.written].sort((a, b) => a - b),
  needs: streamJob.needLog,
  errors: streamJob.errors,
});

self.streamClose = () => {
  io.send(STREAM_OP.CLOSE, 0, u32(streamJob.sid));
  streamJob = null;
  return true;
};
