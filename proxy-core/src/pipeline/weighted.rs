//! Gateway API `backendRefs` weights: each request goes to one of a rule's backends,
//! drawn in proportion to their weights (a backend of weight 0 gets none). The share of
//! an invalid reference answers 500, as the spec requires.

use std::sync::Arc;

use crate::config::BackendId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedBackends {
    /// Each backend (`None`: an invalid reference) with the running total of weights up
    /// to and including it.
    backends: Vec<(Option<BackendId>, u64)>,
    /// Names the route and rule, for the access log of a request drawn to `None`.
    invalid: Arc<str>,
}

impl WeightedBackends {
    /// `None` when no entry has a weight above 0.
    pub fn new(
        list: impl IntoIterator<Item = (Option<BackendId>, u32)>,
        invalid: Arc<str>,
    ) -> Option<Self> {
        let mut total = 0u64;
        let backends: Vec<(Option<BackendId>, u64)> = list
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(id, w)| {
                total += u64::from(w);
                (id, total)
            })
            .collect();
        (!backends.is_empty()).then_some(Self { backends, invalid })
    }

    /// The sum of the weights.
    pub fn total(&self) -> u64 {
        self.backends.last().map_or(0, |(_, t)| *t)
    }

    /// The backend for a draw from `1..=total` (`draw` is given the total); `None` for
    /// an invalid reference's share.
    pub fn pick(&self, draw: impl FnOnce(u64) -> u64) -> Option<&BackendId> {
        let n = draw(self.total());
        let i = self.backends.partition_point(|(_, upto)| *upto < n);
        // A draw above the total (never, from a correct `draw`) takes the last.
        let i = i.min(self.backends.len().saturating_sub(1));
        self.backends.get(i).and_then(|(id, _)| id.as_ref())
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
}
