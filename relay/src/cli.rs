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
use crate::config::{Config, SignupPolicy, ENV_CONFIG, ENV_DATA_DIR, ENV_LISTEN, ENV_SIGNUP};
use crate::store::{unix_now, CreateUser, Logout, NewCredentials, Store};
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
        /// Password input and KDF parameters.
        #[command(flatten)]
        pw: PasswordArgs,
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

fn credentials(config: &Config, args: &PasswordArgs) -> anyhow::Result<NewCredentials> {
    let d = KdfParams::default();
    let kdf = KdfParams {
        m_kib: args.kdf_m_kib.unwrap_or(d.m_kib),
        t: args.kdf_t.unwrap_or(d.t),
        p: args.kdf_p.unwrap_or(d.p),
        ..d
    };
    let pw = read_password(args)?;
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
        UserCommand::Add { name, admin, pw } => {
            crate::validate::username(&name).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            let creds = credentials(config, &pw)?;
            let res =
                store.blocking(|db| db.create_user(&name, &creds, |_| true, None, unix_now()))?;
            match res {
                CreateUser::Created { user, is_admin, .. } => {
                    if admin && !is_admin {
                        store.blocking(|db| db.set_admin(user, true))?;
                    }
                    println!(
                        "created user {name:?} (id {}){}",
                        user.0,
                        if admin || is_admin { ", admin" } else { "" }
                    );
                }
                CreateUser::Taken => bail!("username {name:?} is taken"),
                CreateUser::Closed => bail!("account creation refused"),
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
