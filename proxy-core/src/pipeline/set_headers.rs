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

/// Gateway API's RequestHeaderModifier and ResponseHeaderModifier: fields set (replacing
/// any of the name), added (beside any of the name), and removed, in that order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_set_add_and_remove() {
        let name = HeaderName::from_static;
        let value = HeaderValue::from_static;
        let edits = HeaderEdits {
            set: vec![(name("x-set"), value("one"))],
            add: vec![(name("x-add"), value("two"))],
            remove: vec![name("x-gone")],
        };
        let mut h = HeaderMap::new();
        h.append("x-set", value("old"));
        h.append("x-set", value("older"));
        h.append("x-add", value("kept"));
        h.append("x-gone", value("bye"));
        edits.apply(&mut h);
        assert_eq!(h.get_all("x-set").iter().collect::<Vec<_>>(), vec!["one"]);
        assert_eq!(
            h.get_all("x-add").iter().collect::<Vec<_>>(),
            vec!["kept", "two"]
        );
        assert!(!h.contains_key("x-gone"));
    }

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
