//! Wire types shared by Hummel's master, slaves and clients. Serde only: no HTTP stack.
//!
//! # Layout
//! - [`auth`]: the token header and which token each endpoint wants.
//! - [`api`]: every endpoint's path and its request and response bodies, grouped by who calls it
//!   (client → master, slave → master, anyone → slave).
//! - [`identity`]: each slave's own Ed25519 key, and how a slave → master request is signed
//!   and verified.
//! - [`ApiErrorBody`]: the JSON body of every error response.
//!
//! Both sides use these types, so the master and its callers cannot drift apart. Bodies are JSON
//! except the index, which travels in the binary envelope of [`hummel_core::index`].

pub mod api;
pub mod auth;
pub mod identity;

use serde::{Deserialize, Serialize};

/// Body of every non-2xx response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Stable machine-readable code, e.g. `unauthorized`, `not_found`, `unknown_slave`.
    pub code: String,
    /// One human-readable line.
    pub message: String,
}

/// Version of this HTTP API; sent by the master in `/api/v1/status` and `/health`.
pub const API_VERSION: u32 = 1;
