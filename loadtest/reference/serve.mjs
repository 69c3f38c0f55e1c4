// Runs the plain Durable Object reference relay (do-relay.mjs) on the same
// local workerd as the clipmesh Worker (miniflare and workerd from
// worker/package-lock.json), on 127.0.0.1:PORT, with in-memory state; with
// --floor, the reference plus the work a clipmesh room must do
// (do-relay-floor.mjs), with its DO and KV state in DIR, as the Worker's.
//
//   node loadtest/reference/serve.mjs --port PORT [--floor --state DIR]
//
// Prints "reference listening on http://127.0.0.1:PORT" once ready. Nothing
// here reaches the internet (no wrangler, cf: false, loopback only).
import { createRequire } from "node:module";
import path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);
const args = process.argv.slice(2);
let port;
let floor = false;
let state;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--port") port = Number(args[++i]);
  else if (args[i] === "--floor") floor = true;
  else if (args[i] === "--state") state = args[++i];
  else {
    console.error(`serve.mjs: unknown argument ${args[i]}`);
    process.exit(2);
  }
}
if (!Number.isInteger(port) || floor !== (state !== undefined)) {
  console.error("usage: serve.mjs --port PORT [--floor --state DIR]");
  process.exit(2);
}
// The Worker's pinned miniflare, so both run on the same workerd.
const require = createRequire(path.join(here, "..", "..", "worker", "package.json"));
const { Miniflare, Log, LogLevel } = await import(require.resolve("miniflare"));

const mf = new Miniflare({
  host: "127.0.0.1",
  cf: false,
  port,
  log: new Log(LogLevel.WARN),
  compatibilityDate: "2025-09-01",
  modules: true,
  scriptPath: path.join(here, floor ? "do-relay-floor.mjs" : "do-relay.mjs"),
  durableObjects: { RELAY: "UserRelay" },
  ...(floor && {
    kvNamespaces: { SESSIONS: "sessions" },
    kvPersist: path.join(state, "kv"),
    durableObjectsPersist: path.join(state, "do"),
  }),
});
await mf.ready;
console.log(`${floor ? "floor" : "reference"} listening on http://127.0.0.1:${port}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
