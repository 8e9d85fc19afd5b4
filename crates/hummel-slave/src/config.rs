//! [`SlaveConfig`]: everything the binary decides for a slave.

use std::path::PathBuf;
use std::time::Duration;

use hummel_tls::ClientTls;

use crate::SlaveError;

/// Default for [`SlaveConfig::replication_concurrency`].
pub const DEFAULT_REPLICATION_CONCURRENCY: usize = 4;

/// How a slave is set up.
#[derive(Clone)]
pub struct SlaveConfig {
    /// Base URL of the master, e.g. `http://127.0.0.1:7070` (a trailing `/` is removed).
    pub master_url: String,
    /// Data folder: the store lives at `DATA/store`, the id at `DATA/slave-id`.
    pub data: PathBuf,
    /// The URL clients and other slaves reach this slave at. The binary may set it after
    /// binding with [`crate::Slave::set_advertise_url`].
    pub advertise_url: String,
    /// Most bytes to store; `None` for unlimited.
    pub quota: Option<u64>,
    /// Token for `/slave/*` on the master and for fetching packs from other slaves.
    pub slave_token: String,
    /// If set, `GET /blob` wants this token or the slave token. The master must have the same
    /// one (it refuses the slave otherwise).
    pub read_token: Option<String>,
    /// If set, `GET /metrics` wants this token (or the read token).
    pub metrics_token: Option<String>,
    /// Packs fetched at once (0 is treated as 1).
    pub replication_concurrency: usize,
    /// How often to re-verify every pack; `None` turns scrubbing off.
    pub scrub_interval: Option<Duration>,
    /// Most bytes per second `/blob` sends, all clients together; `None` for no cap.
    pub serve_limit: Option<u64>,
    /// Whom `https://` URLs (the master's, other slaves') must be certified by.
    pub tls: ClientTls,
}

impl std::fmt::Debug for SlaveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens never reach logs.
        f.debug_struct("SlaveConfig")
            .field("master_url", &self.master_url)
            .field("data", &self.data)
            .field("advertise_url", &self.advertise_url)
            .field("quota", &self.quota)
            .field("slave_token", &"<redacted>")
            .field(
                "read_token",
                &self.read_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .field("replication_concurrency", &self.replication_concurrency)
            .field("scrub_interval", &self.scrub_interval)
            .field("serve_limit", &self.serve_limit)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Trims whitespace and trailing slashes from a base URL.
pub(crate) fn normalise_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

impl SlaveConfig {
    /// Checks the configuration and normalises URLs and limits.
    pub(crate) fn normalised(mut self) -> Result<SlaveConfig, SlaveError> {
        self.master_url = normalise_url(&self.master_url);
        self.advertise_url = normalise_url(&self.advertise_url);
        if !(self.master_url.starts_with("http://") || self.master_url.starts_with("https://")) {
            return Err(SlaveError::Config(format!(
                "master URL must start with http:// or https://, got {:?}",
                self.master_url
            )));
        }
        if self.slave_token.is_empty() {
            return Err(SlaveError::Config("the slave token is empty".into()));
        }
        if self.read_token.as_deref() == Some("") {
            self.read_token = None;
        }
        if self.metrics_token.as_deref() == Some("") {
            self.metrics_token = None;
        }
        if self.scrub_interval == Some(Duration::ZERO) {
            return Err(SlaveError::Config("the scrub interval must be > 0".into()));
        }
        if self.serve_limit == Some(0) {
            return Err(SlaveError::Config("the upload limit must be > 0".into()));
        }
        self.replication_concurrency = self.replication_concurrency.clamp(1, 256);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SlaveConfig {
        SlaveConfig {
            master_url: " http://m:7070// ".into(),
            data: PathBuf::from("/nonexistent"),
            advertise_url: "http://s:1/".into(),
            quota: None,
            slave_token: "secret-slave".into(),
            read_token: Some(String::new()),
            metrics_token: None,
            replication_concurrency: 0,
            scrub_interval: None,
            serve_limit: None,
            tls: hummel_tls::ClientTls::system(),
        }
    }

    #[test]
    fn normalises() {
        let c = base().normalised().unwrap();
        assert_eq!(c.master_url, "http://m:7070");
        assert_eq!(c.advertise_url, "http://s:1");
        assert_eq!(c.replication_concurrency, 1);
        assert_eq!(c.read_token, None);
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = base();
        c.master_url = "m:7070".into();
        assert!(matches!(c.normalised(), Err(SlaveError::Config(_))));
        let mut c = base();
        c.slave_token.clear();
        assert!(c.normalised().is_err());
        let mut c = base();
        c.scrub_interval = Some(Duration::ZERO);
        assert!(c.normalised().is_err());
    }

    #[test]
    fn debug_hides_tokens() {
        let s = format!("{:?}", base());
        assert!(!s.contains("secret-slave"));
    }
}
