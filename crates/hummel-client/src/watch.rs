//! [`RevisionWatch`]: waits until the master announces a revision, for `hummel sync --watch`.
//!
//! It reads the master's server-sent events (`GET /api/v1/events`): the current revision at
//! once, then each new one once its packs can be fetched. A broken or refused stream is opened
//! again after a jittered, growing wait ([`RECONNECT`]: full jitter up to 500 ms × 2^n, at most
//! 30 s), so a fleet of watching servers does not reconnect in step after a master restart. Lines and events are bounded; a stream silent for longer than the client's stall
//! timeout (the master sends a comment every 15 s) counts as broken.

use std::time::Duration;

use hummel_net::Backoff;
use hummel_proto::api::RevisionInfo;
use hummel_tls::ClientTls;
use reqwest::Response;

use crate::SyncError;
use crate::http::{HttpClient, MasterApi};

/// Longest line (and event) accepted from the stream.
const MAX_EVENT: usize = 64 << 10;
/// The wait before opening the stream again, by failures in a row (and before a watching sync
/// that failed tries again).
pub const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// One server-sent event: its `event` name and its `data` lines, joined.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerEvent {
    /// The event's name (`message` when the server names none).
    pub name: String,
    /// Its data lines, joined with `\n`.
    pub data: String,
}

/// Parses a byte stream of server-sent events, bounded: feed it what arrives, take the events
/// it completes.
#[derive(Debug, Default)]
pub struct EventParser {
    line: Vec<u8>,
    name: String,
    data: String,
    has_data: bool,
}

impl EventParser {
    /// Takes `bytes`; returns the events they complete, or an error if a line or an event is
    /// longer than 64 KiB.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<ServerEvent>, String> {
        let mut done = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_EVENT {
                    return Err("an event stream line longer than 64 KiB".into());
                }
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            let line = String::from_utf8_lossy(line);
            if line.is_empty() {
                if self.has_data {
                    done.push(ServerEvent {
                        name: match std::mem::take(&mut self.name) {
                            n if n.is_empty() => "message".into(),
                            n => n,
                        },
                        data: std::mem::take(&mut self.data),
                    });
                }
                self.name.clear();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.name = value.to_string(),
                "data" => {
                    if self.data.len() + value.len() + 1 > MAX_EVENT {
                        return Err("an event longer than 64 KiB".into());
                    }
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        Ok(done)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_across_chunks_and_comments_skipped() {
        let mut p = EventParser::default();
        let mut got = p.feed(b": keep-alive\n\nevent: revi").unwrap();
        assert!(got.is_empty());
        got.extend(
            p.feed(b"sion\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n")
                .unwrap(),
        );
        got.extend(p.feed(b"data: plain\n\n").unwrap());
        assert_eq!(
            got,
            vec![
                ServerEvent {
                    name: "revision".into(),
                    data: "{\"a\":\n1}".into()
                },
                ServerEvent {
                    name: "message".into(),
                    data: "plain".into()
                },
            ]
        );
    }

    #[test]
    fn an_endless_line_or_event_is_refused() {
        let mut p = EventParser::default();
        assert!(p.feed(&vec![b'x'; MAX_EVENT + 1]).is_err());
        let mut p = EventParser::default();
        let line = format!("data: {}\n", "y".repeat(MAX_EVENT / 2));
        assert!(p.feed(line.as_bytes()).is_ok());
        assert!(p.feed(line.as_bytes()).is_err());
    }
}
