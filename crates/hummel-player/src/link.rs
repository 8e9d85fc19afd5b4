//! The links a player pastes, turned into the master's URL:
//!
//! - the master's URL itself: `http://mods.example:7070` (or `https://`, with a path prefix
//!   behind a reverse proxy);
//! - its join page: `http://mods.example:7070/join` (anything after `/join` is ignored);
//! - the `hummel://` form: `hummel://mods.example:7070/prefix` is `http://...`,
//!   `hummels://...` is `https://...`.

use crate::PlayerError;

/// The master's URL a pasted link names, without a trailing slash.
pub fn master_url(link: &str) -> Result<String, PlayerError> {
    let link = link.trim();
    let bad = |why: &str| {
        PlayerError::Link(format!(
            "{why}: {:?} (paste the repository's link, like http://mods.example:7070)",
            link.chars().take(200).collect::<String>()
        ))
    };
    if link.is_empty() {
        return Err(bad("the link is empty"));
    }
    let (scheme, rest) = link.split_once("://").ok_or_else(|| bad("not a link"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "hummel" => "http",
        "https" | "hummels" => "https",
        _ => return Err(bad("not an http, https or hummel link")),
    };
    // No query or fragment belongs to a master's URL.
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty()
        || host.contains('@')
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(bad("no host in the link"));
    }
    // The master's URL is what stands before the first `join` segment.
    let mut path = path.trim_end_matches('/');
    let mut at = 0;
    for segment in path.split('/') {
        if segment == "join" && at > 0 {
            path = path[..at - 1].trim_end_matches('/');
            break;
        }
        at += segment.len() + 1;
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("spaces in the link"));
    }
    Ok(format!("{scheme}://{host}{path}"))
}

/// A profile name for a repository at `url`: its host.
pub fn default_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_names_the_master() {
        for (link, url) in [
            ("http://127.0.0.1:7070", "http://127.0.0.1:7070"),
            (" http://127.0.0.1:7070/ ", "http://127.0.0.1:7070"),
            ("http://127.0.0.1:7070/join", "http://127.0.0.1:7070"),
            ("http://mods.example/join/", "http://mods.example"),
            (
                "https://mods.example/hummel/join?x=1",
                "https://mods.example/hummel",
            ),
            ("hummel://mods.example:7070", "http://mods.example:7070"),
            (
                "HUMMEL://mods.example:7070/join",
                "http://mods.example:7070",
            ),
            ("hummels://mods.example/a/b", "https://mods.example/a/b"),
            ("http://mods.example/joint", "http://mods.example/joint"),
            ("http://mods.example/join/join", "http://mods.example"),
            ("http://mods.example/a/join/b", "http://mods.example/a"),
        ] {
            assert_eq!(master_url(link).unwrap(), url, "{link}");
        }
        assert_eq!(
            default_name("http://mods.example:7070/x"),
            "mods.example:7070"
        );
    }

    #[test]
    fn other_links_are_refused_with_a_hint() {
        for link in [
            "",
            "mods.example",
            "ftp://mods.example",
            "http://",
            "http://u@h",
            "http://a b",
        ] {
            let e = master_url(link).unwrap_err().to_string();
            assert!(e.contains("link"), "{link}: {e}");
        }
    }
}
