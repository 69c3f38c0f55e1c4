//! Windows only: the tray menu opens from our own handling of the icon's
//! click, not from tray-icon's.
//!
//! tray-icon 0.26 opens its menu (and sends its click events) only after
//! `Shell_NotifyIconGetRect` has given it the icon's rectangle. Under Wine 8
//! that call is a stub (`E_NOTIMPL`), so a click on the docked icon did
//! nothing. The shell therefore builds the icon with tray-icon's own menu
//! opening turned off ([`tray_icon::TrayIconBuilder::with_menu_on_left_click`]
//! and `..._right_click` set to false) and subclasses the icon's hidden
//! window ([`tray_icon::TrayIcon::window_handle`]): on a left or right
//! button release reported through the icon's callback message, it opens
//! the current menu at the cursor with muda's public
//! [`tray_icon::menu::ContextMenu::show_context_menu_for_hwnd`]. The choice
//! reaches the program as a [`tray_icon::menu::MenuEvent`], as before. This
//! needs no icon rectangle, so it behaves the same on Windows and Wine.
//!
//! The callback message's number ([`TRAY_CALLBACK`]) is tray-icon's own
//! (`WM_USER_TRAYICON` in its Windows backend, not exported); the crate is
//! pinned to `=0.26.1`, and the Wine tray test clicks the icon, so a change
//! there fails a test rather than going unnoticed.
//!
//! This is the crate's only `unsafe` code (the workspace forbids it
//! elsewhere): three comctl32 calls and muda's `unsafe fn`, each with its
//! SAFETY note.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::cell::RefCell;
use tray_icon::menu::{ContextMenu, Menu};
use windows_sys::Win32::Foundation::{HWND, LPARAM, LRESULT, WPARAM};
use windows_sys::Win32::UI::Shell::{DefSubclassProc, RemoveWindowSubclass, SetWindowSubclass};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    PostMessageW, WM_LBUTTONUP, WM_NULL, WM_RBUTTONUP,
};

/// The icon's callback message in tray-icon 0.26.1 (`WM_USER_TRAYICON`).
const TRAY_CALLBACK: u32 = 6002;
/// Our subclass's id on the icon's window.
const SUBCLASS_ID: usize = 0x636d_7472; // "cmtr"

/// The menu a click opens.
type Current = RefCell<Option<Menu>>;

/// The subclass on the icon's window, and the menu it opens; the subclass
/// is removed on drop (keep this until the icon is dropped).
pub struct ClickMenu {
    hwnd: HWND,
    /// Boxed so its address, handed to the subclass, stays put; only read
    /// and written on the thread that owns the window.
    menu: Box<Current>,
}

impl ClickMenu {
    /// Subclasses the icon's window `hwnd` (from
    /// [`tray_icon::TrayIcon::window_handle`], on the thread that owns it).
    pub fn attach(hwnd: HWND) -> anyhow::Result<Self> {
        let menu: Box<Current> = Box::new(RefCell::new(None));
        let data = &*menu as *const Current as usize;
        // SAFETY: `hwnd` is the live window of a TrayIcon this thread owns
        // (the caller keeps the icon alive longer than `Self`, whose drop
        // removes the subclass); `subclass` has the SUBCLASSPROC signature;
        // `data` points into the box `Self` owns, which outlives the
        // subclass (removed in `drop` before the box is freed).
        let ok = unsafe { SetWindowSubclass(hwnd, Some(subclass), SUBCLASS_ID, data) };
        if ok == 0 {
            anyhow::bail!("SetWindowSubclass failed on the tray icon's window");
        }
        Ok(Self { hwnd, menu })
    }

    /// Makes `menu` the one a click opens.
    pub fn set_menu(&self, menu: &Menu) {
        *self.menu.borrow_mut() = Some(menu.clone());
    }
}

impl Drop for ClickMenu {
    fn drop(&mut self) {
        // SAFETY: the same window and subclass `attach` installed; the icon
        // (and so its window) is still alive (see `attach`).
        unsafe { RemoveWindowSubclass(self.hwnd, Some(subclass), SUBCLASS_ID) };
    }
}

/// Passes every message on to tray-icon's window procedure, then opens the
/// menu on a button release over the icon.
unsafe extern "system" fn subclass(
    hwnd: HWND,
    msg: u32,
    wparam: WPARAM,
    lparam: LPARAM,
    _id: usize,
    data: usize,
) -> LRESULT {
    // SAFETY: called by comctl32 for a subclassed window with the message's
    // own arguments.
    let r = unsafe { DefSubclassProc(hwnd, msg, wparam, lparam) };
    // Without NOTIFYICON_VERSION_4 (tray-icon sets none) the low word of
    // lparam is the mouse message.
    let mouse = (lparam as u32) & 0xffff;
    if msg == TRAY_CALLBACK && (mouse == WM_LBUTTONUP || mouse == WM_RBUTTONUP) {
        // Cloned (a counted handle) so no borrow is held while the menu's
        // modal loop runs and the shell swaps in a new menu.
        // SAFETY: `data` is the address `ClickMenu::attach` registered,
        // valid while the subclass is installed; this runs on the window's
        // thread, the only one that touches the cell.
        let current = unsafe { &*(data as *const Current) };
        let menu = current.borrow().clone();
        if let Some(menu) = menu {
            // SAFETY: `hwnd` is the live window this message was sent to,
            // owned by this thread; no position is given, so muda opens
            // the menu at the cursor.
            unsafe { menu.show_context_menu_for_hwnd(hwnd as isize, None) };
            // As Microsoft's notification-area guidance asks after
            // TrackPopupMenu, so the next click opens it again.
            // SAFETY: posting a message with no pointers to a live window.
            unsafe { PostMessageW(hwnd, WM_NULL, 0, 0) };
        }
    }
    r
}
