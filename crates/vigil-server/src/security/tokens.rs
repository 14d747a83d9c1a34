//! API tokens: parsing `VIGIL_INGEST_TOKENS` / `VIGIL_READ_TOKENS`, finding the one a request
//! presents, and never showing one.
//!
//! A token is 16 to 256 characters from `A-Z a-z 0-9 . _ ~ -`: the URI "unreserved" set, which
//! is at once an RFC 7230 `tchar` run (so `vigil.bearer.<token>` is one WebSocket subprotocol
//! token), an RFC 6750 `b64token` (so `Authorization: Bearer <token>` needs no quoting) and a
//! query value that needs no percent-encoding (so `?token=` round-trips). Commas separate
//! tokens in the setting and subprotocols in the header, so they can never be part of one.
//! Comparison is constant-time in the token's bytes, and every configured token is compared,
//! so timing says nothing about which token (or how much of one) matched.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// Shortest token accepted: 16 characters of a 66-letter alphabet is ~96 bits.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted (a header and a subprotocol stay small).
pub const MAX_TOKEN_LEN: usize = 256;

/// A configured token list. `Display` and `Debug` show only how many there are.
#[derive(Clone, Default)]
pub struct Tokens(Arc<[Box<[u8]>]>);

impl Tokens {
    /// Parses a comma-separated list; blanks around entries and empty entries are ignored, so
    /// an empty setting is an empty list (the routes stay open).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = Vec::new();
        for (position, token) in text
            .split(',')
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .enumerate()
        {
            if !is_valid_token(token.as_bytes()) {
                // Never echo the token: the message lands in logs and terminals.
                return Err(format!(
                    "token #{} is not {MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} characters of \
                     A-Z a-z 0-9 . _ ~ - (it is {} characters long)",
                    position + 1,
                    token.chars().count()
                ));
            }
            tokens.push(token.as_bytes().into());
        }
        Ok(Tokens(tokens.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The token at `index` (as [`Tokens::find`] returned it).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.0.get(index).map(|token| &token[..])
    }

    /// The position of `presented` in the list, if it is there. Compares against every token
    /// in constant time for equal lengths.
    pub fn find(&self, presented: &[u8]) -> Option<usize> {
        let mut found = None;
        for (index, token) in self.0.iter().enumerate() {
            let equal: bool = token.as_ref().ct_eq(presented).into();
            if equal && found.is_none() {
                found = Some(index);
            }
        }
        found
    }
}

/// Whether `token` has the documented length and alphabet.
pub fn is_valid_token(token: &[u8]) -> bool {
    (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len())
        && token
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'~' | b'-'))
}

impl fmt::Display for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            1 => f.write_str("<1 token>"),
            count => write!(f, "<{count} tokens>"),
        }
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_parsed_and_searched() {
        let tokens = Tokens::parse(" first-token-0123456 ,, second.token_~0123 ,").unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.find(b"first-token-0123456"), Some(0));
        assert_eq!(tokens.find(b"second.token_~0123"), Some(1));
        assert_eq!(tokens.find(b"first-token-012345"), None);
        assert_eq!(tokens.find(b""), None);
        assert!(Tokens::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_tokens_are_refused_without_being_echoed() {
        for bad in [
            "short",
            "has space in the middle",
            "plus+is+not+allowed+here",
            "slash/is/not/allowed/here",
            "equals=is=not=allowed=here",
            "percent%20is%20not%20allowed",
        ] {
            let error = Tokens::parse(bad).unwrap_err();
            assert!(!error.contains(bad), "{error}");
        }
        assert!(Tokens::parse(&"a".repeat(257)).is_err());
        assert!(Tokens::parse(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn display_and_debug_show_only_the_count() {
        let tokens = Tokens::parse("secret-token-0123456789").unwrap();
        let shown = format!("{tokens} {tokens:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<1 token>"), "{shown}");
    }
}
