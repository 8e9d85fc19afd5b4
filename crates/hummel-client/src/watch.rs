//! [`RevisionWatch`]: waits until the master announces a revision, for `hummel sync --watch`.
//!
//! It reads the master's server-sent events (`GET /api/v1/events`): the current revision at
//! once, then each new one once its packs can be fetched. A broken or refused stream is opened
//! again after a jittered, growing wait ([`RECONNECT`]: full jitter up to 500 ms × 2^n, at most
//! 30 s), so a fleet of watching servers does not reconnect in step after a master restart. Lines and events are bounded; a stream silent for longer than the client's stall
//! timeout (the master sends a comment every 15 s) counts as broken.

use std::time::Duration;

use hummel_net::Backoff;
pub use hummel_net::sse::{EventParser, ServerEvent};
use hummel_proto::api::RevisionInfo;
use hummel_tls::ClientTls;
use reqwest::Response;

use crate::SyncError;
use crate::http::{HttpClient, MasterApi};

/// The wait before opening the stream again, by failures in a row (and before a watching sync
/// that failed tries again).
pub const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// Follows a master's announcements (see the module documentation).
pub struct RevisionWatch {
    master: MasterApi,
    stream: Option<(Response, EventParser)>,
    failures: u32,
}

impl RevisionWatch {
    /// A watch of the master at `master_url`, with the sync's read token and TLS trust.
    pub fn new(
        master_url: &str,
        read_token: Option<&str>,
        tls: &ClientTls,
    ) -> Result<RevisionWatch, SyncError> {
        let http = HttpClient::new(read_token, tls)?;
        Ok(RevisionWatch {
            master: MasterApi::new(http, master_url)?,
            stream: None,
            failures: 0,
        })
    }

    /// Waits until the master announces a revision other than `held`, and returns it.
    /// Connection problems are logged and retried, never returned.
    pub async fn next_other_than(&mut self, held: Option<u64>) -> u64 {
        loop {
            match self.next_announced().await {
                Ok(info) => match info.revision {
                    Some(n) if Some(n) != held => return n,
                    _ => {}
                },
                Err(e) => {
                    self.stream = None;
                    self.failures = self.failures.saturating_add(1);
                    let wait = RECONNECT.delay(self.failures);
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "waiting for the master's news failed"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The next revision the stream announces, connecting first if needed.
    async fn next_announced(&mut self) -> Result<RevisionInfo, SyncError> {
        let base = self.master.base().to_string();
        let master_error = |reason: String| SyncError::Master {
            url: base.clone(),
            reason,
        };
        loop {
            let (resp, parser) = match &mut self.stream {
                Some(s) => s,
                None => {
                    let resp = self.master.events().await?;
                    self.stream.insert((resp, EventParser::default()))
                }
            };
            let chunk = resp.chunk().await.map_err(|e| {
                master_error(format!("event stream: {}", crate::http::describe(&e)))
            })?;
            let Some(chunk) = chunk else {
                // The master ends each stream after a while: connect again at once.
                self.stream = None;
                continue;
            };
            let events = parser.feed(&chunk).map_err(master_error)?;
            self.failures = 0;
            if let Some(e) = events.into_iter().rev().find(|e| e.name == "revision") {
                return serde_json::from_str(&e.data)
                    .map_err(|err| master_error(format!("bad revision event: {err}")));
            }
        }
    }
}
