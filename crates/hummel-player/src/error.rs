//! [`PlayerError`]: why a call of the player page failed, as one line, and the HTTP status and
//! code the API answers it with (`{"code": ..., "message": ...}`).

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why something the player asked for failed.
#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    /// The pasted link is not one Hummel understands.
    #[error("{0}")]
    Link(String),
    /// No profile of that name.
    #[error("no profile named {0:?}")]
    NoProfile(String),
    /// A profile's settings are unusable (no folder yet, a bad mod name ...).
    #[error("{0}")]
    Invalid(String),
    /// The profiles file could not be read or written.
    #[error("profiles file {path}: {reason}")]
    Profiles {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The per-user config dir is unknown (no HOME, APPDATA or HUMMEL_CONFIG_DIR).
    #[error("no config folder: set HUMMEL_CONFIG_DIR (or {0})")]
    NoConfigDir(&'static str),
    /// A sync is already running.
    #[error("a sync is already running ({0})")]
    Busy(String),
    /// The client failed (master unreachable, folder unwritable ...).
    #[error(transparent)]
    Sync(#[from] hummel_client::SyncError),
    /// The game or the URL handler could not be started.
    #[error("cannot start {program}: {reason}")]
    Launch {
        /// What was started.
        program: String,
        /// Why it failed.
        reason: String,
    },
}

impl PlayerError {
    /// The HTTP status and the API code of this error.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            PlayerError::Link(_) => (StatusCode::BAD_REQUEST, "bad_link"),
            PlayerError::NoProfile(_) => (StatusCode::NOT_FOUND, "no_profile"),
            PlayerError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            PlayerError::Profiles { .. } | PlayerError::NoConfigDir(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "profiles")
            }
            PlayerError::Busy(_) => (StatusCode::CONFLICT, "busy"),
            PlayerError::Sync(_) => (StatusCode::BAD_GATEWAY, "sync"),
            PlayerError::Launch { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "launch"),
        }
    }
}

impl IntoResponse for PlayerError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let body = hummel_proto::ApiErrorBody {
            code: code.to_string(),
            message: self.to_string(),
        };
        (status, axum::Json(body)).into_response()
    }
}
