//! `GET /`: the server-rendered dashboard (HTML and CSS, complete without scripts), kept live by
//! a small script (`GET /ui/live.js`) over `GET /ui/events` (`live`), and its actions.
//!
//! - `assets`: the script and the stylesheet as files of their own, and the headers of every
//!   page: a Content-Security-Policy that allows nothing inline and nothing from elsewhere,
//!   no framing, `nosniff`.
//! - `session`: the write token entered once (`POST /ui/login`) buys a session cookie; every
//!   action form carries the session's CSRF token and must come from the page's own origin.
//! - `live`: the server-sent snapshots, built by one producer for every subscriber, and their
//!   bounds.
//! - `pushes`: the "Pushes" section (live; empty when no push is followed).
//! - actions (session, CSRF token, same origin; otherwise 403 and nothing changes): `POST
//!   /ui/build` (also still with the write token as its `token` field), `/ui/rollback`,
//!   `/ui/drain` (`crate::drain`), `/ui/remove-slave`, `/ui/logout`.
//!
//! When a read token is configured the page and its stream need it, either in the token header,
//! as the password of HTTP Basic auth (the browser asks), or a session. Everything taken from
//! requests, slaves, clients or the repository is HTML-escaped. The page says who may see and
//! do what (its "Access" section) and lists the [`DASHBOARD_CLIENTS`] most recent clients, each
//! with how many revisions it is behind, or the revision it is pinned to (`hummel sync
//! --revision N`: counted apart, never as behind).

mod assets;
mod live;
mod pushes;
mod session;

pub(crate) use assets::{page_headers, script, style};
pub(crate) use live::Ui;

use std::fmt::Write;
use std::time::Instant;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use hummel_proto::api::{
    BuildQuery, BuildState, BuildStatus, DrainState, RevisionsResponse, RollbackRequest,
    SlaveState, StatusResponse,
};
use serde::Deserialize;

use crate::api::{ApiError, blocking};
use crate::auth::{Access, check_dashboard, check_token};
use crate::history::HistoryError;
use crate::master::Master;

/// Clients the page lists, most recently seen first.
const DASHBOARD_CLIENTS: usize = 100;

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 GiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `42 s`, `3 min`, `5 h`, `2 d`.
fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// `2024-05-01 12:00:00 UTC`.
fn human_time(unix: i64) -> String {
    let t = crate::utc(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn state_class(state: SlaveState) -> &'static str {
    match state {
        SlaveState::Live => "live",
        SlaveState::Stale => "stale",
        SlaveState::Dead => "dead",
    }
}

fn build_class(state: BuildState) -> &'static str {
    match state {
        BuildState::Running => "running",
        BuildState::Succeeded => "succeeded",
        BuildState::Failed => "failed",
    }
}

/// A small page for a refused or failed form submission.
fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <link rel=\"stylesheet\" href=\"{style}\"></head><body><h1>{t}</h1><p>{m}</p>\
         <p><a href=\"/\">Back to the dashboard</a></p></body></html>",
        t = escape(title),
        m = escape(text),
        style = assets::STYLE_PATH,
    );
    (status, Html(html)).into_response()
}

/// The CSRF token of the request's session, if it has a live one.
fn session_csrf(master: &Master, headers: &HeaderMap) -> Option<String> {
    let id = session::session_id(headers)?;
    master.inner.ui.sessions.csrf(&id, Instant::now())
}

/// Read access: a token as [`check_dashboard`] takes it, or a session.
fn check_read(master: &Master, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let csrf = session_csrf(master, headers);
    if csrf.is_some() {
        return Ok(csrf);
    }
    check_dashboard(&master.config().tokens, headers).map(|()| None)
}

/// Whether the session cookie should be `Secure`.
fn secure(master: &Master) -> bool {
    master
        .public_url()
        .is_some_and(|u| u.starts_with("https://"))
}

/// An action's checks: a live session, its CSRF token, the page's own origin. `Err`: the
/// refusal page (401 without a session, 403 otherwise); nothing changes.
#[allow(clippy::result_large_err)]
fn check_action(master: &Master, headers: &HeaderMap, csrf: &str) -> Result<(), Response> {
    let Some(expected) = session_csrf(master, headers) else {
        return Err(message_page(
            StatusCode::UNAUTHORIZED,
            "Not done",
            "Log in with the write token first.",
        ));
    };
    if !session::same_origin(headers) || !session::csrf_matches(&expected, csrf) {
        return Err(message_page(
            StatusCode::FORBIDDEN,
            "Not done",
            "The form did not come from this dashboard (reload the page and try again).",
        ));
    }
    Ok(())
}

/// `GET /ui/events`: the live snapshots (`live`), with the page's access.
pub(crate) async fn events(State(master): State<Master>, headers: HeaderMap) -> Response {
    let csrf = match check_read(&master, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some(permit) = master.inner.ui.subscribe() else {
        return ApiError::Busy("too many live dashboards".into()).into_response();
    };
    live::stream(master, permit, csrf).into_response()
}

/// The login form's body.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /ui/login`: the write token, once per browser session → the session cookie, back to
/// `/` (303).
pub(crate) async fn login(
    State(master): State<Master>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !session::same_origin(&headers) {
        return message_page(
            StatusCode::FORBIDDEN,
            "Not logged in",
            "The form did not come from this dashboard.",
        );
    }
    let token = form.ok().map(|Form(f)| f.token).filter(|t| !t.is_empty());
    if let Err(e) = check_token(&master.config().tokens, token.as_deref(), Access::Write) {
        let text = match e {
            ApiError::Unauthorized => "Enter the write token.",
            _ => "That is not the write token.",
        };
        return message_page(e.status(), "Not logged in", text);
    }
    let (id, _) = master.inner.ui.sessions.create(Instant::now());
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::cookie(&id, secure(&master))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// An action form's body with its CSRF token only.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: ends the session.
pub(crate) async fn logout(
    State(master): State<Master>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Err(r) = check_action(&master, &headers, &csrf) {
        return r;
    }
    if let Some(id) = session::session_id(&headers) {
        master.inner.ui.sessions.end(&id);
    }
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::expired_cookie(secure(&master))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The slave forms' body.
#[derive(Debug, Deserialize)]
pub(crate) struct SlaveForm {
    #[serde(default)]
    csrf: String,
    slave: String,
    /// Drain form: call the drain off instead.
    #[serde(default)]
    cancel: bool,
}

/// `POST /ui/drain`: starts (or, with `cancel`, calls off) a slave's drain.
pub(crate) async fn drain(
    State(master): State<Master>,
    headers: HeaderMap,
    form: Result<Form<SlaveForm>, FormRejection>,
) -> Response {
    slave_action(master, headers, form, true).await
}

/// `POST /ui/remove-slave`: forgets a slave (`crate::identity`).
pub(crate) async fn remove_slave(
    State(master): State<Master>,
    headers: HeaderMap,
    form: Result<Form<SlaveForm>, FormRejection>,
) -> Response {
    slave_action(master, headers, form, false).await
}

async fn slave_action(
    master: Master,
    headers: HeaderMap,
    form: Result<Form<SlaveForm>, FormRejection>,
    drain: bool,
) -> Response {
    let Ok(Form(f)) = form else {
        let csrf_ok = check_action(&master, &headers, "");
        return csrf_ok.err().unwrap_or_else(|| {
            message_page(StatusCode::BAD_REQUEST, "Not done", "Incomplete form.")
        });
    };
    if let Err(r) = check_action(&master, &headers, &f.csrf) {
        return r;
    }
    if !crate::api::valid_id(&f.slave) {
        return message_page(StatusCode::BAD_REQUEST, "Not done", "No such slave.");
    }
    let id = f.slave;
    let done = blocking(move || {
        if drain {
            master.drain_slave(&id, !f.cancel)
        } else {
            master.remove_slave(&id)
        }
    })
    .await;
    match done {
        Ok(Ok(true)) => Redirect::to("/").into_response(),
        Ok(Ok(false)) => message_page(StatusCode::NOT_FOUND, "Not done", "No such slave."),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a slave action from the dashboard failed");
            message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not done",
                "See the master's log.",
            )
        }
        Err(e) => e.into_response(),
    }
}

/// The rollback form's body.
#[derive(Debug, Deserialize)]
pub(crate) struct RollbackForm {
    #[serde(default)]
    csrf: String,
    revision: u64,
}

/// `POST /ui/rollback`: publishes an older revision's tree again (`crate::history`).
pub(crate) async fn rollback(
    State(master): State<Master>,
    headers: HeaderMap,
    form: Result<Form<RollbackForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        let refused = check_action(&master, &headers, "");
        return refused.err().unwrap_or_else(|| {
            message_page(StatusCode::BAD_REQUEST, "Not done", "Incomplete form.")
        });
    };
    if let Err(r) = check_action(&master, &headers, &f.csrf) {
        return r;
    }
    let req = RollbackRequest {
        revision: f.revision,
        message: None,
        allow_mass_delete: false,
    };
    match blocking(move || master.rollback(&req)).await {
        Ok(Ok(_)) => Redirect::to("/").into_response(),
        Ok(Err(e)) => {
            let why = match e {
                HistoryError::AlreadyCurrent(n) => format!("Revision {n} is current already."),
                HistoryError::Busy(m) | HistoryError::MassDelete(m) => m,
                HistoryError::Unavailable(n) => format!("Revision {n} is no longer stored."),
                HistoryError::Collected { revision, .. } => {
                    format!("Packs of revision {revision} were collected.")
                }
                _ => "See the master's log.".to_string(),
            };
            message_page(StatusCode::CONFLICT, "Not rolled back", &why)
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /`.
pub(crate) async fn page(State(master): State<Master>, headers: HeaderMap) -> Response {
    let csrf = match check_read(&master, &headers) {
        Ok(c) => c,
        Err(e) => return denied(e),
    };
    match blocking(move || render(&master, csrf.as_deref())).await {
        Ok(html) => Html(html).into_response(),
        Err(e) => e.into_response(),
    }
}

fn denied(e: ApiError) -> Response {
    let mut resp = message_page(
        e.status(),
        "Hummel: access denied",
        "This dashboard needs the read token (as the password).",
    );
    if e.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hummel\", charset=\"UTF-8\""),
        );
    }
    resp
}

/// The build form's body.
#[derive(Debug, Deserialize)]
pub(crate) struct BuildForm {
    /// The write token (the form of older pages); without it, the session's `csrf`.
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    csrf: String,
    /// The "allow a mass delete" checkbox (`true` when ticked, absent otherwise).
    #[serde(default)]
    allow_mass_delete: bool,
    /// The revision's message (empty: none).
    #[serde(default)]
    message: String,
}

/// `POST /ui/build`: starts a build, then back to `/` (303), if the form carries the write
/// token, or else the session's CSRF token (see [`check_action`]). The checkbox
/// `allow_mass_delete` confirms a mass delete, as `hummel build --allow-mass-delete` does.
pub(crate) async fn start_build(
    State(master): State<Master>,
    headers: HeaderMap,
    form: Result<Form<BuildForm>, FormRejection>,
) -> Response {
    let (token, csrf, request) = match form {
        Ok(Form(f)) => {
            if !hummel_proto::api::valid_message(&f.message) {
                return message_page(
                    StatusCode::BAD_REQUEST,
                    "Build not started",
                    "The message is too long or holds control characters.",
                );
            }
            (
                f.token,
                f.csrf,
                BuildQuery {
                    allow_mass_delete: f.allow_mass_delete,
                    message: Some(f.message).filter(|m| !m.trim().is_empty()),
                },
            )
        }
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return message_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Build not started",
                "The form was larger than a build form can be.",
            );
        }
        Err(_) => (None, String::new(), BuildQuery::default()),
    };
    if token.is_some() || session::session_id(&headers).is_none() {
        if let Err(e) = check_token(&master.config().tokens, token.as_deref(), Access::Write) {
            let text = match e {
                ApiError::Unauthorized => "Log in with the write token to start a build.",
                _ => "That is not the write token.",
            };
            return message_page(e.status(), "Build not started", text);
        }
    } else if let Err(r) = check_action(&master, &headers, &csrf) {
        return r;
    }
    match blocking(move || master.start_build_with(&request)).await {
        Ok(Ok(_)) => Redirect::to("/").into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not start a build from the dashboard");
            message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Build not started",
                "The build could not be started; see the master's log.",
            )
        }
        Err(e) => e.into_response(),
    }
}

/// Revisions listed in the history section (and counted for "behind by N").
const HISTORY_LISTED: usize = 20;

/// The live sections and figures as of now (`csrf`: the viewer's session, for the action
/// forms). Blocking (takes a status snapshot).
pub(crate) fn snapshot(master: &Master, csrf: Option<&str>) -> live::Snapshot {
    let (status, history) = look(master);
    snapshot_of(&status, &history, csrf)
}

/// [`snapshot`] for a viewer without a session and for one with `placeholder` as its CSRF
/// token, from one look at the master (`live`). Blocking.
pub(crate) fn snapshots(master: &Master, placeholder: &str) -> (live::Snapshot, live::Snapshot) {
    let (status, history) = look(master);
    (
        snapshot_of(&status, &history, None),
        snapshot_of(&status, &history, Some(placeholder)),
    )
}

/// What a snapshot shows: the status and the recent revisions. Blocking.
fn look(master: &Master) -> (StatusResponse, RevisionsResponse) {
    let status = master.status();
    let history = master.revisions(&hummel_proto::api::RevisionsQuery {
        limit: Some(hummel_proto::api::MAX_REVISIONS_LISTED),
        before: None,
    });
    (status, history)
}

fn snapshot_of(
    status: &StatusResponse,
    history: &RevisionsResponse,
    csrf: Option<&str>,
) -> live::Snapshot {
    let shown = &status.clients[..status.clients.len().min(DASHBOARD_CLIENTS)];
    let behind = |rev: u64| {
        history
            .revisions
            .iter()
            .take_while(|r| r.revision > rev)
            .count()
    };
    // A pinned client is where it asked to be: counted apart, never as behind.
    let clients_pinned = shown.iter().filter(|c| c.pinned.is_some()).count() as u64;
    let clients_behind = shown
        .iter()
        .filter(|c| c.pinned.is_none() && behind(c.revision) > 0)
        .count() as u64;
    let mut current = String::new();
    revision_section(&mut current, status);
    let mut build = String::new();
    build_section(&mut build, status.build.as_ref());
    let mut slaves = String::new();
    slaves_section(&mut slaves, status, csrf);
    let mut clients = String::new();
    clients_section(
        &mut clients,
        status,
        &behind,
        (clients_behind, clients_pinned),
    );
    let mut revisions = String::new();
    history_section(&mut revisions, history, status.revision.revision, csrf);
    live::Snapshot {
        revision: status.revision.revision,
        build: status.build.as_ref().map(|b| live::BuildProgress {
            id: b.id,
            state: b.state,
            files_done: b.files_done,
            files_total: b.files_total,
            bytes_done: b.bytes_done,
            bytes_total: b.bytes_total,
            revision: b.revision,
        }),
        slaves: status
            .slaves
            .iter()
            .map(|s| live::SlaveLine {
                id: s.id.clone(),
                state: s.state,
                pending: s.pending,
                drain: s.drain,
                egress: s.egress,
            })
            .collect(),
        clients: shown.len() as u64,
        clients_behind,
        clients_pinned,
        sections: vec![
            ("live-current", current),
            ("live-build", build),
            ("live-pushes", {
                let mut h = String::new();
                pushes::section(&mut h, &status.pushes);
                h
            }),
            ("live-slaves", slaves),
            ("live-clients", clients),
            ("live-history", revisions),
        ],
    }
}

/// Renders the whole page (`csrf`: the viewer's session, if logged in). Blocking.
fn render(master: &Master, csrf: Option<&str>) -> String {
    let snap = snapshot(master, csrf);
    let status = master.status();
    let role = if master.config().embedded_store {
        "serve"
    } else {
        "master"
    };
    let running = status
        .build
        .as_ref()
        .is_some_and(|b| b.state == BuildState::Running);
    let info = crate::join::published_info(master);
    let mut h = String::with_capacity(16 << 10);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><noscript>{refresh}</noscript>\
         <title>Hummel {role}</title><link rel=\"stylesheet\" href=\"{style}\"></head><body>\
         <h1>Hummel {role}</h1><p class=\"muted\">version {version}, API {api}</p>{about}\
         <p>Players: share <a id=\"join-link\" href=\"/join\">{join}/join</a>; they paste it into \
         Hummel's player page (<code>hummel ui</code>, or <code>hummel.exe</code> double-clicked).</p>\
         <p class=\"muted\">Updates: <span id=\"live-status\">on reload</span></p>",
        about = if info.is_empty() {
            String::new()
        } else {
            format!(
                "<p><b id=\"repo-name\">{}</b>{}{}</p>",
                escape(&info.name),
                if info.description.is_empty() {
                    String::new()
                } else {
                    format!(
                        " — <span id=\"repo-description\">{}</span>",
                        escape(&info.description)
                    )
                },
                if info.sets.is_empty() {
                    String::new()
                } else {
                    let names: Vec<String> = info.sets.iter().map(|s| escape(&s.name)).collect();
                    format!(" <span class=\"muted\">sets: {}</span>", names.join(", "))
                }
            )
        },
        join = escape(&master.public_url().unwrap_or_default()),
        refresh = if running {
            "<meta http-equiv=\"refresh\" content=\"2\">"
        } else {
            ""
        },
        version = env!("CARGO_PKG_VERSION"),
        api = status.api_version,
        style = assets::STYLE_PATH,
    );
    login_section(&mut h, csrf);
    for (id, html) in &snap.sections[..2] {
        let _ = write!(h, "<div id=\"{id}\">{html}</div>");
    }
    build_form(&mut h, csrf);
    if let Some(r) = &status.repack {
        let _ = write!(
            h,
            "<p>Repack to zstd level {}: <b>{}</b>, {} passes published, {} saved{}</p>",
            r.level,
            if r.running { "running" } else { "idle" },
            r.runs,
            human_bytes(r.bytes_saved),
            r.last_revision
                .map(|n| format!(", last revision {n}"))
                .unwrap_or_default()
        );
    }
    if let Some(g) = &status.gc {
        let _ = write!(
            h,
            "<p>Garbage collection: keeps {} builds, grace {}; {} packs ({}) and {} revisions \
             collected in {} passes</p>",
            g.keep_revisions,
            human_age(g.grace_s.saturating_mul(1000)),
            g.packs_collected,
            human_bytes(g.bytes_collected),
            g.revisions_expired,
            g.runs
        );
    }
    for (id, html) in &snap.sections[2..] {
        let _ = write!(h, "<div id=\"{id}\">{html}</div>");
    }
    access_section(&mut h, master);
    let _ = write!(
        h,
        "<script src=\"{}\"></script></body></html>",
        assets::SCRIPT_PATH
    );
    h
}

/// The login form, or who is logged in and the logout form.
fn login_section(h: &mut String, csrf: Option<&str>) {
    match csrf {
        Some(c) => {
            let _ = write!(
                h,
                "<form method=\"post\" action=\"/ui/logout\" id=\"session\">Logged in with the \
                 write token for this browser session. <input type=\"hidden\" name=\"csrf\" \
                 value=\"{}\"><button type=\"submit\">Log out</button></form>",
                escape(c)
            );
        }
        None => h.push_str(
            "<form method=\"post\" action=\"/ui/login\" id=\"login\">\
             <label>Write token <input type=\"password\" name=\"token\" autocomplete=\"off\" \
             required></label> <button type=\"submit\">Log in</button> \
             <span class=\"muted\">(once per browser session: builds, rollbacks, slaves)</span></form>",
        ),
    }
}

/// A small form posting `fields` and the session's token to `action`.
fn action_form(csrf: &str, action: &str, fields: &[(&str, &str)], label: &str) -> String {
    let mut f = format!(
        "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    );
    for (name, value) in fields {
        let _ = write!(
            f,
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        );
    }
    let _ = write!(f, "<button type=\"submit\">{label}</button></form>");
    f
}

fn history_section(
    h: &mut String,
    history: &RevisionsResponse,
    current: Option<u64>,
    csrf: Option<&str>,
) {
    h.push_str("<h2>Revision history</h2>");
    if history.revisions.is_empty() {
        h.push_str("<p class=\"muted\">None yet.</p>");
    } else {
        h.push_str(
            "<table><tr><th>revision</th><th>created</th><th class=\"num\">files</th>\
             <th class=\"num\">bytes</th><th>changes</th><th>message</th><th>kept</th><th></th></tr>",
        );
        for r in history.revisions.iter().take(HISTORY_LISTED) {
            let changes = match &r.changes {
                Some(c) => format!(
                    "+{} ~{} &minus;{} files, {}",
                    c.files_added,
                    c.files_updated,
                    c.files_removed,
                    human_bytes(c.bytes_changed)
                ),
                None => "<span class=\"muted\">unknown</span>".into(),
            };
            let mut message = r.message.as_deref().map(escape).unwrap_or_default();
            if r.repack {
                message.push_str(" <span class=\"muted\">(repack)</span>");
            }
            let kept = if !r.available {
                "<span class=\"muted\">collected</span>".to_string()
            } else {
                let why: Vec<String> = r
                    .retained
                    .iter()
                    .filter_map(|w| serde_json::to_value(w).ok()?.as_str().map(String::from))
                    .collect();
                escape(&why.join(", "))
            };
            let action = match csrf {
                Some(c) if r.available && Some(r.revision) != current => action_form(
                    c,
                    "/ui/rollback",
                    &[("revision", &r.revision.to_string())],
                    "Roll back to this",
                ),
                _ => String::new(),
            };
            let _ = write!(
                h,
                "<tr id=\"rev-{n}\"><td class=\"num\">{n}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                human_time(r.created_unix),
                r.files,
                human_bytes(r.bytes),
                changes,
                message,
                kept,
                action,
                n = r.revision,
            );
        }
        h.push_str("</table>");
    }
}

fn revision_section(h: &mut String, status: &StatusResponse) {
    h.push_str("<h2>Current revision</h2>");
    let r = &status.revision;
    match (r.revision, r.created_unix) {
        (Some(n), Some(created)) => {
            let _ = write!(
                h,
                "<table><tr><th>revision</th><td class=\"num\">{n}</td></tr>\
                 <tr><th>files</th><td class=\"num\">{}</td></tr>\
                 <tr><th>size</th><td class=\"num\">{}</td></tr>\
                 <tr><th>created</th><td>{}</td></tr>\
                 <tr><th>index</th><td><code>{}</code></td></tr>{}</table>",
                r.files,
                human_bytes(r.bytes),
                human_time(created),
                r.index_hash.map(|x| x.short()).unwrap_or_default(),
                if r.mass_delete_confirmed {
                    "<tr><th>mass delete</th><td class=\"stale\">confirmed by the admin</td></tr>"
                } else {
                    ""
                }
            );
        }
        _ => h.push_str("<p class=\"muted\">No revision has been published yet.</p>"),
    }
    if let Some(s) = &status.signing {
        // Hex digits only: nothing to escape.
        let _ = write!(
            h,
            "<p>Signing key (players pin it on their first sync, or pass \
             <code>--trust</code>): <code>{}</code>; statements hold {} and are signed again \
             halfway{}.</p>",
            s.fingerprint,
            human_duration(s.expiry_s),
            if s.rotations > 0 {
                format!(", {} key rotation(s) recorded", s.rotations)
            } else {
                String::new()
            }
        );
    }
}

/// `30 days`, `12 h`, `90 s`.
fn human_duration(secs: u64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 7200 => format!("{} h", s / 3600),
        s => format!("{s} s"),
    }
}

fn build_section(h: &mut String, build: Option<&BuildStatus>) {
    h.push_str("<h2>Build</h2>");
    match build {
        None => h.push_str("<p class=\"muted\">No build yet.</p>"),
        Some(b) => {
            let _ = write!(
                h,
                "<p>Build {} <b class=\"{cls}\">{cls}</b>, started {}",
                b.id,
                human_time(b.started_unix),
                cls = build_class(b.state)
            );
            if let Some(f) = b.finished_unix {
                let _ = write!(h, ", finished {}", human_time(f));
            }
            if let Some(r) = b.revision {
                let _ = write!(h, ", revision {r}");
            }
            h.push_str("</p>");
            let _ = write!(
                h,
                "<p><progress max=\"{}\" value=\"{}\"></progress> \
                 {} of {} files ({} reused), {} of {}, {} new packs</p>",
                b.bytes_total.max(1),
                b.bytes_done.min(b.bytes_total.max(1)),
                b.files_done,
                b.files_total,
                b.files_reused,
                human_bytes(b.bytes_done),
                human_bytes(b.bytes_total),
                b.packs_written
            );
            if let Some(e) = &b.error {
                let _ = write!(h, "<p class=\"failed\">Error: {}</p>", escape(e));
            }
            if !b.warnings.is_empty() {
                h.push_str("<details><summary>Warnings</summary><ul>");
                for w in &b.warnings {
                    let _ = write!(h, "<li>{}</li>", escape(w));
                }
                h.push_str("</ul></details>");
            }
        }
    }
}

/// The build form: for a logged-in session, or with the write token.
fn build_form(h: &mut String, csrf: Option<&str>) {
    let auth = match csrf {
        Some(c) => format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            escape(c)
        ),
        None => "<label>Write token <input type=\"password\" name=\"token\" autocomplete=\"off\" \
                 required></label> "
            .to_string(),
    };
    let _ = write!(
        h,
        "<form method=\"post\" action=\"/ui/build\" id=\"build-form\">{auth}\
         <label>Message <input type=\"text\" name=\"message\" maxlength=\"1000\" size=\"40\"></label> \
         <label><input type=\"checkbox\" name=\"allow_mass_delete\" value=\"true\"> allow a mass delete \
         (publish even if the folder is empty or lost most of its files)</label> \
         <button type=\"submit\">Start a build</button></form>",
    );
}

fn slaves_section(h: &mut String, status: &StatusResponse, csrf: Option<&str>) {
    let r = &status.replication;
    h.push_str("<h2>Slaves</h2>");
    if status.slaves.is_empty() {
        h.push_str("<p class=\"muted\">No slave has announced itself.</p>");
    } else {
        h.push_str(
            "<table><tr><th>id</th><th>url</th><th>state</th><th class=\"num\">last heartbeat</th>\
             <th class=\"num\">packs</th><th class=\"num\">used</th><th class=\"num\">quota</th>\
             <th class=\"num\">pending</th><th class=\"num\">verified</th><th>key</th>\
             <th>clients</th><th class=\"num\">egress</th><th>drain</th><th></th></tr>",
        );
        for s in &status.slaves {
            let drain = match s.drain {
                None => "",
                Some(DrainState::Draining) => "<span class=\"running\">draining</span>",
                Some(DrainState::Drained) => {
                    "<span class=\"succeeded\">drained: safe to remove</span>"
                }
            };
            let actions = match csrf {
                Some(c) if s.id != crate::EMBEDDED_SLAVE_ID => {
                    let mut a = if s.drain.is_some() {
                        action_form(
                            c,
                            "/ui/drain",
                            &[("slave", &s.id), ("cancel", "true")],
                            "Stop draining",
                        )
                    } else {
                        action_form(c, "/ui/drain", &[("slave", &s.id)], "Drain")
                    };
                    a.push_str(&action_form(
                        c,
                        "/ui/remove-slave",
                        &[("slave", &s.id)],
                        "Remove",
                    ));
                    a
                }
                _ => String::new(),
            };
            let _ = write!(
                h,
                "<tr data-slave=\"{}\"><td><code>{}</code></td><td>{}</td><td class=\"{cls}\">{cls}</td>\
                 <td class=\"num\">{} ago</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td><code>{}</code></td><td class=\"{}\">{}</td><td class=\"num\">{egress}</td><td class=\"drain\">{drain}</td>\
                 <td>{actions}</td></tr>",
                escape(&s.id),
                escape(&s.id),
                escape(&s.url),
                human_age(s.last_seen_ms),
                s.packs,
                human_bytes(s.used),
                s.quota.map_or_else(|| "unlimited".to_string(), human_bytes),
                s.pending,
                s.verified
                    .map_or_else(|| "all".to_string(), |v| v.to_string()),
                escape(s.key.as_deref().unwrap_or("")),
                if s.withheld.is_some() { "dead" } else { "live" },
                escape(s.withheld.as_deref().unwrap_or("sent")),
                cls = state_class(s.state),
                egress = s
                    .egress
                    .map_or_else(String::new, |e| format!("{}/s", human_bytes(e))),
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h2>Replication</h2><table><tr><th>target copies</th><td class=\"num\">{}</td></tr>\
         <tr><th>packs in the current revision</th><td class=\"num\">{}</td></tr>\
         <tr><th>under-replicated</th><td class=\"num {}\">{}</td></tr>\
         <tr><th>unavailable</th><td class=\"num {}\">{}</td></tr></table>",
        r.target,
        r.packs,
        if r.under_replicated > 0 {
            "stale"
        } else {
            "live"
        },
        r.under_replicated,
        if r.unavailable > 0 { "dead" } else { "live" },
        r.unavailable
    );
    if let Some(rp) = &status.replicating {
        let _ = write!(
            h,
            "<p class=\"running\">Replicating: {} packs below {} copies, {} on no mirror yet",
            rp.packs, r.target, rp.without_copy
        );
        if rp.without_copy > 0 && rp.master_fallback {
            let _ = write!(
                h,
                "; the master serves those itself meanwhile ({} of {} downloads)",
                rp.fallback_active, rp.fallback_limit
            );
        }
        h.push_str(".</p>");
    }
}

/// Who may see and do what, from the master's configuration.
fn access_section(h: &mut String, master: &Master) {
    let config = master.config();
    let tokens = &config.tokens;
    let private = tokens.read.is_some();
    let reads = if private {
        "need the read token (the write token works too)"
    } else {
        "are public: anyone who reaches this address"
    };
    let metrics = match (&tokens.metrics, private) {
        (None, false) => "public",
        (Some(_), false) => "need the metrics token (or the write token)",
        (None, true) => "need the read token (or the write token)",
        (Some(_), true) => "need the metrics or the read token (or the write token)",
    };
    let slaves = if private {
        "need the slave token and their own key (the first announce enrolls it; another \
         key for the id is refused until the admin removes the slave), and must guard their \
         packs with the read token: a slave without it is refused and never sent clients"
    } else {
        "need the slave token and their own key (the first announce enrolls it; another \
         key for the id is refused until the admin removes the slave); their packs are \
         public, like the master's"
    };
    let packs = crate::read(&master.inner.catalog.packs).by_number.len();
    let rate = if config.rate_limit == 0 {
        "no per-address rate limit".to_string()
    } else {
        format!(
            "{} requests a second per client address (bursts of {})",
            config.rate_limit,
            config.rate_limit.saturating_mul(crate::RATE_BURST_SECONDS)
        )
    };
    let _ = write!(
        h,
        "<h2>Access</h2><table>\
         <tr><th>this page, status, index, locate, packs</th><td>{reads}</td></tr>\
         <tr><th>/metrics</th><td>{metrics}</td></tr>\
         <tr><th>builds (POST /build, the form above), rollbacks</th><td>need the write token</td></tr>\
         <tr><th>slaves</th><td>{slaves}</td></tr>\
         <tr><th>client reports</th><td>{reads}; each client id is tied to its client's \
         key, and rows expire {retention} after the last report</td></tr>\
         <tr><th>/health</th><td>public</td></tr>\
         <tr><th>limits</th><td>{rate}; {at_once} API requests at once; locate bodies up to \
         {locate} bytes ({packs} packs)</td></tr></table>",
        retention =
            human_age(u64::try_from(config.client_retention.as_millis()).unwrap_or(u64::MAX)),
        at_once = crate::limits::MAX_API_REQUESTS,
        locate = hummel_proto::api::locate_body_limit(packs),
    );
}

fn clients_section(
    h: &mut String,
    status: &StatusResponse,
    behind: &dyn Fn(u64) -> usize,
    (clients_behind, clients_pinned): (u64, u64),
) {
    h.push_str("<h2>Clients</h2>");
    if status.clients.is_empty() {
        h.push_str("<p class=\"muted\">No client has reported.</p>");
        return;
    }
    let _ = write!(
        h,
        "<p id=\"clients-behind\">{clients_behind} behind the current revision{}.</p>",
        if clients_pinned > 0 {
            format!(
                "; <span id=\"clients-pinned\">{clients_pinned} pinned</span> to a revision \
                 of their choice (<code>hummel sync --revision N</code>)"
            )
        } else {
            String::new()
        }
    );
    let total = status.clients_total.unwrap_or(status.clients.len() as u64);
    let shown = status.clients.len().min(DASHBOARD_CLIENTS);
    if total > shown as u64 {
        let _ = write!(
            h,
            "<p class=\"muted\">The {shown} most recent of {total} clients.</p>"
        );
    }
    h.push_str(
        "<table><tr><th>id</th><th>address</th><th class=\"num\">revision</th><th>state</th><th>path</th>\
         <th class=\"num\">files</th><th class=\"num\">bytes</th><th class=\"num\">last seen</th></tr>",
    );
    for c in status.clients.iter().take(DASHBOARD_CLIENTS) {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} ago</td></tr>",
            escape(&c.id),
            escape(&c.addr),
            c.revision,
            match (c.pinned, behind(c.revision)) {
                (Some(n), _) => format!("<span class=\"muted pinned\">pinned to {n}</span>"),
                (None, 0) => "<span class=\"live\">current</span>".to_string(),
                (None, n) if n >= hummel_proto::api::MAX_REVISIONS_LISTED => {
                    format!("<span class=\"stale\">behind by {n}+</span>")
                }
                (None, n) => format!("<span class=\"stale\">behind by {n}</span>"),
            },
            if c.path.is_empty() {
                "(all)".to_string()
            } else {
                escape(&c.path)
            },
            c.files,
            human_bytes(c.bytes),
            human_age(c.last_seen_ms)
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn formats_for_humans() {
        assert_eq!(human_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(human_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_age(5_000), "5 s");
        assert_eq!(human_age(600_000), "10 min");
    }
}
