//! `GET /join`: the page a player's link leads to. It shows the repository's name,
//! description and sets (as the current revision publishes them, else as configured), says how
//! to use it with Hummel's player page (`hummel ui`, or a double-click on `hummel.exe`) and
//! shows the link to paste there, also in its `hummel://` form; the player page also takes
//! this page's own URL as that link. Public, like the URL it shows: it names nothing of the
//! repository beyond what its admin published for players. Its style is the dashboard's
//! stylesheet (`/ui/style.css`), under the dashboard's Content-Security-Policy.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;

use crate::dashboard::escape;
use crate::master::Master;

/// The link players paste: the master's public URL, else the address the request came to.
pub(crate) fn link(master: &Master, headers: &HeaderMap) -> String {
    master.public_url().unwrap_or_else(|| {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("this-server");
        format!("http://{host}")
    })
}

/// The `hummel://` (or `hummels://`) form of a master's URL, which the player page reads.
pub(crate) fn hummel_link(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("hummels://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("hummel://{rest}")
    } else {
        url.to_string()
    }
}

/// The repository's info as players see it: the current revision's (signed), else the
/// configured name and description.
pub(crate) fn published_info(master: &Master) -> hummel_core::RepoInfo {
    match master.current() {
        Some(r) => r.index.info.clone(),
        None => hummel_core::RepoInfo {
            name: master.config().info.name.clone(),
            description: master.config().info.description.clone(),
            sets: Vec::new(),
        },
    }
}

/// `GET /join`.
pub(crate) async fn page(State(master): State<Master>, headers: HeaderMap) -> Html<String> {
    let raw = link(&master, &headers);
    let url = escape(&raw);
    let info = published_info(&master);
    let title = if info.name.is_empty() {
        "Join this repository with Hummel".to_string()
    } else {
        format!("Join {} with Hummel", escape(&info.name))
    };
    let mut about = String::new();
    if !info.description.is_empty() {
        about.push_str(&format!(
            "<p id=\"description\">{}</p>",
            escape(&info.description).replace('\n', "<br>")
        ));
    }
    if !info.sets.is_empty() {
        about.push_str("<h2>Sets</h2><ul id=\"sets\">");
        for s in &info.sets {
            let mods: Vec<String> = s.mods.iter().map(|m| escape(m.as_str())).collect();
            about.push_str(&format!(
                "<li data-set=\"{n}\"><b>{n}</b>{d}: {m}{server}<br><code>hummel sync {url} \
                 FOLDER --set {n}</code></li>",
                n = escape(&s.name),
                d = if s.description.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", escape(&s.description))
                },
                m = mods.join(", "),
                server = s
                    .server
                    .as_ref()
                    .map(|v| format!("; server {}:{}", escape(&v.address), v.port))
                    .unwrap_or_default(),
            ));
        }
        about.push_str("</ul>");
    }
    let hummel = escape(&hummel_link(&raw));
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>Join with Hummel</title>\
         <link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body class=\"join\">\
         <h1 id=\"name\">{title}</h1>{about}\
         <h2>How to join</h2>\
         <ol><li>Get <code>hummel.exe</code> from your group and double-click it (or run \
         <code>hummel ui</code>): its page opens in your browser.</li>\
         <li>Paste this link there and press Add: <p><code id=\"link\">{url}</code></p>\
         <p class=\"muted\">(or <a id=\"hummel-link\" href=\"{hummel}\">{hummel}</a>)</p></li>\
         <li>Choose your mod folder, pick a set or tick the mods, press Sync, then Launch.</li></ol>\
         <p>From a terminal: <code>hummel sync {url} FOLDER --path MOD</code></p></body></html>"
    ))
}
