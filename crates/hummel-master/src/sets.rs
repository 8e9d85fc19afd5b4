//! The admin's sets file (`sets.toml`): read at each build into the index's info section
//! ([`RepoInfo`]) with the name and description given on the command line.
//!
//! ```toml
//! [[set]]
//! name = "ops"
//! description = "Sunday operations"
//! mods = ["@ace", "@cba_a3"]
//! [set.server]        # optional launch parameters
//! address = "play.example.org"
//! port = 2302
//! password = true     # the page asks for it at launch
//! ```
//!
//! Every mistake fails the build with one line naming the file and line: bad TOML, an unknown
//! key (a typo would otherwise be silently ignored), a wrong type, a duplicate set name, a
//! folder the repository does not hold at its top level, a bound of [`hummel_core::info`].

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hummel_core::{RelPath, RepoInfo, ServerInfo, SetInfo};
use toml_edit::{Item, Table, Value};

use crate::config::InfoConfig;

/// Why the sets file was refused: one line, `FILE:LINE: what`.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub(crate) struct SetsError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// The sets file a build reads: the one given, else `DATA/sets.toml` when present.
pub(crate) fn sets_file(config: &InfoConfig, data_dir: &Path) -> Option<PathBuf> {
    config.sets_file.clone().or_else(|| {
        let default = data_dir.join("sets.toml");
        default.is_file().then_some(default)
    })
}

/// The info section of the next revision: the configured name and description, and the sets
/// of the sets file (if any), each naming top-level folders among `top_dirs`. Blocking (reads
/// a small file).
pub(crate) fn read_info(
    config: &InfoConfig,
    data_dir: &Path,
    top_dirs: &HashSet<&str>,
) -> Result<RepoInfo, SetsError> {
    let mut info = RepoInfo {
        name: config.name.clone(),
        description: config.description.clone(),
        sets: Vec::new(),
    };
    if let Some(file) = sets_file(config, data_dir) {
        let shown = file.display().to_string();
        // A sets file is a few kilobytes; a bound keeps a wrong path (a disk image) cheap.
        const MAX_SETS_FILE: u64 = 4 << 20;
        let len = std::fs::metadata(&file)
            .map_err(|e| SetsError {
                file: shown.clone(),
                line: None,
                message: format!("cannot read it: {e}"),
            })?
            .len();
        if len > MAX_SETS_FILE {
            return Err(SetsError {
                file: shown,
                line: None,
                message: format!("{len} bytes (at most {MAX_SETS_FILE})"),
            });
        }
        let text = std::fs::read_to_string(&file).map_err(|e| SetsError {
            file: shown.clone(),
            line: None,
            message: format!("cannot read it: {e}"),
        })?;
        info.sets = parse_sets(&text, top_dirs).map_err(|(span, message)| SetsError {
            line: span.map(|s| line_of(&text, s.start)),
            file: shown,
            message,
        })?;
    }
    info.validate().map_err(|e| SetsError {
        file: config.sets_file.as_ref().map_or_else(
            || "--name/--description".into(),
            |f| f.display().to_string(),
        ),
        line: None,
        message: e.to_string(),
    })?;
    Ok(info)
}

/// The 1-based line of byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

type Failure = (Option<Range<usize>>, String);

/// The sets of a sets file; a failure names the span at fault.
fn parse_sets(text: &str, top_dirs: &HashSet<&str>) -> Result<Vec<SetInfo>, Failure> {
    let doc = toml_edit::Document::parse(text)
        .map_err(|e| (e.span(), format!("not valid TOML: {}", e.message().trim())))?;
    let root = doc.as_table();
    only_keys(root, &["set"])?;
    let Some(item) = root.get("set") else {
        return Ok(Vec::new());
    };
    let Some(sets) = item.as_array_of_tables() else {
        return Err((
            item.span(),
            "`set` must be an array of tables ([[set]])".into(),
        ));
    };
    let mut names: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for t in sets.iter() {
        only_keys(t, &["name", "description", "mods", "server"])?;
        let name = string(t, "name")?.ok_or_else(|| (t.span(), "a set has no name".into()))?;
        let at = t.get("name").and_then(Item::span);
        if name.trim().is_empty() {
            return Err((at, "a set has an empty name".into()));
        }
        if !names.insert(name.clone()) {
            return Err((at, format!("the set name {name:?} is used twice")));
        }
        let description = string(t, "description")?.unwrap_or_default();
        let Some(mods_item) = t.get("mods") else {
            return Err((t.span(), format!("set {name:?} has no mods")));
        };
        let Some(list) = mods_item.as_array() else {
            return Err((
                mods_item.span(),
                format!("the mods of set {name:?} must be a list of folder names"),
            ));
        };
        let mut mods = Vec::new();
        for v in list.iter() {
            let Some(m) = v.as_str() else {
                return Err((v.span(), format!("set {name:?}: a mod must be a string")));
            };
            let m = m.trim_end_matches('/');
            let path = RelPath::new(m)
                .ok()
                .filter(|p| !p.as_str().contains('/'))
                .ok_or_else(|| {
                    (
                        v.span(),
                        format!("set {name:?}: {m:?} is not a top-level folder name"),
                    )
                })?;
            if !top_dirs.contains(path.as_str()) {
                return Err((
                    v.span(),
                    format!(
                        "set {name:?} names {m:?}, which is not a folder at the top of the repository"
                    ),
                ));
            }
            if mods.contains(&path) {
                return Err((v.span(), format!("set {name:?} names {m:?} twice")));
            }
            mods.push(path);
        }
        if mods.is_empty() {
            return Err((mods_item.span(), format!("set {name:?} has no mods")));
        }
        let server = match t.get("server") {
            None => None,
            Some(item) => {
                let Some(s) = item.as_table() else {
                    return Err((
                        item.span(),
                        format!("the server of set {name:?} must be a table ([set.server])"),
                    ));
                };
                only_keys(s, &["address", "port", "password"])?;
                let address = string(s, "address")?.ok_or_else(|| {
                    (
                        s.span(),
                        format!("the server of set {name:?} has no address"),
                    )
                })?;
                let port = match s.get("port") {
                    None => 0,
                    Some(p) => p
                        .as_integer()
                        .and_then(|n| u16::try_from(n).ok())
                        .ok_or_else(|| {
                            (
                                p.span(),
                                format!("the port of set {name:?} must be a number 0 to 65535"),
                            )
                        })?,
                };
                let password = match s.get("password") {
                    None => false,
                    Some(p) => p.as_bool().ok_or_else(|| {
                        (
                            p.span(),
                            format!("`password` of set {name:?} must be true or false"),
                        )
                    })?,
                };
                Some(ServerInfo {
                    address,
                    port,
                    password,
                })
            }
        };
        let set = SetInfo {
            name,
            description,
            mods,
            server,
        };
        // Bounds and text rules, named at the set.
        RepoInfo {
            sets: vec![set.clone()],
            ..RepoInfo::default()
        }
        .validate()
        .map_err(|e| (t.span(), e.to_string()))?;
        out.push(set);
    }
    if out.len() > hummel_core::info::MAX_SETS {
        return Err((
            item.span(),
            format!(
                "{} sets (at most {})",
                out.len(),
                hummel_core::info::MAX_SETS
            ),
        ));
    }
    Ok(out)
}

/// Refuses a key of `t` outside `known`.
fn only_keys(t: &Table, known: &[&str]) -> Result<(), Failure> {
    for (key, item) in t.iter() {
        if !known.contains(&key) {
            let span = t.key(key).and_then(|k| k.span()).or_else(|| item.span());
            return Err((
                span,
                format!("unknown key `{key}` (expected one of {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

/// The string at `key` of `t`, if any.
fn string(t: &Table, key: &str) -> Result<Option<String>, Failure> {
    match t.get(key) {
        None => Ok(None),
        Some(item) => match item.as_value().and_then(Value::as_str) {
            Some(s) => Ok(Some(s.to_string())),
            None => Err((item.span(), format!("`{key}` must be a string"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tops() -> HashSet<&'static str> {
        ["@ace", "@cba", "@rhs"].into_iter().collect()
    }

    #[test]
    fn a_good_file_reads() {
        let text = r#"
[[set]]
name = "ops"
description = "Sunday operations"
mods = ["@ace", "@cba"]
[set.server]
address = "play.example.org"
port = 2302
password = true

[[set]]
name = "training"
mods = ["@rhs/"]
"#;
        let sets = parse_sets(text, &tops()).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].mods.len(), 2);
        let server = sets[0].server.as_ref().unwrap();
        assert_eq!(
            (server.address.as_str(), server.port, server.password),
            ("play.example.org", 2302, true)
        );
        assert_eq!(sets[1].mods[0].as_str(), "@rhs");
        assert!(sets[1].server.is_none());
    }

    #[test]
    fn mistakes_name_their_line() {
        let check = |text: &str, line: usize, words: &str| {
            let (span, message) = parse_sets(text, &tops()).unwrap_err();
            assert_eq!(
                line_of(text, span.expect("a span").start),
                line,
                "{message}"
            );
            assert!(message.contains(words), "{message}");
        };
        check(
            "[[set]]\nname = \"a\"\nmods = [\"@nope\"]\n",
            3,
            "not a folder",
        );
        check(
            "[[set]]\nname = \"a\"\nmods = [\"@ace\"]\n[[set]]\nname = \"a\"\nmods = [\"@cba\"]\n",
            5,
            "used twice",
        );
        check("[[set]]\nname = \"a\"\nmods = [\"@ace\"\n", 3, "TOML");
        check(
            "[[set]]\nname = \"a\"\nmod = [\"@ace\"]\n",
            3,
            "unknown key `mod`",
        );
        check(
            "[[set]]\nname = \"a\"\nmods = [\"@ace\"]\n[set.server]\naddress = \"x\"\nport = 99999\n",
            6,
            "port",
        );
    }
}
