//! Server-sent events, read: [`EventParser`] turns the bytes of a `text/event-stream` body
//! into [`ServerEvent`]s, bounded (a line or an event longer than [`MAX_EVENT`] is refused).
//! Used by `hummel sync --watch` (the master's announcements) and by slaves (the master's
//! publications, so they fetch new packs before clients ask for them).

/// Longest line (and event) accepted from the stream.
pub const MAX_EVENT: usize = 64 << 10;

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
