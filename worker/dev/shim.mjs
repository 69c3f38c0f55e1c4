// Entry module of the clipmesh Worker: instantiates the wasm-bindgen
// output and exports the fetch and scheduled (cron) handlers and the UserRoom Durable Object
// class (a JS class extending DurableObject that forwards to the Rust one,
// so the runtime sees the Hibernation API handlers on its prototype).
import { DurableObject } from "cloudflare:workers";
import wasmModule from "./index_bg.wasm";
import * as bg from "./index_bg.js";

const instance = new WebAssembly.Instance(wasmModule, { "./index_bg.js": bg });
bg.__wbg_set_wasm(instance.exports);
if (instance.exports.__wbindgen_start) instance.exports.__wbindgen_start();

export default { fetch: bg.fetch, scheduled: bg.scheduled };

export class UserRoom extends DurableObject {
  constructor(state, env) {
    super(state, env);
    this.inner = new bg.UserRoom(state, env);
  }
  fetch(req) { return this.inner.fetch(req); }
  alarm() { return this.inner.alarm(); }
  webSocketMessage(ws, msg) { return this.inner.webSocketMessage(ws, msg); }
  webSocketClose(ws, code, reason, clean) { return this.inner.webSocketClose(ws, code, reason, clean); }
  webSocketError(ws, err) { return this.inner.webSocketError(ws, err); }
}
