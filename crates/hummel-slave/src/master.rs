//! [`MasterClient`]: the slave's two calls to the master, `POST /slave/hashlist` and
//! `POST /slave/heartbeat`, each answered with a [`SlaveDirective`], through
//! [`hummel_net::MasterApi`] (its timeouts, body cap and error decoder); here only the
//! signing and what each failure means to the slave.
//!
//! Every request is signed with the slave's key ([`hummel_proto::identity`]) under a nonce
//! above any this process used: its clock in milliseconds, or one more than the last. A master
//! that has seen a higher one (a clock set back, a restart within the same millisecond) answers
//! 409 `slave_nonce_stale` with its highest; `hummel_net` signs the request again above it and
//! sends it once more.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hummel_net::{MasterApi, NetError, SlaveSigner};
use hummel_proto::api::{Heartbeat, SlaveDirective, SlaveHashlist};
use hummel_proto::identity::SlaveKey;
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
    /// 403 `slave_identity_mismatch`: the master knows this slave id by another key.
    #[error("master refused this slave ({url}): {message}")]
    Identity { url: String, message: String },
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

/// Signs as slave `id` with `key`, under ever higher nonces.
#[derive(Debug)]
struct Signer {
    id: String,
    key: SlaveKey,
    /// The last nonce used (or the highest the master named).
    nonce: AtomicU64,
}

impl Signer {
    /// A nonce above every one used before: the clock in milliseconds, or the last plus one.
    fn next_nonce(&self) -> u64 {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut last = self.nonce.load(Ordering::Relaxed);
        loop {
            let next = clock.max(last.saturating_add(1));
            match self
                .nonce
                .compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(now) => last = now,
            }
        }
    }
}

impl SlaveSigner for Signer {
    fn identity_headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        above: Option<u64>,
    ) -> Vec<(&'static str, String)> {
        if let Some(highest) = above {
            self.nonce.fetch_max(highest, Ordering::Relaxed);
        }
        let nonce = self.next_nonce();
        self.key
            .sign_request(method, path, &self.id, nonce, body)
            .to_vec()
    }
}

/// Talks to one master with the slave token, signing as slave `id` with `key`.
#[derive(Clone, Debug)]
pub(crate) struct MasterClient {
    api: MasterApi,
    signer: Arc<Signer>,
}

impl MasterClient {
    pub(crate) fn new(api: MasterApi, id: String, key: SlaveKey) -> Self {
        MasterClient {
            api,
            signer: Arc::new(Signer {
                id,
                key,
                nonce: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) async fn hashlist(
        &self,
        body: &SlaveHashlist,
    ) -> Result<SlaveDirective, MasterError> {
        let r = self.api.slave_hashlist(body, &*self.signer).await;
        r.map_err(|e| self.error(e, false))
    }

    pub(crate) async fn heartbeat(&self, body: &Heartbeat) -> Result<SlaveDirective, MasterError> {
        let r = self.api.slave_heartbeat(body, &*self.signer).await;
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
                StatusCode::FORBIDDEN if error.is("slave_identity_mismatch") => {
                    MasterError::Identity {
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
