//! Request headers a route sets on what it sends upstream, after the forwarding headers:
//! `upstream-vhost` (the `Host` the pod gets instead of the client's, as ingress-nginx's
//! `proxy_set_header Host`) and `x-forwarded-prefix` (an `X-Forwarded-Prefix` header).
//! `X-Forwarded-Host` still names the host the client asked for.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};

use super::HeaderEdits;

static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamHeaders {
    /// `upstream-vhost`: replaces `Host`.
    pub host: Option<HeaderValue>,
    /// `x-forwarded-prefix`: sets `X-Forwarded-Prefix`, replacing the client's.
    pub forwarded_prefix: Option<HeaderValue>,
    /// A Gateway API RequestHeaderModifier, applied last.
    pub edits: Option<Arc<HeaderEdits>>,
}

impl UpstreamHeaders {
    /// Sets the route's headers on the upstream request's.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        if let Some(host) = &self.host {
            headers.insert(HOST, host.clone());
        }
        if let Some(prefix) = &self.forwarded_prefix {
            headers.insert(X_FORWARDED_PREFIX.clone(), prefix.clone());
        }
        if let Some(edits) = &self.edits {
            edits.apply(headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_prefix_replace_what_the_client_sent() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("app.example.com"));
        headers.append("x-forwarded-prefix", HeaderValue::from_static("/evil"));
        headers.append("x-forwarded-prefix", HeaderValue::from_static("/more"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("app.example.com"),
        );
        let shaping = UpstreamHeaders {
            host: Some(HeaderValue::from_static("internal.myservice.com")),
            forwarded_prefix: Some(HeaderValue::from_static("/path")),
            edits: None,
        };
        shaping.apply(&mut headers);
        assert_eq!(headers[HOST], "internal.myservice.com");
        let prefixes: Vec<_> = headers.get_all("x-forwarded-prefix").iter().collect();
        assert_eq!(prefixes, vec![HeaderValue::from_static("/path")]);
        assert_eq!(headers["x-forwarded-host"], "app.example.com");
    }

    #[test]
    fn nothing_set_changes_nothing() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("app.example.com"));
        headers.insert("x-forwarded-prefix", HeaderValue::from_static("/client"));
        let before = headers.clone();
        UpstreamHeaders::default().apply(&mut headers);
        assert_eq!(headers, before);
    }
}
