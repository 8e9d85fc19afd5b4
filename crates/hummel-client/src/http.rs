//! The client's side of [`hummel_net`]: its [`HttpClient`] (the shared client with the read
//! token, sent to the master and to slaves alike) and [`MasterApi`], the four master endpoints
//! a client calls, with their failures as [`SyncError`]s naming the master.
//!
//! Requests, timeouts, body caps, busy retries and error decoding are `hummel_net`'s; the index
//! is decoded and validated by the caller, pack bytes are verified chunk by chunk in
//! [`crate::fetch`].

use hummel_core::{Hash, RelPath};
use hummel_net::NetError;
use hummel_proto::api::{ClientReport, LocateResponse, RevisionInfo};
use hummel_tls::ClientTls;

use crate::SyncError;

pub(crate) use hummel_net::{IndexAnswer, describe, normalise_url};

/// The shared HTTP client with the optional read token.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient(hummel_net::HttpClient);

impl HttpClient {
    pub(crate) fn new(read_token: Option<&str>, tls: &ClientTls) -> Result<HttpClient, SyncError> {
        let setup = |e: NetError| match e {
            NetError::Setup(why) => SyncError::Options(why),
            e => SyncError::Internal(e.to_string()),
        };
        let http = hummel_net::HttpClient::new(tls).map_err(setup)?;
        Ok(HttpClient(
            http.with_token(read_token, "read").map_err(setup)?,
        ))
    }

    /// `GET {slave_url}/blob/{pack}` with the read token; the caller adds the range.
    pub(crate) fn blob(
        &self,
        slave_url: &str,
        pack: &Hash,
    ) -> Result<reqwest::RequestBuilder, NetError> {
        self.0.blob(slave_url, pack)
    }
}

/// The master's client API.
#[derive(Clone, Debug)]
pub(crate) struct MasterApi {
    api: hummel_net::MasterApi,
}

impl MasterApi {
    /// `base` is the master URL (`http://host:port`, maybe with a path prefix).
    pub(crate) fn new(http: HttpClient, base: &str) -> Result<MasterApi, SyncError> {
        let api = hummel_net::MasterApi::new(http.0, base).map_err(|e| SyncError::Master {
            url: normalise_url(base),
            reason: e.to_string(),
        })?;
        Ok(MasterApi { api })
    }

    /// The normalised base URL.
    pub(crate) fn base(&self) -> &str {
        self.api.base()
    }

    /// An error answer with the API's code is the master refusing; anything else, a master
    /// that could not be used.
    fn err(&self, e: NetError) -> SyncError {
        let url = self.api.base().to_string();
        match e {
            NetError::Status { error, .. } if error.code.is_some() => SyncError::MasterRefused {
                url,
                status: error.status.as_u16(),
                code: error.code.unwrap_or_default(),
                message: error.message,
            },
            e => SyncError::Master {
                url,
                reason: e.to_string(),
            },
        }
    }

    /// `GET /api/v1/events`: the open stream of server-sent events.
    pub(crate) async fn events(&self) -> Result<reqwest::Response, SyncError> {
        self.api.events().await.map_err(|e| self.err(e))
    }

    /// `GET /api/v1/revision`.
    pub(crate) async fn revision(&self) -> Result<RevisionInfo, SyncError> {
        self.api.revision().await.map_err(|e| self.err(e))
    }

    /// `GET /api/v1/revision?revision=N`: revision N, for a DEST pinned to it.
    pub(crate) async fn revision_at(&self, revision: u64) -> Result<RevisionInfo, SyncError> {
        self.api
            .revision_at(revision)
            .await
            .map_err(|e| self.err(e))
    }

    /// `GET /api/v1/index?revision=N&path=SUB[&since=M]`: the encoded index, or a delta from
    /// revision M when `since` is given and the master can. Not decoded here.
    pub(crate) async fn index(
        &self,
        revision: u64,
        path: Option<&RelPath>,
        since: Option<u64>,
    ) -> Result<IndexAnswer, SyncError> {
        self.api
            .index(revision, path, since)
            .await
            .map_err(|e| self.err(e))
    }

    /// `POST /api/v1/locate`, its answer's shape checked against the request.
    pub(crate) async fn locate(&self, packs: &[u32]) -> Result<LocateResponse, SyncError> {
        self.api.locate(packs).await.map_err(|e| self.err(e))
    }

    /// `POST /api/v1/client/report`, best effort.
    pub(crate) async fn report(&self, report: &ClientReport) -> Result<(), SyncError> {
        self.api.report(report).await.map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_token_is_refused_without_echoing_it() {
        let e = HttpClient::new(Some("sec\nret"), &ClientTls::system())
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("sec"), "{e}");
    }

    #[test]
    fn refusals_keep_the_apis_code_and_the_rest_name_the_call() {
        let http = HttpClient::new(None, &ClientTls::system()).unwrap();
        let m = MasterApi::new(http, "http://127.0.0.1:9/").unwrap();
        assert_eq!(m.base(), "http://127.0.0.1:9");
        let refused = m.err(NetError::Status {
            what: "report",
            error: hummel_net::ApiError::decode(
                reqwest::StatusCode::FORBIDDEN,
                br#"{"code":"client_key_mismatch","message":"another key"}"#,
            ),
        });
        assert!(
            matches!(&refused, SyncError::MasterRefused { code, status: 403, .. } if code == "client_key_mismatch"),
            "{refused:?}"
        );
        let other = m.err(NetError::Status {
            what: "index",
            error: hummel_net::ApiError::decode(reqwest::StatusCode::BAD_GATEWAY, b"proxy"),
        });
        assert_eq!(
            other.to_string(),
            "master http://127.0.0.1:9: index: HTTP 502 Bad Gateway: proxy"
        );
    }
}
