//! The dashboard's "Pushes" section: each push the master follows (`crate::push_progress`),
//! the newest first, with its prefix, state, progress and revision or error. Empty (and so
//! hidden) when there is none; live like the other sections.

use std::fmt::Write;

use hummel_proto::api::{PushProgress, PushState};

use super::{escape, human_bytes};

fn state_class(state: PushState) -> (&'static str, &'static str) {
    match state {
        PushState::Uploading => ("uploading", "running"),
        PushState::Publishing => ("publishing", "running"),
        PushState::Published => ("published", "succeeded"),
        PushState::Refused => ("refused", "failed"),
        PushState::Stalled => ("stalled", "stale"),
    }
}

/// The section's HTML (nothing when there are no pushes).
pub(crate) fn section(h: &mut String, pushes: &[PushProgress]) {
    if pushes.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Pushes</h2><table><tr><th>Prefix</th><th>State</th><th>Progress</th>\
         <th>Revision or error</th></tr>",
    );
    for p in pushes {
        let (state, class) = state_class(p.state);
        let outcome = match (&p.revision, &p.error) {
            (Some(r), _) => format!("revision {r}"),
            (None, Some(e)) => format!("<span class=\"failed\">{}</span>", escape(e)),
            (None, None) if p.state == PushState::Published => "nothing changed".into(),
            (None, None) => String::new(),
        };
        let total = p.chunks_missing.max(1);
        let _ = write!(
            h,
            "<tr id=\"push-{id}\"><td>{prefix}</td><td class=\"{class}\">{state}</td>\
             <td><progress max=\"{total}\" value=\"{done}\"></progress> \
             {received} of {missing} chunks, {bytes}</td><td>{outcome}</td></tr>",
            id = escape(&p.id),
            prefix = escape(p.prefix.as_deref().unwrap_or("/")),
            done = p.chunks_received.min(total),
            received = p.chunks_received,
            missing = p.chunks_missing,
            bytes = human_bytes(p.bytes_received),
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_each_push_escaped_and_nothing_without_pushes() {
        let mut h = String::new();
        section(&mut h, &[]);
        assert!(h.is_empty());
        let push = |state, revision, error: Option<&str>| PushProgress {
            id: "0".repeat(32),
            prefix: Some("@m<x>".into()),
            base: None,
            state,
            chunks_missing: 10,
            chunks_received: 4,
            bytes_received: 3 << 20,
            started_unix: 0,
            updated_unix: 0,
            revision,
            error: error.map(str::to_string),
        };
        section(
            &mut h,
            &[
                push(PushState::Uploading, None, None),
                push(PushState::Published, Some(7), None),
                push(PushState::Refused, None, Some("a <b>conflict</b>")),
            ],
        );
        assert!(h.contains("<h2>Pushes</h2>"), "{h}");
        assert!(h.contains("@m&lt;x&gt;") && !h.contains("@m<x>"), "{h}");
        assert!(h.contains("<progress max=\"10\" value=\"4\">"), "{h}");
        assert!(h.contains("4 of 10 chunks, 3.0 MiB"), "{h}");
        assert!(h.contains(">uploading<") && h.contains("revision 7"), "{h}");
        assert!(h.contains("a &lt;b&gt;conflict&lt;/b&gt;"), "{h}");
    }
}
