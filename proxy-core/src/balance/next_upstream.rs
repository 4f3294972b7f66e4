//! `proxy-next-upstream`: when a request is passed on to another endpoint, as nginx's
//! `proxy_next_upstream`, `_tries` and `_timeout`.

use std::time::Duration;

use http::{Method, StatusCode};

/// One `proxy-next-upstream` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Condition {
    /// Connecting, sending the request or reading the answer's head failed.
    Error = 1,
    /// Connecting, sending or reading the answer's head timed out.
    Timeout = 1 << 1,
    /// The answer's head could not be read as HTTP.
    InvalidHeader = 1 << 2,
    Http500 = 1 << 3,
    Http502 = 1 << 4,
    Http503 = 1 << 5,
    Http504 = 1 << 6,
    Http403 = 1 << 7,
    Http404 = 1 << 8,
    Http429 = 1 << 9,
}

/// The `http_*` conditions and their status.
const STATUS: [(Condition, u16); 7] = [
    (Condition::Http500, 500),
    (Condition::Http502, 502),
    (Condition::Http503, 503),
    (Condition::Http504, 504),
    (Condition::Http403, 403),
    (Condition::Http404, 404),
    (Condition::Http429, 429),
];

/// A route's retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextUpstream {
    conditions: u16,
    /// `non_idempotent`: POST, LOCK and PATCH may be passed on too once sent.
    pub non_idempotent: bool,
    /// Tries in all, the first included; 0 is no limit (`proxy-next-upstream-tries`).
    pub tries: u32,
    /// How long the request may be passed on for, from its first try; `None` is no
    /// limit (`proxy-next-upstream-timeout: 0`).
    pub timeout: Option<Duration>,
}

impl Default for NextUpstream {
    /// ingress-nginx's: `error timeout`, 3 tries, no time limit.
    fn default() -> Self {
        Self {
            conditions: Condition::Error as u16 | Condition::Timeout as u16,
            non_idempotent: false,
            tries: 3,
            timeout: None,
        }
    }
}

/// A `proxy-next-upstream` word Portico does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent, off")]
pub struct UnknownCondition(pub String);

impl NextUpstream {
    /// Reads the space-separated words of `proxy-next-upstream`. `off` anywhere turns
    /// every condition off, as nginx's parser does when `off` comes first (ingress-nginx
    /// lets any order through to nginx, which then refuses the whole configuration).
    pub fn parse(v: &str, tries: u32, timeout: Option<Duration>) -> Result<Self, UnknownCondition> {
        let mut out = Self {
            conditions: 0,
            non_idempotent: false,
            tries,
            timeout,
        };
        let mut off = false;
        for word in v.split_ascii_whitespace() {
            let c = match word {
                "error" => Condition::Error,
                "timeout" => Condition::Timeout,
                "invalid_header" => Condition::InvalidHeader,
                "http_500" => Condition::Http500,
                "http_502" => Condition::Http502,
                "http_503" => Condition::Http503,
                "http_504" => Condition::Http504,
                "http_403" => Condition::Http403,
                "http_404" => Condition::Http404,
                "http_429" => Condition::Http429,
                "non_idempotent" => {
                    out.non_idempotent = true;
                    continue;
                }
                "off" => {
                    off = true;
                    continue;
                }
                other => return Err(UnknownCondition(other.to_owned())),
            };
            out.conditions |= c as u16;
        }
        if off {
            out.conditions = 0;
        }
        Ok(out)
    }

    /// Whether `c` is one of the conditions.
    pub fn on(&self, c: Condition) -> bool {
        self.conditions & c as u16 != 0
    }

    /// No condition at all (`off`).
    pub fn is_off(&self) -> bool {
        self.conditions == 0
    }

    /// Whether an answer with `status` is passed on (an `http_*` condition names it).
    pub fn on_status(&self, status: StatusCode) -> bool {
        self.conditions >> 3 != 0
            && STATUS
                .iter()
                .any(|(c, code)| status.as_u16() == *code && self.on(*c))
    }

    /// Whether some condition applies once the request was sent (all but a failed
    /// connect), so that a copy of it must be kept.
    pub fn resends(&self) -> bool {
        self.conditions != 0
    }

    /// Whether a request with `method` that reached an endpoint may be sent to another:
    /// nginx passes POST, LOCK and PATCH on only with `non_idempotent`.
    pub fn method_allows(&self, method: &Method) -> bool {
        self.non_idempotent || !matches!(method.as_str(), "POST" | "LOCK" | "PATCH")
    }

    /// Whether try number `next` (1 is the first) is within `tries`.
    pub fn may_try(&self, next: u32) -> bool {
        self.tries == 0 || next <= self.tries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_as_nginx_reads_them() {
        let n = NextUpstream::parse("error timeout http_502 http_503", 3, None).unwrap();
        assert!(n.on(Condition::Error) && n.on(Condition::Timeout));
        assert!(n.on_status(StatusCode::BAD_GATEWAY));
        assert!(n.on_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!n.on_status(StatusCode::GATEWAY_TIMEOUT));
        assert!(!n.on_status(StatusCode::OK));
        assert!(!n.method_allows(&Method::POST));
        assert!(n.method_allows(&Method::PUT));
        let n = NextUpstream::parse("http_429   non_idempotent", 3, None).unwrap();
        assert!(n.on_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!n.on(Condition::Error));
        assert!(n.method_allows(&Method::POST));
        assert!(NextUpstream::parse("off", 3, None).unwrap().is_off());
        assert!(NextUpstream::parse("error off", 3, None).unwrap().is_off());
        assert_eq!(
            NextUpstream::parse("error http_418", 3, None),
            Err(UnknownCondition("http_418".into()))
        );
        assert_eq!(
            NextUpstream::parse("error,timeout", 3, None),
            Err(UnknownCondition("error,timeout".into()))
        );
    }

    #[test]
    fn tries_count_the_first_and_zero_is_unlimited() {
        let n = NextUpstream::default();
        assert!(n.may_try(3) && !n.may_try(4));
        let unlimited = NextUpstream { tries: 0, ..n };
        assert!(unlimited.may_try(1000));
    }
}
