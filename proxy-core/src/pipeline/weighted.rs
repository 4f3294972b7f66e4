//! Gateway API `backendRefs` weights: each request goes to one of a rule's backends,
//! drawn in proportion to their weights (a backend of weight 0 gets none). The share of
//! an invalid reference answers 500, as the spec requires. A backend may carry header
//! edits of its own (a backendRef's filters), run only for the requests drawn to it.

use std::sync::Arc;

use super::HeaderEdits;
use crate::config::BackendId;

/// A backendRef's own filters: run only for the requests sent to it, after the rule's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendFilters {
    /// Edits to the upstream request, after the route's.
    pub request: Option<Arc<HeaderEdits>>,
    /// Edits to the answer, after the route's.
    pub response: Option<Arc<HeaderEdits>>,
}

/// One weighted backend: `None` for an invalid reference.
type Entry = (Option<BackendId>, u64, Option<Arc<BackendFilters>>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedBackends {
    /// Each backend (`None`: an invalid reference) with the running total of weights up
    /// to and including it, and its own filters.
    backends: Vec<Entry>,
    /// Names the route and rule, for the access log of a request drawn to `None`.
    invalid: Arc<str>,
}

impl WeightedBackends {
    /// `None` when no entry has a weight above 0.
    pub fn new(
        list: impl IntoIterator<Item = (Option<BackendId>, u32)>,
        invalid: Arc<str>,
    ) -> Option<Self> {
        Self::with_filters(list.into_iter().map(|(id, w)| (id, w, None)), invalid)
    }

    /// As [`WeightedBackends::new`], each backend with its own filters.
    pub fn with_filters(
        list: impl IntoIterator<Item = (Option<BackendId>, u32, Option<Arc<BackendFilters>>)>,
        invalid: Arc<str>,
    ) -> Option<Self> {
        let mut total = 0u64;
        let backends: Vec<Entry> = list
            .into_iter()
            .filter(|(_, w, _)| *w > 0)
            .map(|(id, w, filters)| {
                total += u64::from(w);
                (id, total, filters)
            })
            .collect();
        (!backends.is_empty()).then_some(Self { backends, invalid })
    }

    /// The sum of the weights.
    pub fn total(&self) -> u64 {
        self.backends.last().map_or(0, |(_, t, _)| *t)
    }

    /// The backend for a draw from `1..=total` (`draw` is given the total); `None` for
    /// an invalid reference's share.
    pub fn pick(&self, draw: impl FnOnce(u64) -> u64) -> Option<&BackendId> {
        self.pick_filtered(draw).map(|(id, _)| id)
    }

    /// As [`WeightedBackends::pick`], with the backend's own filters.
    pub fn pick_filtered(
        &self,
        draw: impl FnOnce(u64) -> u64,
    ) -> Option<(&BackendId, Option<&BackendFilters>)> {
        let n = draw(self.total());
        let i = self.backends.partition_point(|(_, upto, _)| *upto < n);
        // A draw above the total (never, from a correct `draw`) takes the last.
        let i = i.min(self.backends.len().saturating_sub(1));
        let (id, _, filters) = self.backends.get(i)?;
        Some((id.as_ref()?, filters.as_deref()))
    }

    /// What a request drawn to an invalid reference is told (500) and logged with.
    pub fn invalid(&self) -> &Arc<str> {
        &self.invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Option<BackendId> {
        Some(BackendId::new("ns", name, "80"))
    }

    #[test]
    fn draws_share_the_backends_by_weight() {
        let w = WeightedBackends::new(
            [
                (id("a"), 1),
                (id("zero"), 0),
                (None, 1),
                (id("b"), 2),
                (id("c"), 3),
            ],
            "route".into(),
        )
        .unwrap();
        assert_eq!(w.total(), 7);
        let picks: Vec<String> = (1..=7)
            .map(|n| {
                w.pick(|_| n)
                    .map_or("500".into(), |b| b.service.to_string())
            })
            .collect();
        assert_eq!(picks, ["a", "500", "b", "b", "c", "c", "c"]);
        assert!(WeightedBackends::new([(id("a"), 0)], "route".into()).is_none());
    }

    #[test]
    fn a_backend_carries_its_own_filters() {
        let filters = Arc::new(BackendFilters {
            request: Some(Arc::new(HeaderEdits::default())),
            response: None,
        });
        let w = WeightedBackends::with_filters(
            [(id("a"), 1, None), (id("b"), 1, Some(filters.clone()))],
            "route".into(),
        )
        .unwrap();
        assert_eq!(w.pick_filtered(|_| 1), Some((&id("a").unwrap(), None)));
        assert_eq!(
            w.pick_filtered(|_| 2),
            Some((&id("b").unwrap(), Some(&*filters)))
        );
    }
}
