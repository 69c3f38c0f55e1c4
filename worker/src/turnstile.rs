//! Optional Turnstile on signup (off by default): with the Worker secret
//! `TURNSTILE_SECRET` set, a signup (`POST /api/v1/signup`, `POST
//! /api/v2/signup/finish`) must carry a solved Turnstile challenge's token
//! in the `CF-Turnstile-Response` header, which the Worker checks with
//! Cloudflare's siteverify API before it creates the account; without
//! one, or with one siteverify refuses, the answer is 403 `forbidden`
//! (503 when siteverify cannot be reached). Checked after the cheap input
//! checks and the signup policy, before any hashing or write.
//!
//! The stock `clipmesh` client has no way to solve a challenge (that needs
//! a browser and the operator's Turnstile widget), so with Turnstile on,
//! accounts are made from a page or tool that obtains a token; see
//! `docs/cloudflare.md`. Locally, `worker/dev/serve.mjs` answers siteverify
//! itself, the way Cloudflare's published test keys behave, so nothing
//! leaves the machine.

use crate::api::ApiError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use wasm_bindgen::JsValue;
use worker::{Env, Fetch, Headers, Method, Request, RequestInit};

/// Cloudflare's token check.
pub const SITEVERIFY: &str = "https://challenges.cloudflare.com/turnstile/v0/siteverify";
/// The request header that carries the token.
pub const HEADER: &str = "CF-Turnstile-Response";
/// Longest token accepted (Turnstile's are at most 2048 characters).
const MAX_TOKEN: usize = 2048;

fn secret(env: &Env) -> Option<String> {
    env.secret("TURNSTILE_SECRET")
        .map(|s| s.to_string())
        .or_else(|_| env.var("TURNSTILE_SECRET").map(|s| s.to_string()))
        .ok()
        .filter(|s| !s.is_empty())
}

fn refused() -> ApiError {
    ApiError::new(
        403,
        "forbidden",
        "signup on this relay needs a solved Turnstile challenge (header CF-Turnstile-Response)",
    )
}

/// With `TURNSTILE_SECRET` set: `Ok` only if the request's token passes
/// siteverify. Without it: `Ok`, nothing checked.
pub async fn check_signup(req: &Request, env: &Env, client: IpAddr) -> Result<(), ApiError> {
    let Some(secret) = secret(env) else {
        return Ok(());
    };
    let Some(token) = req
        .headers()
        .get(HEADER)
        .ok()
        .flatten()
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
    else {
        return Err(refused());
    };
    #[derive(Serialize)]
    struct Verify<'a> {
        secret: &'a str,
        response: &'a str,
        remoteip: String,
    }
    #[derive(Deserialize)]
    struct Outcome {
        success: bool,
    }
    let body = serde_json::to_string(&Verify {
        secret: &secret,
        response: &token,
        remoteip: client.to_string(),
    })
    .map_err(ApiError::internal)?;
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(&body)));
    let unavailable = |e: worker::Error| {
        worker::console_warn!("turnstile siteverify failed: {e}");
        ApiError::unavailable("the signup challenge cannot be checked now", 30)
    };
    let mut resp = Fetch::Request(Request::new_with_init(SITEVERIFY, &init)?)
        .send()
        .await
        .map_err(unavailable)?;
    if resp.status_code() != 200 {
        return Err(unavailable(worker::Error::RustError(format!(
            "status {}",
            resp.status_code()
        ))));
    }
    let outcome: Outcome = resp.json().await.map_err(unavailable)?;
    if outcome.success {
        Ok(())
    } else {
        Err(refused())
    }
}
