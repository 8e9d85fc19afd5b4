//! The admin's drain of a slave (`POST /api/v1/slaves/{id}/drain`, `hummel drain-slave`, the
//! dashboard): the slave gets no new packs, its packs are placed on the other slaves until each
//! has the target copies there, and clients are sent to it only for packs that do not have
//! them yet (the rules are in `crate::placement`, the state in `crate::fleet`'s plan). Once
//! every pack of the current revision it holds has those copies, its status says `drained`
//! and removing it (`crate::identity`) loses nothing the placement wants. The mark is kept in
//! the database (`slaves.draining_ms`) until the slave is removed or the drain called off.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::{ApiError, blocking, valid_id};
use crate::auth::WriteAccess;
use crate::error::MasterError;
use crate::master::Master;
use crate::{lock, now_ms};

impl Master {
    /// Starts (`draining`) or calls off the drain of slave `id`. Returns whether the slave is
    /// known. Blocking: the database first, under the slave's ordering stripe, then memory,
    /// then the placement is computed again.
    pub(crate) fn drain_slave(&self, id: &str, draining: bool) -> Result<bool, MasterError> {
        let fleet = &self.inner.fleet;
        let _order = fleet.order(id);
        let known = lock(&self.inner.db).set_draining(id, draining, now_ms())?;
        if known && let Some(s) = lock(&fleet.tracker).slaves.get_mut(id) {
            s.draining = draining;
        }
        fleet.placement_changed();
        self.ui_changed();
        if known {
            if draining {
                tracing::info!(slave = %id, "draining the slave (admin)");
            } else {
                tracing::info!(slave = %id, "called off the slave's drain (admin)");
            }
        }
        Ok(known)
    }
}

async fn set(master: Master, id: String, draining: bool) -> Result<StatusCode, ApiError> {
    if !valid_id(&id) {
        return Err(ApiError::BadRequest("invalid slave id".into()));
    }
    let name = id.clone();
    if blocking(move || master.drain_slave(&id, draining)).await?? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown_slave",
            format!("no slave {name:?} is known"),
        ))
    }
}

/// `POST /api/v1/slaves/{id}/drain` (write token): starts draining the slave.
pub(crate) async fn start_handler(
    _: WriteAccess,
    State(master): State<Master>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    set(master, id, true).await
}

/// `DELETE /api/v1/slaves/{id}/drain` (write token): calls the drain off.
pub(crate) async fn stop_handler(
    _: WriteAccess,
    State(master): State<Master>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    set(master, id, false).await
}
