//! Endpoint picking, cookie affinity and passive health.

use std::sync::Arc;
use std::time::Duration;

/// `affinity-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AffinityMode {
    /// Re-balance pinned sessions when endpoints scale (cookies may move).
    #[default]
    Balanced,
    /// Keep sessions on their endpoint as long as it is ready.
    Persistent,
}

/// `session-cookie-samesite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// Cookie session affinity settings, parsed and validated by the compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieAffinity {
    pub mode: AffinityMode,
    /// `session-cookie-name`, default `INGRESSCOOKIE`.
    pub name: Arc<str>,
    /// `session-cookie-path`; `None` uses the matched rule's path.
    pub path: Option<Arc<str>>,
    /// `session-cookie-max-age`.
    pub max_age: Option<Duration>,
    /// `session-cookie-expires`.
    pub expires: Option<Duration>,
    pub secure: bool,
    pub samesite: Option<SameSite>,
    /// `session-cookie-change-on-failure`: re-pin when the pinned endpoint fails.
    pub change_on_failure: bool,
}

impl Default for CookieAffinity {
    fn default() -> Self {
        Self {
            mode: AffinityMode::Balanced,
            name: "INGRESSCOOKIE".into(),
            path: None,
            max_age: None,
            expires: None,
            secure: false,
            samesite: None,
            change_on_failure: false,
        }
    }
}
