//! The first-run login window: server URL, username, password and a
//! "create a new account" choice, with clear errors (wrong password, relay
//! unreachable, signup closed, TLS problems).
//!
//! It runs as its own process (`clipmesh-tray login`), started by the tray,
//! so the tray's GTK loop and the window's winit loop never share a thread;
//! it exits 0 once the device is logged in. The form's logic ([`Form`],
//! [`describe`]) needs no display; [`run`] shows it with egui (eframe's
//! glow backend, AccessKit for screen readers).
//!
//! The password lives in a zeroizing buffer and is never logged. Each
//! attempt runs on a worker thread (Argon2id takes a moment), and its
//! outcome line is also printed on standard output, which the tray and the
//! tests read.

use clipmesh::account::{self, AccountError, Credentials};
use clipmesh::api::ApiError;
use clipmesh::config::{normalize_server, DEFAULT_AUTO_DOWNLOAD_MAX};
use std::path::PathBuf;
use std::sync::mpsc;
use zeroize::Zeroizing;

/// The one line about what the defaults leave off (the primary selection
/// only exists on Linux desktops).
pub fn defaults_line() -> String {
    let primary = if cfg!(target_os = "linux") {
        "; the X11 primary selection is not synced"
    } else {
        ""
    };
    format!(
        "Syncs text, HTML, images and files. Items over {} wait until you choose Download{primary}.",
        crate::model::size(DEFAULT_AUTO_DOWNLOAD_MAX)
    )
}

/// What the user typed.
#[derive(Default)]
pub struct Form {
    /// Relay URL.
    pub server: String,
    /// Account name.
    pub username: String,
    /// The password (zeroized when dropped).
    pub password: Zeroizing<String>,
    /// Create the account instead of logging in.
    pub create: bool,
    /// The relay's one-time setup token, for its first account (signup
    /// only; empty when not needed).
    pub setup_token: Zeroizing<String>,
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Form")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("create", &self.create)
            .field("setup_token", &"<redacted>")
            .finish()
    }
}

impl Form {
    /// Checks the fields before anything is sent; the error is shown as is.
    pub fn validate(&self) -> Result<String, String> {
        if self.server.trim().is_empty() {
            return Err("Enter the relay's address, like https://relay.example.org".into());
        }
        let server = normalize_server(self.server.trim())?;
        if self.username.trim().is_empty() {
            return Err("Enter your username".into());
        }
        if self.password.is_empty() {
            return Err("Enter your password".into());
        }
        Ok(server)
    }

    /// Signs up or logs in the device in `dir` (blocking: key derivation and
    /// HTTP). Returns the success line or the error line to show.
    pub fn submit(&self, dir: &std::path::Path, device_name: &str) -> Result<String, String> {
        let server = self.validate()?;
        let creds = Credentials {
            server: &server,
            username: self.username.trim(),
            password: self.password.as_bytes(),
            device_name,
            ca_file: None,
            // The window refuses plain http:// to another machine (the
            // CLI's --insecure-http is not offered here).
            insecure_http: false,
            setup_token: Some(self.setup_token.trim()).filter(|t| self.create && !t.is_empty()),
        };
        let r = if self.create {
            account::signup(dir, &creds)
        } else {
            account::login(dir, &creds)
        };
        match r {
            Ok(a) => Ok(format!(
                "Logged in as {} on {} (device {})",
                a.username, a.server, a.device_name
            )),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// The message shown for a failed signup or login.
pub fn describe(e: &AccountError) -> String {
    match e {
        AccountError::WrongPassword | AccountError::Api(ApiError::InvalidCredentials) => {
            "Wrong username or password.".into()
        }
        AccountError::Api(ApiError::SignupClosed) => {
            "Signup is closed on this relay: ask its administrator for an account, or log in."
                .into()
        }
        AccountError::Api(ApiError::UsernameTaken) => {
            "That username is taken: log in instead, or pick another.".into()
        }
        AccountError::Api(ApiError::RateLimited(s)) => {
            format!("Too many attempts: try again in {s} s.")
        }
        AccountError::Api(ApiError::Unreachable { server, detail }) => {
            let d = detail.to_ascii_lowercase();
            if ["certificate", "tls", "handshake", "unknownissuer", "x509"]
                .iter()
                .any(|w| d.contains(w))
            {
                format!(
                    "TLS problem with {server}: {detail}. If the relay uses its own certificate \
                     authority, log in once with `clipmesh login --ca-file`."
                )
            } else {
                format!("Cannot reach the relay at {server}: {detail}.")
            }
        }
        AccountError::Url(u) => format!("That address does not work: {u}."),
        other => {
            let mut s = other.to_string();
            if let Some(c) = s.get(..1) {
                s = c.to_uppercase() + &s[1..];
            }
            s
        }
    }
}

/// The device name: the host name, else "desktop".
pub fn device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "desktop".into())
}

/// What the window shows under the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing yet.
    Idle,
    /// An attempt runs.
    Busy,
    /// It failed with this line.
    Failed(String),
    /// The device is logged in (this line says as whom).
    Done(String),
}

/// The window's state.
pub struct LoginApp {
    /// The config directory to log in.
    dir: PathBuf,
    /// The fields.
    form: Form,
    /// What the last attempt said.
    outcome: Outcome,
    /// The running attempt's answer.
    pending: Option<mpsc::Receiver<Result<String, String>>>,
    /// The running attempt's thread (joined when it answers, or on drop).
    worker: Option<std::thread::JoinHandle<()>>,
    /// Focus the first empty field on the first frame.
    focused: bool,
    /// Focus the (emptied) password field after a failed attempt.
    refocus_password: bool,
}

impl LoginApp {
    /// A form for `dir`, with the server (and username) filled in if given.
    pub fn new(dir: PathBuf, server: Option<String>, username: Option<String>) -> Self {
        Self {
            dir,
            form: Form {
                server: server.unwrap_or_default(),
                username: username.unwrap_or_default(),
                ..Form::default()
            },
            outcome: Outcome::Idle,
            pending: None,
            worker: None,
            focused: false,
            refocus_password: false,
        }
    }

    /// What the window shows now.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    fn start(&mut self, ctx: &eframe::egui::Context) {
        if let Err(e) = self.form.validate() {
            self.finish(Err(e));
            return;
        }
        let (tx, rx) = mpsc::channel();
        let form = Form {
            server: self.form.server.clone(),
            username: self.form.username.clone(),
            password: self.form.password.clone(),
            create: self.form.create,
            setup_token: self.form.setup_token.clone(),
        };
        let dir = self.dir.clone();
        let ctx = ctx.clone();
        self.worker = Some(std::thread::spawn(move || {
            let r = form.submit(&dir, &device_name());
            let _ = tx.send(r);
            ctx.request_repaint();
        }));
        self.pending = Some(rx);
        self.outcome = Outcome::Busy;
        println!("login: trying");
    }

    fn finish(&mut self, r: Result<String, String>) {
        self.outcome = match r {
            Ok(line) => {
                println!("login: ok: {line}");
                Outcome::Done(line)
            }
            Err(line) => {
                println!("login: error: {line}");
                self.form.password = Zeroizing::new(String::new());
                self.refocus_password = true;
                Outcome::Failed(line)
            }
        };
    }
}

impl Drop for LoginApp {
    fn drop(&mut self) {
        // A window closed mid-attempt waits for the attempt (bounded by the
        // HTTP client's timeouts) rather than leaving a thread behind.
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl eframe::App for LoginApp {
    fn ui(&mut self, ui: &mut eframe::egui::Ui, _frame: &mut eframe::Frame) {
        use eframe::egui::{self, Key, RichText, TextEdit};
        let ctx = ui.ctx().clone();
        if let Some(rx) = &self.pending {
            if let Ok(r) = rx.try_recv() {
                self.pending = None;
                if let Some(w) = self.worker.take() {
                    let _ = w.join();
                }
                self.finish(r);
            }
        }
        if let Outcome::Done(_) = self.outcome {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        let busy = self.outcome == Outcome::Busy;
        egui::Frame::central_panel(ui.style()).show(ui, |ui| {
            ui.heading("Log in to clipmesh");
            ui.add_space(6.0);
            egui::Grid::new("fields")
                .num_columns(2)
                .spacing([8.0, 8.0])
                .show(ui, |ui| {
                    let l = ui.label("Server");
                    let server = ui.add_enabled(
                        !busy,
                        TextEdit::singleline(&mut self.form.server)
                            .hint_text("https://relay.example.org")
                            .desired_width(260.0),
                    );
                    let server = server.labelled_by(l.id);
                    ui.end_row();
                    let l = ui.label("Username");
                    let user = ui
                        .add_enabled(
                            !busy,
                            TextEdit::singleline(&mut self.form.username).desired_width(260.0),
                        )
                        .labelled_by(l.id);
                    ui.end_row();
                    let l = ui.label("Password");
                    let pass = ui
                        .add_enabled(
                            !busy,
                            TextEdit::singleline(&mut *self.form.password)
                                .password(true)
                                .desired_width(260.0),
                        )
                        .labelled_by(l.id);
                    ui.end_row();
                    if self.form.create {
                        let l = ui.label("Setup token");
                        ui.add_enabled(
                            !busy,
                            TextEdit::singleline(&mut *self.form.setup_token)
                                .hint_text("only for the relay's first account")
                                .password(true)
                                .desired_width(260.0),
                        )
                        .labelled_by(l.id);
                        ui.end_row();
                    }
                    if self.refocus_password && !busy {
                        self.refocus_password = false;
                        pass.request_focus();
                    }
                    if !self.focused {
                        self.focused = true;
                        if self.form.server.is_empty() {
                            server.request_focus();
                        } else if self.form.username.is_empty() {
                            user.request_focus();
                        } else {
                            pass.request_focus();
                        }
                    }
                });
            ui.add_enabled(
                !busy,
                egui::Checkbox::new(&mut self.form.create, "Create a new account on this relay"),
            );
            ui.add_space(6.0);
            ui.horizontal(|ui| {
                let label = if self.form.create {
                    "Create account"
                } else {
                    "Log in"
                };
                let clicked = ui.add_enabled(!busy, egui::Button::new(label)).clicked();
                let enter = ui.input(|i| i.key_pressed(Key::Enter));
                if (clicked || enter) && !busy {
                    self.start(&ctx);
                }
                if busy {
                    ui.spinner();
                    ui.label("Deriving keys and contacting the relay…");
                }
            });
            match &self.outcome {
                Outcome::Failed(e) => {
                    ui.label(RichText::new(e).color(ui.visuals().error_fg_color));
                }
                Outcome::Done(line) => {
                    ui.label(line);
                }
                Outcome::Idle | Outcome::Busy => {}
            }
            ui.add_space(6.0);
            ui.label(RichText::new(defaults_line()).small());
        });
    }
}

/// Shows the window until the device is logged in (true) or the window is
/// closed (false).
pub fn run(dir: PathBuf, server: Option<String>, username: Option<String>) -> anyhow::Result<bool> {
    let icon = clipmesh_tray_shell::icons::decode(clipmesh_tray_shell::icons::app_png())?;
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("clipmesh: log in")
            .with_app_id("clipmesh")
            .with_inner_size([420.0, 300.0])
            .with_icon(eframe::egui::IconData {
                rgba: icon.pixels,
                width: icon.width,
                height: icon.height,
            }),
        ..Default::default()
    };
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = done.clone();
    eframe::run_native(
        "clipmesh-login",
        options,
        Box::new(move |_cc| {
            Ok(Box::new(Watch {
                app: LoginApp::new(dir, server, username),
                done: seen,
            }))
        }),
    )
    .map_err(|e| anyhow::anyhow!("login window: {e}"))?;
    Ok(done.get())
}

/// Records, for [`run`], whether the login went through.
struct Watch {
    /// The window.
    app: LoginApp,
    /// Set once logged in.
    done: std::rc::Rc<std::cell::Cell<bool>>,
}

impl eframe::App for Watch {
    fn ui(&mut self, ui: &mut eframe::egui::Ui, frame: &mut eframe::Frame) {
        eframe::App::ui(&mut self.app, ui, frame);
        if let Outcome::Done(_) = self.app.outcome() {
            self.done.set(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_messages() {
        let mut f = Form::default();
        assert!(f
            .validate()
            .unwrap_err()
            .starts_with("Enter the relay's address"));
        f.server = "relay.example.org".into();
        assert_eq!(f.validate().unwrap_err(), "Enter your username");
        f.username = "ann".into();
        assert_eq!(f.validate().unwrap_err(), "Enter your password");
        f.password = Zeroizing::new("pw".into());
        assert_eq!(f.validate().unwrap(), "https://relay.example.org");
        f.server = "ftp://x".into();
        assert!(f.validate().unwrap_err().contains("unsupported URL scheme"));
        assert!(!format!("{f:?}").contains("pw\""));
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(
            describe(&AccountError::WrongPassword),
            "Wrong username or password."
        );
        assert!(
            describe(&AccountError::Api(ApiError::SignupClosed)).starts_with("Signup is closed")
        );
        let tls = AccountError::Api(ApiError::Unreachable {
            server: "https://r".into(),
            detail: "invalid peer certificate: UnknownIssuer".into(),
        });
        assert!(describe(&tls).starts_with("TLS problem with https://r"));
        let down = AccountError::Api(ApiError::Unreachable {
            server: "http://127.0.0.1:9".into(),
            detail: "connection refused".into(),
        });
        assert_eq!(
            describe(&down),
            "Cannot reach the relay at http://127.0.0.1:9: connection refused."
        );
        assert!(defaults_line().contains("256 MiB"));
    }
}
