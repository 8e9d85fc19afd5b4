//! Tokens: which header carries them and which endpoints want which.
//!
//! - write token: `POST /build` (start a build). Never accepted in place of the slave token.
//! - slave token: `POST /slave/hashlist`, `POST /slave/heartbeat`. It can never start a build
//!   or change the index.
//! - read token (optional): client reads (`/api/v1/*` reads, `/blob/*`). Without one, reads are
//!   public. The write token is accepted for reads too.
//!
//! A request without a token gets 401; with a wrong one 403, and changes nothing.
//! Tokens are compared in constant time with [`tokens_equal`].

/// The header that carries a token.
pub const TOKEN_HEADER: &str = "X-HUMMEL-TOKEN";

/// The kinds of token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Starts builds.
    Write,
    /// Announces and heartbeats slaves; fetches packs from the master for replication.
    Slave,
    /// Reads the index and packs, when a read token is configured.
    Read,
}

impl TokenKind {
    /// The environment variable the binary reads it from.
    pub fn env_var(self) -> &'static str {
        match self {
            TokenKind::Write => "HUMMEL_WRITE_TOKEN",
            TokenKind::Slave => "HUMMEL_SLAVE_TOKEN",
            TokenKind::Read => "HUMMEL_READ_TOKEN",
        }
    }

    /// Lower-case name, for file names and messages.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Write => "write",
            TokenKind::Slave => "slave",
            TokenKind::Read => "read",
        }
    }
}

/// Why a request's token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No token, or an empty one: HTTP 401.
    Missing,
    /// A token that is none of the accepted ones: HTTP 403.
    Wrong,
}

impl TokenRefusal {
    /// The HTTP status code for it.
    pub fn status(self) -> u16 {
        match self {
            TokenRefusal::Missing => 401,
            TokenRefusal::Wrong => 403,
        }
    }
}

/// The one token rule of every Hummel server. `presented` is the [`TOKEN_HEADER`] value as
/// bytes (`None`: no header); it must equal one of `accepted`. Every accepted token is compared
/// in constant time, so timing does not reveal which one matched or how close a guess came.
pub fn check_token(presented: Option<&[u8]>, accepted: &[&str]) -> Result<(), TokenRefusal> {
    let Some(given) = presented.filter(|t| !t.is_empty()) else {
        return Err(TokenRefusal::Missing);
    };
    // A value that is not UTF-8 cannot equal any token.
    let given = std::str::from_utf8(given).map_err(|_| TokenRefusal::Wrong)?;
    let mut ok = false;
    for t in accepted {
        ok |= tokens_equal(given, t);
    }
    if ok { Ok(()) } else { Err(TokenRefusal::Wrong) }
}

/// What a slave tells the master about its read token ([`crate::api::SlaveHashlist`]): a
/// domain-separated BLAKE3 hash in hex, so the token itself never travels on that route and
/// the master can tell whether the slave guards its packs with the same token. It proves
/// nothing about who sent it; it catches a slave started without (or with another) token.
pub fn read_token_digest(token: &str) -> String {
    let mut input = b"hummel read token digest v1\0".to_vec();
    input.extend_from_slice(token.as_bytes());
    hummel_core::Hash::of(&input).to_hex()
}

/// Constant-time comparison (time depends only on the lengths).
pub fn tokens_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_equal() {
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("abc", "abcd"));
        assert!(tokens_equal("", ""));
    }

    #[test]
    fn the_read_token_digest_names_the_token_without_containing_it() {
        let d = read_token_digest("reader");
        assert_eq!(d.len(), 64);
        assert_eq!(d, read_token_digest("reader"));
        assert_ne!(d, read_token_digest("reader2"));
        assert_ne!(d, hummel_core::Hash::of(b"reader").to_hex());
    }

    #[test]
    fn the_401_403_rule() {
        let ok = ["w", "s"];
        assert_eq!(check_token(None, &ok), Err(TokenRefusal::Missing));
        assert_eq!(check_token(Some(b""), &ok), Err(TokenRefusal::Missing));
        assert_eq!(check_token(Some(b"x"), &ok), Err(TokenRefusal::Wrong));
        assert_eq!(check_token(Some(&[0xff]), &ok), Err(TokenRefusal::Wrong));
        assert_eq!(check_token(Some(b"s"), &ok), Ok(()));
        assert_eq!(TokenRefusal::Missing.status(), 401);
        assert_eq!(TokenRefusal::Wrong.status(), 403);
    }
}
