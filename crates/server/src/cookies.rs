//! The browser transport: credentials in HttpOnly, SameSite cookies, and CSRF protection
//! for unsafe methods authenticated by a cookie: an Origin check (scheme included) plus a
//! token bound to the session (an HMAC of its id), which a cross-site page can neither
//! read nor compute, and which no other session's token can stand in for.

use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method};

use herd_identity::Auth;

use crate::error::{ApiError, Code};

pub const ACCESS: &str = "herd_access";
pub const REFRESH: &str = "herd_refresh";
pub const CSRF: &str = "herd_csrf";
/// The CSRF cookie's name where cookies are `Secure`: the `__Host-` prefix makes the
/// browser refuse it unless it was set by this very host over HTTPS with `Path=/` and no
/// `Domain`, so a sibling subdomain cannot plant one.
pub const CSRF_HOST: &str = "__Host-herd_csrf";
/// The device cookie: proof that this browser logged in to an account before, which
/// exempts it from that account's ceiling on failed logins. Sent only to the login.
pub const DEVICE: &str = "herd_device";
pub const DEVICE_PATH: &str = "/v1/auth/login";
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

    /// The CSRF cookie's name: `__Host-` prefixed wherever cookies are `Secure`.
    pub fn csrf_name(&self) -> &'static str {
        if self.insecure {
            CSRF
        } else {
            CSRF_HOST
        }
    }
}

/// The cookie policy as one replica applies it: with the origin its page is served from
/// (the issuer's) and identity, which binds CSRF tokens to sessions.
#[derive(Debug, Clone)]
pub struct Cookies {
    policy: CookiePolicy,
    /// `scheme://host[:port]` of the issuer, when it is an http(s) URL.
    public_origin: Option<String>,
    auth: Auth,
}

impl std::ops::Deref for Cookies {
    type Target = CookiePolicy;

    fn deref(&self) -> &CookiePolicy {
        &self.policy
    }
}

impl Cookies {
    pub fn new(policy: CookiePolicy, auth: Auth) -> Cookies {
        Cookies {
            public_origin: origin_of(&auth.config().issuer),
            policy,
            auth,
        }
    }

    /// The scheme a browser reaches this replica's page by: the public origin's, else
    /// `https` unless cookies are set for plain http.
    fn scheme(&self) -> &str {
        match &self.public_origin {
            Some(origin) => origin
                .split_once("://")
                .map_or("https", |(scheme, _)| scheme),
            None if self.policy.insecure => "http",
            None => "https",
        }
    }

    /// Appends the cookies that end a browser session. The device cookie stays: it
    /// proves a past login, not a live session.
    pub fn clear_all(&self, headers: &mut HeaderMap) {
        headers.append(SET_COOKIE, self.set(ACCESS, "", "/", 0, true));
        headers.append(SET_COOKIE, self.set(REFRESH, "", "/v1/auth", 0, true));
        headers.append(SET_COOKIE, self.set(self.csrf_name(), "", "/", 0, false));
    }

    /// The CSRF token of session `session_id`: an HMAC of it under a secret in the
    /// store, so it is the same on every replica and useless for any other session.
    pub fn csrf_token(&self, session_id: &str) -> String {
        self.auth.session_binding(session_id)
    }

    /// Refuses a request whose `Origin` (when it has one) is neither this replica's own
    /// origin, scheme included, nor the public origin, nor an allowed one: the check for
    /// cookie-authenticated writes and for WebSocket upgrades, which browsers send
    /// cross-site with cookies attached. The own origin is the `Host` under the public
    /// origin's scheme, so a page served over plain http cannot write to the https site.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
            let host = headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let own = !host.is_empty() && origin == format!("{}://{host}", self.scheme());
            let public = self.public_origin.as_deref() == Some(origin);
            if !own && !public && !self.policy.allowed_origins.iter().any(|o| o == origin) {
                return Err(ApiError::new(
                    Code::CsrfFailed,
                    format!("origin {origin} may not send cookie-authenticated requests"),
                ));
            }
        }
        Ok(())
    }

    /// Refuses a cookie-authenticated unsafe request of session `session_id` that did
    /// not come from an allowed origin with that session's CSRF token.
    pub fn check_csrf(
        &self,
        method: &Method,
        headers: &HeaderMap,
        session_id: &str,
    ) -> Result<(), ApiError> {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        self.check_origin(headers)?;
        let expected = self.csrf_token(session_id);
        match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
            Some(presented) if constant_time_eq(&expected, presented) => Ok(()),
            _ => Err(ApiError::new(
                Code::CsrfFailed,
                format!(
                    "send this session's CSRF token (the login's csrf_token, also in the {} cookie) in the {CSRF_HEADER} header",
                    self.csrf_name()
                ),
            )),
        }
    }
}

/// `scheme://host[:port]` of an http(s) URL, or `None` for anything else.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
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
    fn the_public_origin_is_the_issuers_scheme_and_authority() {
        assert_eq!(
            origin_of("https://chat.example:8443/herd?x"),
            Some("https://chat.example:8443".into())
        );
        assert_eq!(origin_of("http://h"), Some("http://h".into()));
        assert_eq!(origin_of("urn:herd"), None);
        assert_eq!(origin_of("https://"), None);
    }
}
