// The "floor" for the Worker benchmarks: the plain Durable Object reference
// (do-relay.mjs) plus the work issue 14 requires of every room, each done
// the cheapest way a Worker can do it, in plain JavaScript. It is not a
// relay: it checks no session and frames nothing. It measures what the
// runtime charges for the required work itself, so that the benchmarks can
// tell that cost from the clipmesh Worker's own (its wasm, workers-rs and
// the room core). Written for this repository; no code copied.
//
// The required work, as the clipmesh Worker does it and as done here:
// - the session check on connect: one KV read in the Worker before the
//   upgrade goes to the room (the Worker's session cache; here a key that
//   is never there, so no D1 read follows);
// - the newest clip and its sequence number in DO storage: read when the
//   object is built, sent to a joining socket, and written after a publish
//   by a zero-delay timer shared by the publishes before it runs (group
//   commit, as the Worker); the publisher's `Ack` (the clipmesh frame, 14
//   bytes) is sent after the write is issued, so the output gate holds it
//   until the clip is stored;
// - the wake counter: read and written when the object is built;
// - metering: messages and bytes counted in memory, written to DO storage
//   by an alarm 5 s after the first uncounted one (the Worker's flush when
//   the floor was measured; it now comes up to 1 s earlier, at random;
//   either is shorter than the local runtime's idle eviction). A clipmesh device's
//   `Hello` counts as a message, and the baseline protocol has none, so a
//   connect counts here.
// Speaks clipmesh-load's baseline protocol (the group is the URL path after
// /g/; every binary message, a clipmesh `Publish` frame, goes verbatim to
// the group's other sockets), so `clipmesh-load --server baseline` drives
// it unchanged; the tool counts the `Ack`s and ignores them otherwise.
import { DurableObject } from "cloudflare:workers";
import { group } from "./do-relay.mjs";

/** Usage counts stay in memory at most this long. */
const FLUSH_MS = 5_000;

export default {
  async fetch(req, env) {
    const g = group(req);
    if (g instanceof Response) return g;
    // The session check's KV read.
    await env.SESSIONS.get(`session:${g}`);
    return env.RELAY.get(env.RELAY.idFromName(g)).fetch(req);
  },
};

export class UserRelay extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.clip = null;
    this.seq = 0;
    // Publishers waiting for the clip write: socket, Publish id, seq.
    this.held = [];
    this.messages = 0;
    this.bytes = 0;
    this.flushArmed = false;
    this.write = () => this.writeClip();
    ctx.blockConcurrencyWhile(async () => {
      const got = await ctx.storage.get(["clip", "seq", "wakes"]);
      this.clip = got.get("clip") ?? null;
      this.seq = got.get("seq") ?? 0;
      ctx.storage.put("wakes", (got.get("wakes") ?? 0) + 1);
    });
  }

  async fetch() {
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server);
    if (this.clip !== null) server.send(this.clip);
    this.count(0);
    return new Response(null, { status: 101, webSocket: client });
  }

  count(bytes) {
    this.messages += 1;
    this.bytes += bytes;
    if (!this.flushArmed) {
      this.flushArmed = true;
      this.ctx.storage.setAlarm(Date.now() + FLUSH_MS);
    }
  }

  webSocketMessage(ws, msg) {
    if (typeof msg === "string") return;
    this.count(msg.byteLength);
    for (const other of this.ctx.getWebSockets()) {
      if (other === ws) continue;
      try {
        other.send(msg);
      } catch {
        // A socket closing meanwhile: its close handler cleans up.
      }
    }
    this.seq += 1;
    this.clip = msg;
    if (this.held.length === 0) setTimeout(this.write, 0);
    const id = msg.byteLength >= 6 ? new DataView(msg).getUint32(2) : 0;
    this.held.push([ws, id, this.seq]);
  }

  writeClip() {
    this.ctx.storage.put({ clip: this.clip, seq: this.seq });
    for (const [ws, id, seq] of this.held) {
      const ack = new DataView(new ArrayBuffer(14));
      ack.setUint8(0, 1); // protocol version
      ack.setUint8(1, 0x05); // Ack
      ack.setUint32(2, id);
      ack.setBigUint64(6, BigInt(seq));
      try {
        ws.send(ack.buffer);
      } catch {
        // Closed meanwhile.
      }
    }
    this.held = [];
  }

  async alarm() {
    const usage = (await this.ctx.storage.get("usage")) ?? { messages: 0, bytes: 0 };
    usage.messages += this.messages;
    usage.bytes += this.bytes;
    this.messages = 0;
    this.bytes = 0;
    this.flushArmed = false;
    await this.ctx.storage.put("usage", usage);
  }

  webSocketClose(ws, code) {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, "bye");
    } catch {
      // Already closed.
    }
  }
}
