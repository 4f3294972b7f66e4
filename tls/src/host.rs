//! Host names as the store keys them: lower-case, no trailing dot, and `*.` wildcards that
//! stand for exactly one leading label (Kubernetes Ingress semantics, RFC 6125).

/// A validated host from a TLS entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum HostName {
    /// `app.example.com`
    Exact(String),
    /// `*.example.com`, stored as its suffix `example.com`.
    Wildcard(String),
}

impl HostName {
    /// Parses a configured host; `None` if it is neither a DNS name nor `*.` + DNS name.
    pub(crate) fn parse(raw: &str) -> Option<HostName> {
        let host = normalize(raw);
        match host.strip_prefix("*.") {
            Some(suffix) if is_dns_name(suffix) => Some(HostName::Wildcard(suffix.to_owned())),
            Some(_) => None,
            None if is_dns_name(&host) => Some(HostName::Exact(host)),
            None => None,
        }
    }

    /// The host as written in a certificate or a TLS entry.
    pub(crate) fn display(&self) -> String {
        match self {
            HostName::Exact(h) => h.clone(),
            HostName::Wildcard(s) => format!("*.{s}"),
        }
    }
}

/// Lower-case and strip one trailing dot, as DNS names compare.
pub(crate) fn normalize(raw: &str) -> String {
    let trimmed = raw.trim();
    trimmed
        .strip_suffix('.')
        .unwrap_or(trimmed)
        .to_ascii_lowercase()
}

/// The parent of a name after dropping its first label: `a.b.c` -> `b.c`.
pub(crate) fn parent(name: &str) -> Option<&str> {
    name.split_once('.')
        .map(|(_, rest)| rest)
        .filter(|r| !r.is_empty())
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether a name from the certificate (a SAN DNS entry or the Common Name) covers `host`.
pub(crate) fn cert_name_covers(cert_name: &str, host: &HostName) -> bool {
    let cert_name = normalize(cert_name);
    match host {
        HostName::Exact(h) => {
            if cert_name == *h {
                return true;
            }
            match (cert_name.strip_prefix("*."), parent(h)) {
                (Some(suffix), Some(p)) => suffix == p,
                _ => false,
            }
        }
        // A wildcard host is covered only by the same wildcard in the certificate.
        HostName::Wildcard(suffix) => cert_name.strip_prefix("*.") == Some(suffix.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_names_and_one_label_wildcards() {
        assert_eq!(
            HostName::parse("App.Example.COM."),
            Some(HostName::Exact("app.example.com".into()))
        );
        assert_eq!(
            HostName::parse("*.foo.com"),
            Some(HostName::Wildcard("foo.com".into()))
        );
        assert_eq!(HostName::parse("*"), None);
        assert_eq!(HostName::parse("a.*.com"), None);
        assert_eq!(HostName::parse("*.*.com"), None);
        assert_eq!(HostName::parse(""), None);
        assert_eq!(HostName::parse("bad host"), None);
        assert_eq!(HostName::parse("-a.com"), None);
    }

    #[test]
    fn wildcard_cert_covers_one_label_only() {
        let h = |s| HostName::parse(s).unwrap();
        assert!(cert_name_covers("*.foo.com", &h("bar.foo.com")));
        assert!(cert_name_covers("*.FOO.com", &h("Bar.foo.com")));
        assert!(!cert_name_covers("*.foo.com", &h("baz.bar.foo.com")));
        assert!(!cert_name_covers("*.foo.com", &h("foo.com")));
        assert!(cert_name_covers("foo.com", &h("foo.com")));
        assert!(cert_name_covers("*.foo.com", &h("*.foo.com")));
        assert!(!cert_name_covers("bar.foo.com", &h("*.foo.com")));
    }

    #[test]
    fn parent_drops_first_label() {
        assert_eq!(parent("a.b.c"), Some("b.c"));
        assert_eq!(parent("c"), None);
        assert_eq!(parent("c."), None);
    }
}
