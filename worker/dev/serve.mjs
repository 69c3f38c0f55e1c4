// Runs the built clipmesh Worker on a local workerd (through miniflare) on
// 127.0.0.1 with persistent D1/KV/R2/Durable Object state.
//
//   node dev/serve.mjs --build DIR --port PORT --state DIR [--var K=V ...]
//                      [--rate-limit N]
//
// --rate-limit N binds the optional rate-limiting binding (RATE_LIMITER,
// N requests per minute per key), as `[[ratelimits]]` in wrangler.toml
// does on Cloudflare; without it the binding is absent (the default).
//
// Nothing here reaches the internet: miniflare is used directly (no
// wrangler telemetry or update checks) and binds loopback only.
import { Miniflare, Log, LogLevel } from "miniflare";
import { readFileSync, mkdirSync, existsSync, writeFileSync, readdirSync } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";

const args = process.argv.slice(2);
const opt = { vars: {} };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "--build") opt.build = args[++i];
  else if (a === "--port") opt.port = Number(args[++i]);
  else if (a === "--state") opt.state = args[++i];
  else if (a === "--var") {
    const [k, ...v] = args[++i].split("=");
    opt.vars[k] = v.join("=");
  } else if (a === "--rate-limit") opt.rateLimit = Number(args[++i]);
  else {
    console.error(`serve.mjs: unknown argument ${a}`);
    process.exit(2);
  }
}
if (!opt.build || !opt.state || !Number.isInteger(opt.port)) {
  console.error("usage: serve.mjs --build DIR --port PORT --state DIR [--var K=V]");
  process.exit(2);
}
mkdirSync(opt.state, { recursive: true });
// The fake pre-login salt secret is made once per state dir and kept.
const secretFile = path.join(opt.state, "fake-salt-secret");
if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString("hex"), { mode: 0o600 });
const secret = readFileSync(secretFile, "utf8").trim();
// So is the OPAQUE seed (protocol v2 accounts): 32 random bytes, hex.
const seedFile = path.join(opt.state, "opaque-seed");
if (!existsSync(seedFile)) writeFileSync(seedFile, randomBytes(32).toString("hex"), { mode: 0o600 });
const opaqueSeed = readFileSync(seedFile, "utf8").trim();

function jsModules(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...jsModules(p));
    else if (p.endsWith(".js") && e.name !== "index.js") out.push(p);
  }
  return out;
}

const here = path.dirname(new URL(import.meta.url).pathname);
const options = {
  host: "127.0.0.1",
  // No request.cf fetch from Cloudflare: a fixed placeholder, offline.
  cf: false,
  port: opt.port,
  log: new Log(LogLevel.WARN),
  compatibilityDate: "2025-09-01",
  modulesRoot: opt.build,
  // The entry first, then wasm-bindgen's glue and snippets, and the wasm.
  modules: [
    { type: "ESModule", path: path.join(opt.build, "shim.mjs") },
    ...jsModules(opt.build).map((p) => ({ type: "ESModule", path: p })),
    { type: "CompiledWasm", path: path.join(opt.build, "index_bg.wasm") },
  ],
  d1Databases: { DB: "clipmesh" },
  kvNamespaces: { SESSIONS: "sessions" },
  r2Buckets: { BLOBS: "blobs" },
  durableObjects: { ROOMS: "UserRoom" },
  bindings: { FAKE_SALT_SECRET: secret, OPAQUE_SEED: opaqueSeed, ...opt.vars },
  d1Persist: path.join(opt.state, "d1"),
  kvPersist: path.join(opt.state, "kv"),
  r2Persist: path.join(opt.state, "r2"),
  durableObjectsPersist: path.join(opt.state, "do"),
  // `GET /cdn-cgi/handler/scheduled` runs the cron handler (the sweep) at
  // once, as the tests do; on Cloudflare the cron trigger in wrangler.toml
  // runs it. Loopback only, like everything here.
  unsafeTriggerHandlers: true,
  // The Worker's only outbound request is Turnstile's siteverify (when
  // TURNSTILE_SECRET is set). Nothing leaves the machine: it is answered
  // here the way Cloudflare's published test keys behave (secret
  // 1x0000000000000000000000000000000AA with the dummy token
  // XXXX.DUMMY.TOKEN.XXXX passes, anything else fails), and every other
  // outbound request is refused.
  outboundService: async (req) => {
    if (req.url !== "https://challenges.cloudflare.com/turnstile/v0/siteverify") {
      return new Response("no outbound network in local dev", { status: 502 });
    }
    const b = await req.json().catch(() => ({}));
    const success =
      b.secret === "1x0000000000000000000000000000000AA" && b.response === "XXXX.DUMMY.TOKEN.XXXX";
    return Response.json({ success, "error-codes": success ? [] : ["invalid-input-response"] });
  },
  ...(Number.isInteger(opt.rateLimit)
    ? { ratelimits: { RATE_LIMITER: { simple: { limit: opt.rateLimit, period: 60 } } } }
    : {}),
};

// Apply the D1 migrations not applied yet, in order, recording each in
// wrangler's own table (d1_migrations), as `wrangler d1 migrations apply`
// does on Cloudflare. (0001 and 0002 are idempotent, so a state dir made
// before this table existed gets them again harmlessly.)
async function migrate(mf) {
  const db = await mf.getD1Database("DB");
  await db.exec(
    "CREATE TABLE IF NOT EXISTS d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)",
  );
  const applied = new Set((await db.prepare("SELECT name FROM d1_migrations").all()).results.map((r) => r.name));
  const migrations = path.join(here, "..", "migrations");
  for (const file of readdirSync(migrations).filter((f) => f.endsWith(".sql")).sort()) {
    if (applied.has(file)) continue;
    const sql = readFileSync(path.join(migrations, file), "utf8")
      .split("\n").filter((l) => !l.startsWith("--")).join("\n");
    const stmts = sql.split(";").map((s) => s.trim()).filter(Boolean).map((s) => db.prepare(s));
    stmts.push(db.prepare("INSERT INTO d1_migrations (name) VALUES (?1)").bind(file));
    await db.batch(stmts);
  }
}
// miniflare's bindings proxy makes `prepare` a synchronous call to workerd;
// once (scripts/test --only 50, 2026-12-06) that bridge failed its own
// assertion (SynchronousFetcher: `message?.id === id`), and a bridge that
// lost a reply stays out of step. So on that error the runtime starts over
// with a new bridge; each migration is one atomic batch that records it,
// so starting over applies only the ones not recorded. Any other error
// stops the server.
let mf;
for (let attempt = 1; ; attempt++) {
  mf = new Miniflare(options);
  try {
    await mf.ready;
    await migrate(mf);
    break;
  } catch (e) {
    const flake = e?.code === "ERR_ASSERTION" && String(e?.stack).includes("SynchronousFetcher");
    await mf.dispose().catch(() => {});
    if (!flake || attempt === 3) throw e;
    console.error(
      `serve.mjs: miniflare's synchronous bridge failed (${e.message}); starting the runtime again (${attempt} of 3)`,
    );
  }
}
console.log(`clipmesh worker listening on http://127.0.0.1:${opt.port}`);

const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
