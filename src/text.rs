//! Text from outside made storable and showable.
//!
//! PostgreSQL `text` cannot hold NUL, and an error message or an id from a
//! hostile server can be megabytes long. Everything that records outside text
//! (error messages, set-aside event ids, Google's field values) goes through
//! here, so no outside string can make a write fail or a status line explode.

/// `s` without NUL characters (the one character PostgreSQL's `text` refuses).
pub fn without_nul(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', ""))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// `s` cut to at most `max` characters, ending in `…` when it was cut.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if s[at..].chars().nth(1).is_some() => {
            let mut out = s[..at].to_owned();
            out.push('…');
            out
        }
        _ => s.to_owned(),
    }
}

/// How long a recorded error message may be.
pub const MAX_ERROR_CHARS: usize = 1000;

/// An error message as it is recorded on a job or a connection: no NUL, no
/// other control characters but newlines and tabs, at most
/// [`MAX_ERROR_CHARS`] characters.
pub fn error_text(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .filter(|c| *c != '\0')
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    cut(&cleaned, MAX_ERROR_CHARS)
}

/// An error and every cause under it, as one line: `outer: cause: root`.
///
/// Errors here keep their cause as [`source`](std::error::Error::source)
/// and leave it out of their own message, so a chain names each cause once;
/// this is how a chain is printed where only `Display` would be (logs, the
/// error recorded on a job or connection).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&chain(self.0))
    }
}

/// An error and its causes on one line, each level once: `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // A level that repeats its cause's text verbatim (some libraries'
        // errors do) would print it twice: skip the repeat.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("the database is unreachable")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            Chain(&err).to_string(),
            "the database is unreachable: connection refused"
        );
    }

    #[test]
    fn cut_keeps_short_text_and_marks_a_cut() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "ab…");
        assert_eq!(cut("", 3), "");
        assert_eq!(cut("ééééé", 4), "ééé…");
        assert_eq!(cut(&"x".repeat(3_000_000), 200).chars().count(), 200);
    }

    #[test]
    fn error_text_is_storable() {
        let e = error_text("bad\0 thing\r\nhere");
        assert_eq!(e, "bad thing \nhere");
        assert!(error_text(&"y".repeat(5000)).chars().count() <= MAX_ERROR_CHARS);
    }
}
