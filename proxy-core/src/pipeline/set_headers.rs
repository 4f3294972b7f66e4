//! Header fields set as configured, each replacing any field of the same name: the
//! global `proxy-set-headers` on every upstream request, and an Ingress's
//! `custom-headers` on its answers (nginx's `proxy_set_header` and headers-more's
//! `more_set_headers`, as ingress-nginx renders them).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Fields to set, in order; validated where they were read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl SetHeaders {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets every field, replacing what `headers` had under its name.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_replace_what_was_there() {
        let set = SetHeaders(vec![
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
            (
                HeaderName::from_static("x-using-portico"),
                HeaderValue::from_static("true"),
            ),
        ]);
        let mut h = HeaderMap::new();
        h.append("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        h.append("x-frame-options", HeaderValue::from_static("ALLOW"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        set.apply(&mut h);
        let frames: Vec<_> = h.get_all("x-frame-options").iter().collect();
        assert_eq!(frames, vec!["DENY"]);
        assert_eq!(h["x-using-portico"], "true");
        assert_eq!(h["content-type"], "text/plain");
        assert!(SetHeaders::default().is_empty());
    }
}
