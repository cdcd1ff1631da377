//! Values parsed at the edge: once built, a [`Username`] or [`Password`] is valid.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

/// Why a field's value was refused; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);

/// A username: 3 to 32 characters of `a-z 0-9 _ . -`, case-folded to lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub const MIN: usize = 3;
    pub const MAX: usize = 32;

    pub fn parse(raw: &str) -> Result<Username, Invalid> {
        let folded = raw.to_lowercase();
        let len = folded.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&len) {
            return Err(Invalid("must be 3 to 32 characters long"));
        }
        if !folded.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        }) {
            return Err(Invalid(
                "may contain only letters a-z, digits 0-9, '_', '.' and '-'",
            ));
        }
        Ok(Username(folded))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password: 8 to 128 characters, no composition rules, and not one of the most common
/// passwords (NIST SP 800-63B, 5.1.1.2). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN: usize = 8;
    pub const MAX: usize = 128;

    pub fn parse(raw: &str) -> Result<Password, Invalid> {
        let len = raw.chars().count();
        if len < Self::MIN {
            return Err(Invalid("must be at least 8 characters long"));
        }
        if len > Self::MAX {
            return Err(Invalid("must be at most 128 characters long"));
        }
        if is_common(raw) {
            return Err(Invalid(
                "is one of the most commonly used passwords, the first an attacker tries; choose another",
            ));
        }
        Ok(Password(raw.to_owned()))
    }

    /// Wraps a login attempt's password without the length rules: a login must do the
    /// same work whatever was typed, and must not reveal the rules' verdict.
    pub fn attempt(raw: &str) -> Password {
        Password(raw.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The common passwords of 8 characters or more that herd refuses, lower case: see
/// `data/README.md` for where they come from.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// Whether `raw` is on the bundled list, ignoring case: "Password1" is no better than
/// "password1" against an attacker who tries both. The set is built on first use.
pub(crate) fn is_common(raw: &str) -> bool {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    let set = SET.get_or_init(|| COMMON_PASSWORDS.lines().filter(|l| !l.is_empty()).collect());
    set.contains(raw.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_is_case_folded() {
        assert_eq!(
            Username::parse("Alice_01").map(|u| u.0),
            Ok("alice_01".to_owned())
        );
    }

    #[test]
    fn username_rejects_bad_lengths_and_characters() {
        for bad in [
            "ab",
            "a".repeat(33).as_str(),
            "has space",
            "émile",
            "a/b",
            "",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Username::parse("a.b-c_d").is_ok());
        assert!(Username::parse(&"z".repeat(32)).is_ok());
    }

    #[test]
    fn password_counts_characters_not_bytes() {
        assert!(Password::parse("ééééééé").is_err());
        assert!(Password::parse("éééééééé").is_ok());
        assert!(Password::parse(&"x".repeat(128)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in ["password", "12345678", "Baseball", "TRUSTNO1", "qwertyuiop"] {
            assert_eq!(
                Password::parse(common).map(|_| ()),
                Err(Invalid(
                    "is one of the most commonly used passwords, the first an attacker tries; choose another"
                )),
                "{common:?} was accepted"
            );
        }
        assert!(Password::parse("correct horse battery staple").is_ok());
    }

    #[test]
    fn the_bundled_list_holds_at_least_ten_thousand_passwords_that_can_matter() {
        let usable: HashSet<&str> = COMMON_PASSWORDS
            .lines()
            .filter(|l| (Password::MIN..=Password::MAX).contains(&l.chars().count()))
            .collect();
        assert!(usable.len() >= 10_000, "{} usable entries", usable.len());
        assert!(
            COMMON_PASSWORDS.lines().all(|l| l == l.to_lowercase()),
            "entries are compared lower case, so they must be stored lower case"
        );
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::parse("hunter22hunter22").expect("valid");
        assert!(!format!("{p:?}").contains("hunter"));
    }
}
