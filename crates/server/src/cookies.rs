//! The browser transport: credentials in HttpOnly, SameSite cookies, and CSRF protection
//! for unsafe methods authenticated by a cookie (an Origin check plus a double-submit
//! token that a cross-site page can neither read nor set).

use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method};

use crate::error::{ApiError, Code};

pub const ACCESS: &str = "herd_access";
pub const REFRESH: &str = "herd_refresh";
pub const CSRF: &str = "herd_csrf";
/// The header a browser client echoes the CSRF cookie's value in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How cookies are set and which origins may send cookie-authenticated writes.
#[derive(Debug, Clone, Default)]
pub struct CookiePolicy {
    /// Leave out `Secure`, for plain-http localhost only.
    pub insecure: bool,
    /// Origins allowed besides the request's own host (e.g. `https://app.example`).
    pub allowed_origins: Vec<String>,
}

impl CookiePolicy {
    /// A `Set-Cookie` value. `max_age` 0 deletes the cookie.
    pub fn set(
        &self,
        name: &str,
        value: &str,
        path: &str,
        max_age: i64,
        http_only: bool,
    ) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path={path}; Max-Age={max_age}; SameSite=Strict");
        if http_only {
            cookie.push_str("; HttpOnly");
        }
        if !self.insecure {
            cookie.push_str("; Secure");
        }
        // Names and values are ours: base64url and fixed paths, always a valid header.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Appends the cookies that end a browser session.
    pub fn clear_all(&self, headers: &mut HeaderMap) {
        headers.append(SET_COOKIE, self.set(ACCESS, "", "/", 0, true));
        headers.append(SET_COOKIE, self.set(REFRESH, "", "/v1/auth", 0, true));
        headers.append(SET_COOKIE, self.set(CSRF, "", "/", 0, false));
    }

    /// Refuses a request whose `Origin` (when it has one) is neither its own host nor
    /// allowed: the check for cookie-authenticated writes and for WebSocket upgrades,
    /// which browsers send cross-site with cookies attached.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
            let host = headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let same_host = origin
                .split_once("://")
                .is_some_and(|(_, rest)| !host.is_empty() && rest == host);
            if !same_host && !self.allowed_origins.iter().any(|o| o == origin) {
                return Err(ApiError::new(
                    Code::CsrfFailed,
                    format!("origin {origin} may not send cookie-authenticated requests"),
                ));
            }
        }
        Ok(())
    }

    /// Refuses a cookie-authenticated unsafe request that did not come from an allowed
    /// origin with the CSRF token.
    pub fn check_csrf(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        self.check_origin(headers)?;
        let expected = cookie(headers, CSRF);
        let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        match (expected, presented) {
            (Some(expected), Some(presented))
                if !expected.is_empty() && constant_time_eq(expected, presented) =>
            {
                Ok(())
            }
            _ => Err(ApiError::new(
                Code::CsrfFailed,
                format!("send the {CSRF} cookie's value in the {CSRF_HEADER} header"),
            )),
        }
    }
}

/// The value of the cookie `name`, if the request sent it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn cookies_are_found_among_many() {
        let h = headers(&[("cookie", "a=1; herd_csrf=xyz"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, CSRF), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn csrf_needs_the_token_and_an_allowed_origin() {
        let policy = CookiePolicy::default();
        let post = Method::POST;
        let good = headers(&[
            ("host", "h:1"),
            ("origin", "http://h:1"),
            ("cookie", "herd_csrf=t"),
            ("x-csrf-token", "t"),
        ]);
        assert!(policy.check_csrf(&post, &good).is_ok());
        let cross = headers(&[
            ("host", "h:1"),
            ("origin", "http://evil"),
            ("cookie", "herd_csrf=t"),
            ("x-csrf-token", "t"),
        ]);
        assert!(policy.check_csrf(&post, &cross).is_err());
        let no_token = headers(&[
            ("host", "h:1"),
            ("origin", "http://h:1"),
            ("cookie", "herd_csrf=t"),
        ]);
        assert!(policy.check_csrf(&post, &no_token).is_err());
        assert!(policy.check_csrf(&Method::GET, &no_token).is_ok());
    }
}
