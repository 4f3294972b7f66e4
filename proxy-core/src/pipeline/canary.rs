//! ingress-nginx's canary: a second backend for a route, chosen per request before the
//! pick, as its Lua balancer's `route_to_alternative_balancer` chooses:
//!
//! 1. a request whose affinity cookie was issued for the main backend stays on the main;
//! 2. one whose affinity cookie was issued for the canary goes to the canary;
//! 3. the `canary-by-header` header: with `canary-by-header-value`, a request carrying
//!    exactly that value goes to the canary; else with `canary-by-header-pattern`, one
//!    whose value the pattern matches (unanchored) does; else `always` goes to the canary
//!    and `never` to the main. Any other value falls through to the next rule, and so
//!    does a request without the header;
//! 4. the `canary-by-cookie` cookie: `always` goes to the canary, `never` to the main,
//!    anything else falls through;
//! 5. the weight: a draw from 1 to the total (`canary-weight-total` when above 100, else
//!    100) at most `canary-weight` goes to the canary.
//!
//! A pattern Portico could not compile stands for ingress-nginx's pattern that fails at
//! request time: a request carrying the header goes to the main, whatever follows.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, COOKIE};
use regex::bytes::{Regex, RegexBuilder};

use crate::balance::CookieAffinity;
use crate::model::BackendId;
use crate::routes::{RegexPathError, COMPILED_SIZE_LIMIT, MAX_PATTERN_LEN, NEST_LIMIT};

/// The canary half of a route: where canary requests go and which ones do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    pub backend: BackendId,
    /// The canary's cookie affinity: the main route's (`affinity-canary-behavior:
    /// sticky`, the default), or the canary Ingress's own (`legacy`).
    pub affinity: Option<CookieAffinity>,
    pub rule: Arc<CanaryRule>,
}

/// Which requests a canary takes, from the canary Ingress's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryRule {
    /// `canary-by-header` and how its value is judged.
    pub header: Option<ByHeader>,
    /// `canary-by-cookie`: the cookie's name.
    pub cookie: Option<Arc<str>>,
    /// `canary-weight`; at most 0 never, at least the total always.
    pub weight: i64,
    /// `canary-weight-total` as given (100 when absent).
    pub weight_total: i64,
}

impl Default for CanaryRule {
    fn default() -> Self {
        Self {
            header: None,
            cookie: None,
            weight: 0,
            weight_total: 100,
        }
    }
}

/// `canary-by-header`: the header, and what sends a request to the canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByHeader {
    pub name: HeaderName,
    pub judge: HeaderJudge,
}

/// How a `canary-by-header` value is judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderJudge {
    /// `always` to the canary, `never` to the main.
    AlwaysNever,
    /// `canary-by-header-value`: this exact value goes to the canary.
    Value(Box<[u8]>),
    /// `canary-by-header-pattern`: a value it matches goes to the canary.
    Pattern(HeaderPattern),
    /// A pattern that could not be compiled: a request with the header goes to the main.
    Broken,
}

/// A `canary-by-header-pattern`: case-sensitive, unanchored, on bytes (as
/// `ngx.re.match` without options), bounded as path regexes are.
#[derive(Clone, Debug)]
pub struct HeaderPattern(Regex);

impl HeaderPattern {
    pub fn new(pattern: &str) -> Result<Self, RegexPathError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(RegexPathError::TooLong);
        }
        RegexBuilder::new(pattern)
            .unicode(false)
            .size_limit(COMPILED_SIZE_LIMIT)
            .dfa_size_limit(COMPILED_SIZE_LIMIT)
            .nest_limit(NEST_LIMIT)
            .build()
            .map(Self)
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => RegexPathError::TooBig,
                other => {
                    let text = other.to_string();
                    let last = text.lines().rev().find(|l| !l.trim().is_empty());
                    let last = last.unwrap_or(&text).trim();
                    RegexPathError::Syntax(last.strip_prefix("error: ").unwrap_or(last).to_owned())
                }
            })
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for HeaderPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HeaderPattern {}

/// What the request's affinity cookies say, judged by the caller against each backend's
/// endpoints: whether the session belongs to the main or to the canary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Affinitized {
    pub main: bool,
    pub canary: bool,
}

impl CanaryRule {
    /// Whether the request goes to the canary. `draw(n)` is a uniform draw from 1 to `n`.
    pub fn to_canary(
        &self,
        headers: &HeaderMap,
        affinitized: Affinitized,
        draw: impl FnOnce(u64) -> u64,
    ) -> bool {
        if affinitized.main {
            return false;
        }
        if affinitized.canary {
            return true;
        }
        if let Some(by) = &self.header {
            if let Some(verdict) = by.verdict(headers) {
                return verdict;
            }
        }
        if let Some(name) = &self.cookie {
            match cookie_value(headers, name) {
                Some(b"always") => return true,
                Some(b"never") => return false,
                _ => {}
            }
        }
        if self.weight <= 0 {
            return false;
        }
        // ingress-nginx draws `math.random(total) <= weight`, with the total at 100
        // unless the annotation sets more.
        let total = u64::try_from(self.weight_total.max(100)).unwrap_or(100);
        // Positive, checked above.
        let weight = self.weight.unsigned_abs();
        weight >= total || draw(total) <= weight
    }
}

impl ByHeader {
    /// `Some` when the header decides; `None` to fall through to the cookie and weight.
    fn verdict(&self, headers: &HeaderMap) -> Option<bool> {
        let mut values = headers.get_all(&self.name).iter();
        let first = values.next()?;
        // nginx's `$http_NAME` joins repeated headers with ", ".
        let joined;
        let value: &[u8] = match values.next() {
            None => first.as_bytes(),
            Some(second) => {
                let mut all = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    all.extend_from_slice(b", ");
                    all.extend_from_slice(v.as_bytes());
                }
                joined = all;
                &joined
            }
        };
        match &self.judge {
            HeaderJudge::Value(want) => (value == &**want).then_some(true),
            HeaderJudge::Pattern(p) => p.0.is_match(value).then_some(true),
            HeaderJudge::Broken => Some(false),
            HeaderJudge::AlwaysNever => match value {
                b"always" => Some(true),
                b"never" => Some(false),
                _ => None,
            },
        }
    }
}

/// The value of the first cookie named `name` (nginx's `$cookie_NAME`: the name
/// compared without regard to case), across every `Cookie` header.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii_start();
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (n, v) = (&pair[..eq], &pair[eq + 1..]);
            if n.trim_ascii_end().eq_ignore_ascii_case(name.as_bytes()) {
                return Some(v.trim_ascii());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const NONE: Affinitized = Affinitized {
        main: false,
        canary: false,
    };

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn by_header(judge: HeaderJudge) -> Option<ByHeader> {
        Some(ByHeader {
            name: HeaderName::from_static("canarybyheader"),
            judge,
        })
    }

    /// Never draws: a test that reaches the weight with a weight strictly between 0
    /// and the total fails.
    fn no_draw(_: u64) -> u64 {
        panic!("the weight was consulted")
    }

    #[test]
    fn header_always_and_never_then_fall_through() {
        let rule = CanaryRule {
            header: by_header(HeaderJudge::AlwaysNever),
            ..CanaryRule::default()
        };
        let go = |h: &[(&str, &str)]| rule.to_canary(&headers(h), NONE, |_| 1);
        assert!(go(&[("CanaryByHeader", "always")]));
        assert!(!go(&[("canarybyheader", "never")]));
        // Any other value is ignored; with weight 0 that is the main.
        assert!(!go(&[("CanaryByHeader", "badheadervalue")]));
        assert!(!go(&[("CanaryByHeader", "Always")]));
        assert!(!go(&[]));
    }

    #[test]
    fn header_value_and_pattern_as_the_e2e_tests_have_them() {
        let value = CanaryRule {
            header: by_header(HeaderJudge::Value(b"DoCanary".to_vec().into())),
            ..CanaryRule::default()
        };
        let go = |r: &CanaryRule, h: &[(&str, &str)]| r.to_canary(&headers(h), NONE, no_draw);
        assert!(go(&value, &[("CanaryByHeader", "DoCanary")]));
        assert!(!go(&value, &[("CanaryByHeader", "always")]));
        assert!(!go(&value, &[("CanaryByHeader", "never")]));
        assert!(!go(&value, &[("CanaryByHeader", "otherheadervalue")]));

        let pattern = CanaryRule {
            header: by_header(HeaderJudge::Pattern(
                HeaderPattern::new("^Do[A-Z][a-z]+y$").unwrap(),
            )),
            ..CanaryRule::default()
        };
        assert!(go(&pattern, &[("CanaryByHeader", "DoCanary")]));
        assert!(!go(&pattern, &[("CanaryByHeader", "Docanary")]));
        // Unanchored unless the pattern says so.
        let loose = CanaryRule {
            header: by_header(HeaderJudge::Pattern(HeaderPattern::new("beta").unwrap())),
            ..CanaryRule::default()
        };
        assert!(go(&loose, &[("CanaryByHeader", "user-beta-7")]));
        assert!(!go(&loose, &[("CanaryByHeader", "BETA")]));
    }

    #[test]
    fn broken_pattern_sends_requests_with_the_header_to_the_main() {
        let rule = CanaryRule {
            header: by_header(HeaderJudge::Broken),
            cookie: Some("CanaryByCookie".into()),
            weight: 100,
            ..CanaryRule::default()
        };
        let h = headers(&[
            ("CanaryByHeader", "DoCanary"),
            ("Cookie", "CanaryByCookie=always"),
        ]);
        assert!(!rule.to_canary(&h, NONE, no_draw));
        // Without the header, the cookie decides.
        let h = headers(&[("Cookie", "CanaryByCookie=always")]);
        assert!(rule.to_canary(&h, NONE, no_draw));
    }

    /// The documentation's precedence, header > cookie > weight, row by row.
    #[test]
    fn precedence_header_then_cookie_then_weight() {
        let rule = CanaryRule {
            header: by_header(HeaderJudge::Value(b"DoCanary".to_vec().into())),
            cookie: Some("CanaryByCookie".into()),
            weight: 50,
            ..CanaryRule::default()
        };
        // (header, cookie, draw, expected)
        let rows: &[(Option<&str>, Option<&str>, u64, bool)] = &[
            // The header value wins over a cookie saying never.
            (Some("DoCanary"), Some("never"), 100, true),
            // Another header value falls through to the cookie (the e2e test's case).
            (Some("otherheadervalue"), Some("always"), 100, true),
            (Some("otherheadervalue"), Some("never"), 1, false),
            // No header: the cookie.
            (None, Some("always"), 100, true),
            (None, Some("never"), 1, false),
            // Neither, or a cookie value other than always/never: the weight.
            (None, Some("badcookievalue"), 50, true),
            (None, Some("badcookievalue"), 51, false),
            (None, None, 1, true),
            (None, None, 100, false),
        ];
        for &(header, cookie, draw, want) in rows {
            let mut pairs = Vec::new();
            if let Some(v) = header {
                pairs.push(("CanaryByHeader", v));
            }
            let c = cookie.map(|v| format!("other=1; CanaryByCookie={v}"));
            if let Some(c) = &c {
                pairs.push(("Cookie", c.as_str()));
            }
            let got = rule.to_canary(&headers(&pairs), NONE, |n| {
                assert_eq!(n, 100);
                draw
            });
            assert_eq!(got, want, "header {header:?} cookie {cookie:?} draw {draw}");
        }
        // `always` in the header means nothing once a value is set: the cookie decides.
        let h = headers(&[
            ("CanaryByHeader", "always"),
            ("Cookie", "CanaryByCookie=never"),
        ]);
        assert!(!rule.to_canary(&h, NONE, no_draw));
    }

    #[test]
    fn cookie_names_compare_without_case_and_the_first_counts() {
        let rule = CanaryRule {
            cookie: Some("Canary-By-Cookie".into()),
            ..CanaryRule::default()
        };
        let go = |c: &str| rule.to_canary(&headers(&[("Cookie", c)]), NONE, no_draw);
        assert!(go("canary-by-cookie=always"));
        assert!(!go("Canary-By-Cookie=never; Canary-By-Cookie=always"));
        assert!(!go("Canary-By-Cookie=sometimes"));
        assert!(!go("XCanary-By-Cookie=always"));
    }

    #[test]
    fn weights_and_totals_as_the_balancer_draws() {
        let rule = |weight, weight_total| CanaryRule {
            weight,
            weight_total,
            ..CanaryRule::default()
        };
        let h = HeaderMap::new();
        assert!(!rule(0, 100).to_canary(&h, NONE, no_draw));
        assert!(!rule(-5, 100).to_canary(&h, NONE, no_draw));
        assert!(rule(100, 100).to_canary(&h, NONE, no_draw));
        assert!(rule(200, 200).to_canary(&h, NONE, no_draw));
        // Weight 100 of 200: half.
        assert!(rule(100, 200).to_canary(&h, NONE, |n| {
            assert_eq!(n, 200);
            100
        }));
        assert!(!rule(100, 200).to_canary(&h, NONE, |_| 101));
        // A total under 100 counts as 100, as ingress-nginx's balancer has it.
        assert!(!rule(30, 50).to_canary(&h, NONE, |n| {
            assert_eq!(n, 100);
            31
        }));
        assert!(rule(50, 50).to_canary(&h, NONE, |_| 50));
    }

    #[test]
    fn affinity_comes_first() {
        let rule = CanaryRule {
            header: by_header(HeaderJudge::AlwaysNever),
            weight: 100,
            ..CanaryRule::default()
        };
        let always = headers(&[("CanaryByHeader", "always")]);
        let never = headers(&[("CanaryByHeader", "never")]);
        // A session of the main stays there, even when the header asks for the canary.
        let main = Affinitized {
            main: true,
            canary: false,
        };
        assert!(!rule.to_canary(&always, main, no_draw));
        // A session of the canary stays there.
        let canary = Affinitized {
            main: false,
            canary: true,
        };
        assert!(rule.to_canary(&never, canary, no_draw));
    }

    #[test]
    fn repeated_headers_are_joined_as_nginx_does() {
        let rule = CanaryRule {
            header: by_header(HeaderJudge::Value(b"a, b".to_vec().into())),
            ..CanaryRule::default()
        };
        let h = headers(&[("CanaryByHeader", "a"), ("CanaryByHeader", "b")]);
        assert!(rule.to_canary(&h, NONE, no_draw));
    }

    #[test]
    fn patterns_are_bounded() {
        assert!(HeaderPattern::new("[][**da?$&*").is_err());
        assert!(HeaderPattern::new("^(?!x)").is_err());
        assert!(HeaderPattern::new(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
        assert_eq!(
            HeaderPattern::new("^v[0-9]+$").unwrap().as_str(),
            "^v[0-9]+$"
        );
    }
}
