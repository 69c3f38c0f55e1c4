// The reference for the Worker benchmarks: the design's plain Durable
// Object relay, written for this repository from the design's description
// (one object per user, named by the user, holding that user's WebSockets
// with the Hibernation API and forwarding every message to the user's other
// sockets). No accounts, no framing, no storage: it speaks clipmesh-load's
// baseline protocol (the group is the URL path after /g/, every binary
// message goes verbatim to the group's other sockets), so
// `clipmesh-load --server baseline` drives it unchanged.
import { DurableObject } from "cloudflare:workers";

/**
 * The group a request upgrades into (the path after /g/), or the Response
 * refusing it. The floor (do-relay-floor.mjs) routes the same way.
 */
export function group(req) {
  const m = new URL(req.url).pathname.match(/^\/g\/([A-Za-z0-9_-]{1,64})$/);
  if (!m) return new Response("not found\n", { status: 404 });
  if (req.headers.get("Upgrade") !== "websocket") {
    return new Response("expected a WebSocket upgrade\n", { status: 426 });
  }
  return m[1];
}

export default {
  async fetch(req, env) {
    const g = group(req);
    if (g instanceof Response) return g;
    return env.RELAY.get(env.RELAY.idFromName(g)).fetch(req);
  },
};

export class UserRelay extends DurableObject {
  async fetch() {
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server);
    return new Response(null, { status: 101, webSocket: client });
  }

  webSocketMessage(ws, msg) {
    for (const other of this.ctx.getWebSockets()) {
      if (other === ws) continue;
      try {
        other.send(msg);
      } catch {
        // A socket closing meanwhile: its close handler cleans up.
      }
    }
  }

  webSocketClose(ws, code) {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, "bye");
    } catch {
      // Already closed.
    }
  }
}
