//! `GET /join`: the page a player's link leads to. It says how to use the repository with
//! Hummel's player page (`hummel ui`, or a double-click on `hummel.exe`) and shows the link to
//! paste there; the player page also takes this page's own URL as that link. Public, like the
//! URL it shows: it names nothing else of the repository.

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

/// `GET /join`.
pub(crate) async fn page(State(master): State<Master>, headers: HeaderMap) -> Html<String> {
    let url = escape(&link(&master, &headers));
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>Join with Hummel</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;\
         color:#1f2933;line-height:1.5}}code{{background:#eef1f4;padding:.2em .4em;border-radius:4px;\
         font-size:1.05em;user-select:all}}</style></head><body>\
         <h1>Join this repository with Hummel</h1>\
         <ol><li>Get <code>hummel.exe</code> from your group and double-click it (or run \
         <code>hummel ui</code>): its page opens in your browser.</li>\
         <li>Paste this link there and press Add: <p><code id=\"link\">{url}</code></p></li>\
         <li>Choose your mod folder, tick the mods, press Sync, then Launch.</li></ol>\
         <p>From a terminal: <code>hummel sync {url} FOLDER --path MOD</code></p></body></html>"
    ))
}
