//! What the tray shows, as data: the icon's state, the menu's entries and
//! notifications, and the [`Shell`] that shows them. The tray's logic (the
//! `clipmesh-tray` crate's model) produces these; [`crate::platform`]
//! renders them with tray-icon and muda. Nothing here touches a display.

/// What the tray icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IconState {
    /// Connected to the relay.
    Connected,
    /// Connected, and at least one direct (P2P) link is open.
    Direct,
    /// Starting or reconnecting.
    Connecting,
    /// No connection (or not logged in).
    Offline,
    /// Paused by the user.
    Paused,
    /// Something needs the user: revoked session, changed password, ...
    Error,
}

impl IconState {
    /// The icon's file stem in `trayshell/icons/`, and its tooltip word.
    pub fn name(self) -> &'static str {
        match self {
            IconState::Connected => "connected",
            IconState::Direct => "direct",
            IconState::Connecting => "connecting",
            IconState::Offline => "offline",
            IconState::Paused => "paused",
            IconState::Error => "error",
        }
    }

    /// Every state, for loading the icons once.
    pub const ALL: [IconState; 6] = [
        IconState::Connected,
        IconState::Direct,
        IconState::Connecting,
        IconState::Offline,
        IconState::Paused,
        IconState::Error,
    ];
}

/// One menu entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A line of text or a clickable item.
    Item {
        /// The action's id (the tray's `Action::id`); informational lines
        /// have an id that parses to no action.
        id: String,
        /// What it says.
        label: String,
        /// Whether it can be clicked.
        enabled: bool,
        /// For check items: whether the mark is set.
        checked: Option<bool>,
    },
    /// A submenu.
    Submenu {
        /// A stable id (`sub:NAME`), so the platform code can update a
        /// rendered menu in place.
        id: String,
        /// What it says.
        label: String,
        /// Its entries.
        entries: Vec<Entry>,
    },
    /// A separator line.
    Separator,
}

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The title line.
    pub summary: String,
    /// The body (never clipboard contents or file names).
    pub body: String,
}

/// What the platform shows.
pub trait Shell {
    /// Shows this icon, with this tooltip.
    fn set_icon(&mut self, state: IconState, tooltip: &str);
    /// Shows this menu (the platform may update a rendered menu in place).
    fn set_menu(&mut self, entries: &[Entry]);
    /// Shows a desktop notification.
    fn notify(&mut self, notice: &Notice);
    /// Ends the event loop.
    fn quit(&mut self);
}

/// The program the platform loop drives ([`crate::platform::run`]): it
/// shows its state through a [`Shell`] and reacts to its own events.
pub trait TrayApp {
    /// What the program reacts to (one queue, in order).
    type Event: Send + 'static;
    /// The event for a click on the menu entry with this id.
    fn menu_event(id: String) -> Self::Event;
    /// The once-a-second event.
    fn tick_event() -> Self::Event;
    /// Shows the current state.
    fn render(&mut self, shell: &mut dyn Shell);
    /// Reacts to one event and shows the result; it may call
    /// [`Shell::quit`].
    fn handle(&mut self, event: Self::Event, shell: &mut dyn Shell);
    /// The loop is ending: stop what runs (the engine thread).
    fn shutdown(&mut self);
}
