//! The player page's local HTTP server: [`Player`] holds its state, [`Player::router`] its
//! routes.
//!
//! # Who may use it
//! The server listens on a loopback address only, and every request passes [`gate`]:
//! - `Host` must be the address and port it listens on (`127.0.0.1:PORT` or `localhost:PORT`):
//!   a foreign site that points its own name at 127.0.0.1 (DNS rebinding) is refused;
//! - an `Origin`, when the browser sends one, must be the page's own, and a request a browser
//!   marks `Sec-Fetch-Site: cross-site` is refused;
//! - every `/api/` call must carry the run's secret (32 random bytes, hex) in `X-Hummel-Secret`.
//!   The secret travels in the page URL's fragment, which browsers never send anywhere; the page
//!   keeps it in its session storage. Another web page cannot read it, and cannot send the
//!   header without a CORS preflight that this server never grants (CSRF). Another local user
//!   does not know it: the binary prints it to its own terminal only, and on Unix opens the
//!   browser through a file readable by its owner only (`open.html` in the config dir), not with
//!   the URL on a command line others can list.
//!
//! Static assets (the page itself) need no secret: they hold no data.
//!
//! # API (JSON; errors are `{"code", "message"}`)
//! - `GET /api/profiles` → the profiles and the sync under way, if any
//! - `POST /api/profiles {"link", "name"?}` → a new profile for the repository the link names
//! - `PUT /api/profiles/{name}` [`ProfileUpdate`] → the profile, saved
//! - `DELETE /api/profiles/{name}` → 204
//! - `GET /api/profiles/{name}/repository` → [`crate::library::RepoView`]
//! - `POST /api/profiles/{name}/sync` → 202 [`crate::library::SyncStatus`]; 409 while one runs
//! - `POST /api/profiles/{name}/launch` [`LaunchRequest`] (optional: a server password) →
//!   [`crate::launch::Launched`]
//! - `GET /api/events` → server-sent events: a `sync` event with each
//!   [`crate::library::SyncStatus`] (read with `fetch`, which can send the secret's header)

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use hummel_client::changes::Current;
use hummel_tls::ClientTls;

use crate::PlayerError;
use crate::launch::{self, Launched};
use crate::library::{self, RepoView, RunState, SyncStatus};
use crate::link;
use crate::profile::{Launcher, Profile, Profiles};

/// The header every API call carries the secret in.
pub const SECRET_HEADER: &str = "X-Hummel-Secret";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Largest request body (a profile is well under 1 KiB).
const MAX_BODY: usize = 64 << 10;

/// What the player server needs.
#[derive(Clone, Debug)]
pub struct PlayerOptions {
    /// Where `profiles.json` lives ([`crate::profile::config_dir`]).
    pub config_dir: PathBuf,
    /// Trust for `https://` repositories.
    pub tls: ClientTls,
}

/// The player server's state. Cheap to clone.
#[derive(Clone)]
pub struct Player {
    inner: Arc<Shared>,
}

struct Shared {
    secret: String,
    addr: SocketAddr,
    opts: PlayerOptions,
    /// Serialises the read-modify-write of the profiles file.
    profiles: tokio::sync::Mutex<()>,
    /// The last current revision seen of each repository URL.
    cache: Mutex<HashMap<String, Arc<Current>>>,
    /// The sync under way (or the last one).
    sync: watch::Sender<Option<SyncStatus>>,
    running: AtomicBool,
}

impl Player {
    /// A player server that listens on `addr` (a loopback address; the `Host` check wants it),
    /// with a new random secret.
    pub fn new(opts: PlayerOptions, addr: SocketAddr) -> Result<Player, PlayerError> {
        if !addr.ip().is_loopback() {
            return Err(PlayerError::Invalid(format!(
                "the player page listens on a loopback address only, not {addr}"
            )));
        }
        let bytes: [u8; 32] = rand::random();
        let secret = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Player {
            inner: Arc::new(Shared {
                secret,
                addr,
                opts,
                profiles: tokio::sync::Mutex::new(()),
                cache: Mutex::new(HashMap::new()),
                sync: watch::Sender::new(None),
                running: AtomicBool::new(false),
            }),
        })
    }

    /// The page's URL, with the secret in its fragment.
    pub fn page_url(&self) -> String {
        format!("http://{}/#{}", self.inner.addr, self.inner.secret)
    }

    /// The routes, behind the gate.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/profiles", get(list_profiles).post(add_profile))
            .route(
                "/profiles/{name}",
                axum::routing::put(update_profile).delete(delete_profile),
            )
            .route("/profiles/{name}/repository", get(repository))
            .route("/profiles/{name}/sync", axum::routing::post(start_sync))
            .route("/profiles/{name}/launch", axum::routing::post(launch_game))
            .route("/events", get(events));
        Router::new()
            .route(
                "/",
                get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
            )
            .route(
                "/app.js",
                get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
            )
            .route(
                "/app.css",
                get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
            )
            .nest("/api", api)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }

    fn config_dir(&self) -> PathBuf {
        self.inner.opts.config_dir.clone()
    }

    async fn load(&self) -> Result<Profiles, PlayerError> {
        let dir = self.config_dir();
        blocking(move || Profiles::load(&dir)).await
    }

    async fn profile(&self, name: &str) -> Result<Profile, PlayerError> {
        Ok(self.load().await?.get(name)?.clone())
    }

    /// Changes the profiles file under the lock.
    async fn modify<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Profiles) -> Result<T, PlayerError> + Send + 'static,
    ) -> Result<T, PlayerError> {
        let _guard = self.inner.profiles.lock().await;
        let dir = self.config_dir();
        blocking(move || {
            let mut profiles = Profiles::load(&dir)?;
            let out = f(&mut profiles)?;
            profiles.save(&dir)?;
            Ok(out)
        })
        .await
    }

    /// The repository's current revision and whole index (fetched again only when the master
    /// names another revision).
    async fn current(&self, profile: &Profile) -> Result<Arc<Current>, PlayerError> {
        let url = profile.repository.clone();
        let known = self.inner.cache.lock().expect("cache").get(&url).cloned();
        let token = profile.read_token.clone().or_else(|| {
            std::env::var("HUMMEL_READ_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
        });
        let current =
            hummel_client::changes::current(&url, token.as_deref(), &self.inner.opts.tls, known)
                .await?;
        self.inner
            .cache
            .lock()
            .expect("cache")
            .insert(url, current.clone());
        Ok(current)
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PlayerError> + Send + 'static,
) -> Result<T, PlayerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PlayerError::Invalid(format!("internal error: {e}")))?
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// A refusal by the gate.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = hummel_proto::ApiErrorBody {
        code: code.into(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// Whether `host` (a `Host` header) names the address the server listens on.
fn host_allowed(host: &str, addr: SocketAddr) -> bool {
    let port = addr.port();
    host == format!("{addr}")
        || host == format!("localhost:{port}")
        || (addr.ip().is_ipv4() && host == format!("127.0.0.1:{port}"))
}

/// Whether `origin` (an `Origin` header) is the page's own.
fn origin_allowed(origin: &str, addr: SocketAddr) -> bool {
    origin
        .strip_prefix("http://")
        .is_some_and(|h| host_allowed(h, addr))
}

/// The checks every request passes (see the module doc), and the headers every answer gets.
async fn gate(State(player): State<Player>, req: Request, next: Next) -> Response {
    let addr = player.inner.addr;
    let headers = req.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if !text(header::HOST).is_some_and(|h| host_allowed(h, addr)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "bad_host",
            "this page answers at its own address only",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| origin_allowed(o, addr))
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "requests from other sites are refused",
        );
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "requests from other sites are refused",
        );
    }
    if req.uri().path().starts_with("/api/") {
        match headers.get(SECRET_HEADER).map(|v| v.to_str()) {
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "no_secret",
                    "open the page with the link `hummel ui` printed",
                );
            }
            Some(Ok(s)) if hummel_proto::auth::tokens_equal(s, &player.inner.secret) => {}
            Some(_) => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "bad_secret",
                    "this page belongs to another run of `hummel ui`: open the link it printed",
                );
            }
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A profile as the page sees it: the read token is never sent back, only whether one is set.
#[derive(Serialize)]
struct ProfileOut {
    #[serde(flatten)]
    profile: Profile,
    has_read_token: bool,
}

impl From<Profile> for ProfileOut {
    fn from(mut profile: Profile) -> ProfileOut {
        let has_read_token = profile.read_token.take().is_some();
        ProfileOut {
            profile,
            has_read_token,
        }
    }
}

#[derive(Serialize)]
struct ProfilesOut {
    profiles: Vec<ProfileOut>,
    sync: Option<SyncStatus>,
    config_dir: String,
}

async fn list_profiles(State(p): State<Player>) -> Result<Json<ProfilesOut>, PlayerError> {
    let profiles = p.load().await?;
    Ok(Json(ProfilesOut {
        profiles: profiles
            .profiles
            .into_iter()
            .map(ProfileOut::from)
            .collect(),
        sync: p.inner.sync.borrow().clone(),
        config_dir: p.config_dir().display().to_string(),
    }))
}

#[derive(Deserialize)]
struct AddProfile {
    link: String,
    #[serde(default)]
    name: Option<String>,
}

async fn add_profile(
    State(p): State<Player>,
    Json(req): Json<AddProfile>,
) -> Result<(StatusCode, Json<ProfileOut>), PlayerError> {
    let url = link::master_url(&req.link)?;
    let probe = Profile::new("probe", url.clone());
    // The repository must answer before it is saved: a typo is said at once.
    p.current(&probe).await?;
    let wanted = req
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| link::default_name(&url));
    let profile = p
        .modify(move |all| {
            let profile = Profile::new(all.free_name(&wanted), url);
            all.put(profile.clone())?;
            Ok(profile)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(profile.into())))
}

/// What the page changes in a profile. `read_token`: `None` keeps the one saved, `""` drops it.
#[derive(Deserialize)]
struct ProfileUpdate {
    folder: PathBuf,
    mods: Vec<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    set: Option<String>,
    #[serde(default)]
    launch: Launcher,
    #[serde(default)]
    parameters: Vec<String>,
    #[serde(default)]
    read_token: Option<String>,
}

async fn update_profile(
    State(p): State<Player>,
    Path(name): Path<String>,
    Json(req): Json<ProfileUpdate>,
) -> Result<Json<ProfileOut>, PlayerError> {
    let profile = p
        .modify(move |all| {
            let mut profile = all.get(&name)?.clone();
            profile.folder = PathBuf::from(req.folder.to_string_lossy().trim());
            profile.mods = req.mods;
            profile.server = req
                .server
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            profile.set = req.set.filter(|s| !s.is_empty());
            profile.launch = req.launch;
            profile.parameters = req.parameters;
            match req.read_token {
                Some(t) if t.is_empty() => profile.read_token = None,
                Some(t) => profile.read_token = Some(t),
                None => {}
            }
            all.put(profile.clone())?;
            Ok(profile)
        })
        .await?;
    Ok(Json(profile.into()))
}

async fn delete_profile(
    State(p): State<Player>,
    Path(name): Path<String>,
) -> Result<StatusCode, PlayerError> {
    p.modify(move |all| {
        all.get(&name)?;
        all.profiles.retain(|x| x.name != name);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn repository(
    State(p): State<Player>,
    Path(name): Path<String>,
) -> Result<Json<RepoView>, PlayerError> {
    let profile = p.profile(&name).await?;
    let current = p.current(&profile).await?;
    let view = blocking(move || Ok(library::view(&profile, &current))).await?;
    Ok(Json(view))
}

async fn start_sync(
    State(p): State<Player>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<SyncStatus>), PlayerError> {
    let profile = p.profile(&name).await?;
    let current = p.current(&profile).await?;
    if p.inner.running.swap(true, Ordering::SeqCst) {
        let what = p
            .inner
            .sync
            .borrow()
            .as_ref()
            .map_or_else(String::new, |s| s.profile.clone());
        return Err(PlayerError::Busy(what));
    }
    let tls = p.inner.opts.tls.clone();
    let player = p.clone();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut first = Some(first_tx);
        let last = library::sync_profile(&profile, &tls, &current, |s| {
            player.inner.sync.send_replace(Some(s.clone()));
            if let Some(tx) = first.take() {
                let _ = tx.send(s.clone());
            }
        })
        .await;
        if last.state == RunState::Failed {
            tracing::warn!(profile = %profile.name, error = ?last.error, "sync failed");
        }
        player.inner.running.store(false, Ordering::SeqCst);
    });
    let first = first_rx
        .await
        .map_err(|_| PlayerError::Invalid("the sync ended at once".into()))?;
    Ok((StatusCode::ACCEPTED, Json(first)))
}

/// What the page sends with a launch: the server password it asked for, if the set wants one.
#[derive(Deserialize, Default)]
struct LaunchRequest {
    #[serde(default)]
    password: Option<String>,
}

async fn launch_game(
    State(p): State<Player>,
    Path(name): Path<String>,
    body: Option<Json<LaunchRequest>>,
) -> Result<Json<Launched>, PlayerError> {
    let mut profile = p.profile(&name).await?;
    // A picked set's mods as the current revision defines them (when the repository answers).
    if profile.set.is_some()
        && let Ok(current) = p.current(&profile).await
    {
        profile = library::with_set(&profile, &current.index);
    }
    let password = body.and_then(|Json(b)| b.password);
    let launched = blocking(move || launch::launch(&profile, password.as_deref())).await?;
    Ok(Json(launched))
}

/// The sync's status as it changes, as server-sent events.
async fn events(State(p): State<Player>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = p.inner.sync.subscribe();
    let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let status = rx.borrow_and_update().clone();
        let data = serde_json::to_string(&status).unwrap_or_else(|_| "null".into());
        Some((Ok(Event::default().event("sync").data(data)), (rx, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_servers_own_address_is_accepted() {
        let addr: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        assert!(host_allowed("127.0.0.1:4567", addr));
        assert!(host_allowed("localhost:4567", addr));
        assert!(!host_allowed("127.0.0.1:4568", addr));
        assert!(!host_allowed("evil.example:4567", addr));
        assert!(!host_allowed("127.0.0.1", addr));
        assert!(origin_allowed("http://127.0.0.1:4567", addr));
        assert!(origin_allowed("http://localhost:4567", addr));
        assert!(!origin_allowed("https://127.0.0.1:4567", addr));
        assert!(!origin_allowed("http://evil.example", addr));
        assert!(!origin_allowed("null", addr));
    }

    #[test]
    fn a_server_on_another_address_than_loopback_is_refused() {
        let opts = PlayerOptions {
            config_dir: PathBuf::from("unused"),
            tls: ClientTls::system(),
        };
        assert!(Player::new(opts.clone(), "0.0.0.0:0".parse().unwrap()).is_err());
        let p = Player::new(opts, "127.0.0.1:4567".parse().unwrap()).unwrap();
        let url = p.page_url();
        assert!(url.starts_with("http://127.0.0.1:4567/#"), "{url}");
        assert_eq!(url.len(), "http://127.0.0.1:4567/#".len() + 64);
    }
}
