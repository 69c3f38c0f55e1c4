//! The command line: `clipmesh-relay [serve]` flags and the operator's
//! `user` subcommands, which work directly on the database in the data
//! directory.
//!
//! `user add` and `user reset-password` derive keys on the operator's
//! machine exactly as a client does (`clipmesh_proto::keys`): a random salt,
//! Argon2id, HKDF into `auth_key` and KEK, and a fresh data key wrapped under
//! the KEK. The password is read without echo (or from stdin with
//! `--password-stdin`) and never stored or logged.

use crate::auth;
use crate::clock::system_unix_now;
use crate::config::{Config, SignupPolicy, ENV_CONFIG, ENV_DATA_DIR, ENV_LISTEN, ENV_SIGNUP};
use crate::store::{CreateUser, Logout, NewCredentials, Store};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use clipmesh_proto::keys::{derive_keys, random_salt};
use clipmesh_proto::{DataKey, KdfParams};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Self-hosted relay for clipmesh: accounts, device sessions and end-to-end
/// encrypted clipboard fan-out. It never sees plaintext or keys.
#[derive(Debug, Parser)]
#[command(
    name = "clipmesh-relay",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  clipmesh-relay --listen 127.0.0.1:8787 --trusted-proxy 127.0.0.1\n  \
                  clipmesh-relay --tls-cert fullchain.pem --tls-key privkey.pem\n  \
                  clipmesh-relay user add alice\n\n\
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug). SIGTERM or Ctrl-C \
                  closes every socket with 1012 and exits cleanly. See docs/relay.md."
)]
pub struct Cli {
    /// TOML config file (every field documented in docs/relay.md).
    #[arg(long, global = true, env = ENV_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8787]. Port 0 picks a free
    /// port; the bound address is printed as
    /// "clipmesh-relay listening on http://ADDR".
    #[arg(long, global = true, env = ENV_LISTEN, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database [default: the platform data
    /// directory, e.g. ~/.local/share/clipmesh-relay].
    #[arg(long, global = true, env = ENV_DATA_DIR, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Who may sign up [default: first = the first account becomes admin,
    /// then signup closes].
    #[arg(long, global = true, env = ENV_SIGNUP, value_enum)]
    pub signup: Option<SignupPolicy>,
    /// TLS certificate chain (PEM); serve HTTPS/WSS directly.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Reverse proxy whose X-Forwarded-For is believed (IP or CIDR;
    /// repeatable).
    #[arg(long = "trusted-proxy", global = true, value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
    /// What to do [default: serve].
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (the default).
    Serve,
    /// Manage accounts (works on the database directly; see docs/relay.md).
    #[command(subcommand)]
    User(UserCommand),
    /// Ask the relay running with this configuration for `/healthz` on
    /// loopback; exit 0 when it answers `ok` (a container's HEALTHCHECK:
    /// the image has no curl).
    Health,
}

/// Account administration.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List accounts.
    List,
    /// Create an account, deriving its keys here as a client would.
    Add {
        /// Account name.
        name: String,
        /// Make it an admin (the first account always is).
        #[arg(long)]
        admin: bool,
        /// Let ClipCascade clients log in to it too (stores the weaker
        /// ClipCascade verifier; see docs/crypto.md).
        #[arg(long)]
        clipcascade: bool,
        /// Password input and KDF parameters.
        #[command(flatten)]
        pw: PasswordArgs,
    },
    /// Change an account's settings.
    Set {
        /// Account name.
        name: String,
        /// ClipCascade compatibility: `on` asks for the account's password
        /// (the ClipCascade verifier is derived from it); `off` removes the
        /// verifier and ends every ClipCascade session.
        #[arg(long, value_name = "on|off")]
        clipcascade: Option<OnOff>,
        /// What `/server-mode` tells the account's ClipCascade clients.
        #[arg(long, value_enum)]
        clipcascade_mode: Option<ModeArg>,
        /// Read the password from the first line of stdin instead of
        /// prompting (with `--clipcascade on`).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account (its devices can no longer connect).
    Disable {
        /// Account name.
        name: String,
    },
    /// Re-enable a disabled account.
    Enable {
        /// Account name.
        name: String,
    },
    /// Delete an account, its devices, its stored clip and its blobs.
    Delete {
        /// Account name.
        name: String,
    },
    /// Set a new password. This makes a NEW data key: clips encrypted under
    /// the old one become unreadable, and every device is logged out.
    ResetPassword {
        /// Account name.
        name: String,
        /// Password input and KDF parameters.
        #[command(flatten)]
        pw: PasswordArgs,
    },
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// A ClipCascade server mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Relay through the server (STOMP on `/clipsocket`).
    P2s,
    /// Direct links, signalled through `/p2psignaling`.
    P2p,
}

/// How the password is read, and the KDF parameters to derive with.
#[derive(Debug, clap::Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Argon2id memory cost, KiB [default: 65536, the client default].
    #[arg(long, hide = true)]
    pub kdf_m_kib: Option<u32>,
    /// Argon2id time cost [default: 3].
    #[arg(long, hide = true)]
    pub kdf_t: Option<u32>,
    /// Argon2id lanes [default: 4].
    #[arg(long, hide = true)]
    pub kdf_p: Option<u32>,
}

impl Cli {
    /// The config file (if any) with the flags applied on top.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => {
                let s = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Config::from_toml(&s).with_context(|| format!("parsing {}", p.display()))?
            }
            None => Config::default(),
        };
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(d) = &self.data_dir {
            c.data_dir = Some(d.clone());
        }
        if let Some(s) = self.signup {
            c.signup = s;
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert.clone();
            c.tls_key = self.tls_key.clone();
        }
        c.trusted_proxies
            .extend(self.trusted_proxies.iter().cloned());
        Ok(c)
    }
}

fn read_password(args: &PasswordArgs) -> anyhow::Result<String> {
    let pw = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let a = rpassword::prompt_password("Password: ").context("reading password")?;
        let b = rpassword::prompt_password("Repeat password: ").context("reading password")?;
        if a != b {
            bail!("passwords do not match");
        }
        a
    };
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}

/// The ClipCascade verifier of a password: Argon2id of its SHA3-512 hex.
fn cc_verifier(config: &Config, pw: &str) -> anyhow::Result<String> {
    let a = &config.auth;
    let hex = crate::clipcascade::login_hash(pw);
    auth::hash_blocking(a.hash_m_kib, a.hash_t, a.hash_p, hex.as_bytes())
        .context("hashing the ClipCascade verifier")
}

fn credentials(config: &Config, args: &PasswordArgs) -> anyhow::Result<NewCredentials> {
    credentials_from(config, args, &read_password(args)?)
}

fn credentials_from(
    config: &Config,
    args: &PasswordArgs,
    pw: &str,
) -> anyhow::Result<NewCredentials> {
    let d = KdfParams::default();
    let kdf = KdfParams {
        m_kib: args.kdf_m_kib.unwrap_or(d.m_kib),
        t: args.kdf_t.unwrap_or(d.t),
        p: args.kdf_p.unwrap_or(d.p),
        ..d
    };
    let salt = random_salt();
    let (auth_key, kek) = derive_keys(pw.as_bytes(), &salt, &kdf).context("deriving keys")?;
    let wrapped = kek.wrap(&DataKey::generate());
    let a = &config.auth;
    let auth_hash = auth::hash_blocking(a.hash_m_kib, a.hash_t, a.hash_p, auth_key.expose())
        .context("hashing auth key")?;
    Ok(NewCredentials {
        salt: salt.to_vec(),
        kdf,
        auth_hash,
        wrapped_data_key: wrapped.0.to_vec(),
    })
}

fn find(store: &Store, name: &str) -> anyhow::Result<crate::store::UserRow> {
    let n = name.to_owned();
    store
        .blocking(move |db| db.user_by_name(&n))?
        .with_context(|| format!("no user named {name:?}"))
}

/// Runs a `user` subcommand against the configured data directory.
pub fn run_user_command(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let store = crate::server::open_store(config).context("opening the database")?;
    match cmd {
        UserCommand::List => {
            let users = store.blocking(|db| db.list_users())?;
            println!(
                "{:>6}  {:<24} {:>5} {:>8} {:>7}  created",
                "id", "username", "admin", "disabled", "devices"
            );
            for u in users {
                println!(
                    "{:>6}  {:<24} {:>5} {:>8} {:>7}  {}",
                    u.id.0, u.username, u.is_admin, u.disabled, u.devices, u.created_at
                );
            }
        }
        UserCommand::Add {
            name,
            admin,
            clipcascade,
            pw,
        } => {
            crate::validate::username(&name).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            let password = read_password(&pw)?;
            let creds = credentials_from(config, &pw, &password)?;
            let verifier = clipcascade
                .then(|| cc_verifier(config, &password))
                .transpose()?;
            let res = store
                .blocking(|db| db.create_user(&name, &creds, |_| true, None, system_unix_now()))?;
            match res {
                CreateUser::Created { user, is_admin, .. } => {
                    if admin && !is_admin {
                        store.blocking(|db| db.set_admin(user, true))?;
                    }
                    if let Some(v) = verifier {
                        store.blocking(move |db| db.set_cc_verifier(user, Some(&v)))?;
                    }
                    println!(
                        "created user {name:?} (id {}){}{}",
                        user.0,
                        if admin || is_admin { ", admin" } else { "" },
                        if clipcascade {
                            ", ClipCascade clients allowed"
                        } else {
                            ""
                        }
                    );
                }
                CreateUser::Taken => bail!("username {name:?} is taken"),
                CreateUser::Closed => bail!("account creation refused"),
            }
        }
        UserCommand::Set {
            name,
            clipcascade,
            clipcascade_mode,
            password_stdin,
        } => {
            let u = find(&store, &name)?;
            let user = u.id;
            if clipcascade.is_none() && clipcascade_mode.is_none() {
                bail!("nothing to set: pass --clipcascade on|off or --clipcascade-mode");
            }
            if let Some(m) = clipcascade_mode {
                let mode = match m {
                    ModeArg::P2s => crate::store::CcMode::P2S,
                    ModeArg::P2p => crate::store::CcMode::P2P,
                };
                store.blocking(move |db| db.set_cc_mode(user, mode))?;
                println!("ClipCascade mode of {name:?} is {}", mode.as_str());
            }
            match clipcascade {
                Some(OnOff::On) => {
                    let args = PasswordArgs {
                        password_stdin,
                        kdf_m_kib: None,
                        kdf_t: None,
                        kdf_p: None,
                    };
                    let pw = read_password(&args)?;
                    // The verifier must be of the account's real password,
                    // or ClipCascade logins and clipmesh logins would use
                    // different passwords and keys.
                    let (auth_key, _) = derive_keys(
                        pw.as_bytes(),
                        &u.salt
                            .clone()
                            .try_into()
                            .map_err(|_| anyhow::anyhow!("corrupt salt"))?,
                        &u.kdf,
                    )
                    .context("deriving keys")?;
                    let phc = argon2::password_hash::PasswordHash::new(&u.auth_hash)
                        .map_err(|_| anyhow::anyhow!("corrupt auth hash"))?;
                    use argon2::PasswordVerifier;
                    if argon2::Argon2::default()
                        .verify_password(auth_key.expose(), &phc)
                        .is_err()
                    {
                        bail!("that is not the password of {name:?}");
                    }
                    let v = cc_verifier(config, &pw)?;
                    store.blocking(move |db| db.set_cc_verifier(user, Some(&v)))?;
                    println!("ClipCascade clients may now log in as {name:?}");
                }
                Some(OnOff::Off) => {
                    let ended = store.blocking(move |db| db.set_cc_verifier(user, None))?;
                    println!(
                        "ClipCascade logins refused for {name:?}; {} session(s) ended",
                        ended.len()
                    );
                }
                None => {}
            }
        }
        UserCommand::Disable { name } => set_disabled(&store, &name, true)?,
        UserCommand::Enable { name } => set_disabled(&store, &name, false)?,
        UserCommand::Delete { name } => {
            let u = find(&store, &name)?;
            store.blocking(|db| db.delete_user(u.id))?;
            if let Some(dir) = config.data_dir() {
                crate::blobs::remove_user_files(&dir, u.id)
                    .context("deleting the user's blob files")?;
            }
            println!("deleted user {name:?} (id {})", u.id.0);
        }
        UserCommand::ResetPassword { name, pw } => {
            let u = find(&store, &name)?;
            let creds = credentials(config, &pw)?;
            let revoked =
                store.blocking(|db| db.update_credentials(u.id, &creds, Logout::All, true))?;
            println!(
                "password of {name:?} reset with a NEW data key: clips encrypted before are \
                 unreadable, and all {} device(s) were logged out",
                revoked.len()
            );
        }
    }
    Ok(())
}

fn set_disabled(store: &Store, name: &str, disabled: bool) -> anyhow::Result<()> {
    let u = find(store, name)?;
    store.blocking(|db| db.set_disabled(u.id, disabled))?;
    println!(
        "user {name:?} {}",
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(())
}
