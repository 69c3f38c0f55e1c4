//! The reference server: a plain broadcast WebSocket server.
//!
//! Every binary message a socket sends is forwarded verbatim to every other
//! socket of its group; the group is the URL path after `/g/` (or the whole
//! path). No auth, no framing, no storage: this is the floor that the relay's
//! figures are quoted against, run in the same session on the same machine.
//! Buffers default to the relay's defaults (1 KiB read buffer, 8 KiB write
//! threshold) and each socket has a bounded queue that drops when full.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings of the baseline server.
#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// WebSocket read buffer per socket, bytes (the relay's default
    /// `ws_read_buffer`).
    #[arg(long, default_value_t = 1024)]
    pub read_buffer: usize,
    /// WebSocket write batching threshold, bytes (the relay's default
    /// `ws_write_buffer`).
    #[arg(long, default_value_t = 8192)]
    pub write_buffer: usize,
    /// Outbound queue depth per socket, in messages; full queues drop.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Largest accepted message, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message: usize,
    /// Stop by itself after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub lifetime_s: u64,
}

/// One socket as its group sees it.
struct Member {
    /// Connection id, to skip the sender and to leave.
    id: u64,
    /// Its outbound queue.
    tx: mpsc::Sender<Bytes>,
}

/// The sockets of one group.
type Group = Arc<Mutex<Vec<Member>>>;

/// Shared server state.
#[derive(Default)]
struct State {
    /// Group name → members. Touched only on join and leave.
    groups: Mutex<HashMap<String, Group>>,
    /// Messages dropped because a receiver's queue was full.
    dropped: AtomicU64,
    /// Messages forwarded.
    forwarded: AtomicU64,
}

/// Runs the baseline server until Ctrl-C, SIGTERM or the lifetime ends.
pub async fn run(args: BaselineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "the baseline server listens on loopback only"
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr().context("local address")?;
    println!("clipmesh-load baseline-server listening on http://{local}");
    let state = Arc::new(State::default());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let lifetime = tokio::time::sleep(Duration::from_secs(args.lifetime_s));
    tokio::pin!(lifetime);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                next_id += 1;
                tracker.spawn(connection(
                    stream,
                    next_id,
                    Arc::clone(&state),
                    args.clone(),
                    cancel.clone(),
                ));
            }
            _ = &mut lifetime => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    println!(
        "baseline-server stopped: forwarded {} dropped {}",
        state.forwarded.load(Ordering::Relaxed),
        state.dropped.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn connection(
    stream: TcpStream,
    id: u64,
    state: Arc<State>,
    args: BaselineArgs,
    cancel: CancellationToken,
) {
    if let Err(e) = serve(stream, id, &state, &args, &cancel).await {
        tracing::debug!(id, error = %e, "connection ended");
    }
}

async fn serve(
    stream: TcpStream,
    id: u64,
    state: &State,
    args: &BaselineArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    stream.set_nodelay(true).context("nodelay")?;
    let config = WebSocketConfig::default()
        .read_buffer_size(args.read_buffer)
        .write_buffer_size(args.write_buffer)
        .max_message_size(Some(args.max_message))
        .max_frame_size(Some(args.max_message));
    let mut path = String::new();
    // The error type is tungstenite's, fixed by its callback trait.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .context("handshake")?;
    let name = path.strip_prefix("/g/").unwrap_or(&path).to_owned();
    let (tx, mut rx) = mpsc::channel(args.queue.max(1));
    let group = {
        let mut groups = state
            .groups
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let group = Arc::clone(groups.entry(name.clone()).or_default());
        group
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(Member { id, tx });
        group
    };
    let result = async {
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Binary(bytes))) => broadcast(state, &group, id, bytes),
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(anyhow::Error::from(e)),
                },
                out = rx.recv() => match out {
                    Some(bytes) => ws.send(Message::Binary(bytes)).await?,
                    None => return Ok(()),
                },
                _ = cancel.cancelled() => {
                    // Best effort: 1012 like the relay on shutdown.
                    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: 1012.into(),
                        reason: "service restart".into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                    return Ok(());
                }
            }
        }
    }
    .await;
    leave(state, &name, &group, id);
    result
}

fn broadcast(state: &State, group: &Group, from: u64, bytes: Bytes) {
    let Ok(members) = group.lock() else {
        return;
    };
    for m in members.iter().filter(|m| m.id != from) {
        match m.tx.try_send(bytes.clone()) {
            Ok(()) => state.forwarded.fetch_add(1, Ordering::Relaxed),
            Err(_) => state.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn leave(state: &State, name: &str, group: &Group, id: u64) {
    let Ok(mut groups) = state.groups.lock() else {
        return;
    };
    let empty = match group.lock() {
        Ok(mut members) => {
            members.retain(|m| m.id != id);
            members.is_empty()
        }
        Err(_) => false,
    };
    if empty {
        groups.remove(name);
    }
}
