//! [`MasterClient`]: the slave's two calls to the master, `POST /slave/hashlist` and
//! `POST /slave/heartbeat`, each answered with a [`SlaveDirective`], through
//! [`hummel_net::MasterApi`] (its timeouts, body cap and error decoder); here only what each
//! failure means to the slave.

use hummel_net::{MasterApi, NetError};
use hummel_proto::api::{Heartbeat, SlaveDirective, SlaveHashlist};
use reqwest::StatusCode;

/// A request to the master that did not produce a directive.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MasterError {
    /// No HTTP answer (connect refused, timeout, reset, a refused certificate).
    #[error("master unreachable ({url}): {}", why(source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// 401 or 403: the master does not accept our slave token.
    #[error("master refused the slave token (HTTP {status} from {url})")]
    Refused { status: u16, url: String },
    /// 403 `read_token_mismatch`: the master wants the packs guarded by its read token.
    #[error("master refused this slave ({url}): {message}")]
    ReadToken { url: String, message: String },
    /// 404 `unknown_slave`: the master wants the full hashlist again.
    #[error("master does not know this slave ({url})")]
    UnknownSlave { url: String },
    /// Any other non-2xx answer.
    #[error("master answered HTTP {status} ({url}): {message}")]
    Status {
        status: u16,
        url: String,
        message: String,
    },
    /// A 2xx answer that is not a directive.
    #[error("master sent an invalid directive ({url}): {message}")]
    BadAnswer { url: String, message: String },
}

/// A request's failure for the log, in one short line (what is wrong with the server's
/// certificate when that was it).
pub(crate) fn why(e: &reqwest::Error) -> String {
    hummel_net::describe(e)
}

/// Talks to one master with the slave token.
#[derive(Clone, Debug)]
pub(crate) struct MasterClient {
    api: MasterApi,
}

impl MasterClient {
    pub(crate) fn new(api: MasterApi) -> Self {
        MasterClient { api }
    }

    pub(crate) async fn hashlist(
        &self,
        body: &SlaveHashlist,
    ) -> Result<SlaveDirective, MasterError> {
        let r = self.api.slave_hashlist(body).await;
        r.map_err(|e| self.error(e, false))
    }

    pub(crate) async fn heartbeat(&self, body: &Heartbeat) -> Result<SlaveDirective, MasterError> {
        let r = self.api.slave_heartbeat(body).await;
        r.map_err(|e| self.error(e, true))
    }

    /// What a failed call means to the slave. A heartbeat's 404 always means the master does
    /// not know this slave (masters before the error codes sent no body).
    fn error(&self, e: NetError, heartbeat: bool) -> MasterError {
        let url = self.api.base().to_string();
        match e {
            NetError::Transport { source, .. } => MasterError::Unreachable { url, source },
            NetError::Status { error, .. } => match error.status {
                StatusCode::FORBIDDEN if error.is("read_token_mismatch") => {
                    MasterError::ReadToken {
                        url,
                        message: error.message,
                    }
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => MasterError::Refused {
                    status: error.status.as_u16(),
                    url,
                },
                StatusCode::NOT_FOUND if heartbeat || error.is("unknown_slave") => {
                    MasterError::UnknownSlave { url }
                }
                status => MasterError::Status {
                    status: status.as_u16(),
                    url,
                    message: error.message,
                },
            },
            e @ (NetError::TooLong { .. }
            | NetError::BadAnswer { .. }
            | NetError::BadUrl { .. }
            | NetError::Setup(_)) => MasterError::BadAnswer {
                url,
                message: e.to_string(),
            },
        }
    }
}
