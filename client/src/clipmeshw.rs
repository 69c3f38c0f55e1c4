//! `clipmeshw`: runs `clipmesh` with the same arguments and no console
//! window (Windows).
//!
//! `clipmesh.exe` is a console program, so starting it at login (the MSI's
//! optional HKCU `Run` value, `clipmeshw.exe run`) would open a console
//! window. This launcher is a GUI-subsystem program, so Windows gives it no
//! console; it starts `clipmesh.exe` from its own folder with
//! `CREATE_NO_WINDOW`, waits for it and exits with its exit code. Elsewhere
//! it only says what it is for.
#![cfg_attr(windows, windows_subsystem = "windows")]

use std::process::ExitCode;

#[cfg(windows)]
fn main() -> ExitCode {
    use std::os::windows::process::CommandExt;
    /// `CREATE_NO_WINDOW` from the process creation flags.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    let exe = match std::env::current_exe() {
        Ok(p) => p.with_file_name("clipmesh.exe"),
        Err(_) => return ExitCode::from(2),
    };
    match std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .creation_flags(CREATE_NO_WINDOW)
        .status()
    {
        Ok(s) => ExitCode::from(s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
        // No console to report to: the exit code is all there is.
        Err(_) => ExitCode::from(2),
    }
}

#[cfg(not(windows))]
fn main() -> ExitCode {
    eprintln!("clipmeshw starts clipmesh without a console window on Windows; use clipmesh here");
    ExitCode::from(2)
}
