//! Hummel's player page: `hummel ui` serves a local web page on 127.0.0.1 where a player adds a
//! repository by its link, ticks mods, chooses the game's mod folder, syncs with a live
//! progress bar, sees what changed and launches the game. The page is plain HTML, CSS and JS
//! compiled into the binary (no toolchain, nothing loaded from elsewhere); this crate is its
//! HTTP API, using `hummel-client` as a library.
//!
//! # Layout
//! - [`server`]: the local HTTP server: [`server::Player`] (state), the router, and the gate
//!   every request passes: the `Host` must be the loopback address and port the server bound
//!   (DNS rebinding), a present `Origin` must be the page's own, and every `/api/` call must
//!   carry the per-run secret in `X-Hummel-Secret` (the URL's fragment holds it; a foreign page
//!   can neither read it nor send the header without a preflight that is never granted).
//!   Progress is streamed as server-sent events.
//! - [`profile`]: [`profile::Profiles`], the versioned file of saved profiles (repository,
//!   folder, mods, launch settings) in the per-user config dir, shared with
//!   `hummel sync --profile NAME`.
//! - [`link`]: the links a player pastes (the master's URL, its `/join` page, `hummel://`)
//!   turned into the master's URL.
//! - [`library`]: what the page shows of a repository (its name and description, its sets,
//!   mods with size and whether each is up to date in the folder, the changes since the
//!   revision held) and the sync of a profile's mods (a picked set's as the revision defines
//!   them) into the folder as one DEST, each at `FOLDER/MOD`, reporting progress.
//! - [`launch`]: the game's command line (Arma 3 through Steam's `steam://run/107410//...` or
//!   the game's executable; `-mod=`, `-connect=`, `-port=`, `-password=` when asked) and
//!   opening URLs with the system's handler.
//! - [`error`]: [`PlayerError`], one line each, with the HTTP status the API answers it with.
//! - `assets/`: `index.html`, `app.css`, `app.js`, embedded with `include_str!`.
//!
//! The crate never prints: the binary prints the page's URL and decides the exit code.

pub mod error;
pub mod launch;
pub mod library;
pub mod link;
pub mod profile;
pub mod server;

pub use error::PlayerError;
pub use profile::{Profile, Profiles};
pub use server::{Player, PlayerOptions};
