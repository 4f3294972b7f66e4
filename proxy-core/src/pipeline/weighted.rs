//! Gateway API `backendRefs` weights: each request goes to one of a rule's backends,
//! drawn in proportion to their weights (a backend of weight 0 gets none).

use crate::config::BackendId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedBackends {
    /// Each backend with the running total of weights up to and including it.
    backends: Vec<(BackendId, u64)>,
}

impl WeightedBackends {
    /// `None` when no backend has a weight above 0.
    pub fn new(list: impl IntoIterator<Item = (BackendId, u32)>) -> Option<Self> {
        let mut total = 0u64;
        let backends: Vec<(BackendId, u64)> = list
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(id, w)| {
                total += u64::from(w);
                (id, total)
            })
            .collect();
        (!backends.is_empty()).then_some(Self { backends })
    }

    /// The sum of the weights.
    pub fn total(&self) -> u64 {
        self.backends.last().map_or(0, |(_, t)| *t)
    }

    /// The backend for a draw from `1..=total` (`draw` is given the total).
    pub fn pick(&self, draw: impl FnOnce(u64) -> u64) -> &BackendId {
        let n = draw(self.total());
        let i = self.backends.partition_point(|(_, upto)| *upto < n);
        // A draw above the total (never, from a correct `draw`) takes the last.
        let i = i.min(self.backends.len() - 1);
        &self.backends[i].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> BackendId {
        BackendId::new("ns", name, "80")
    }

    #[test]
    fn draws_share_the_backends_by_weight() {
        let w = WeightedBackends::new([(id("a"), 1), (id("zero"), 0), (id("b"), 2), (id("c"), 3)])
            .unwrap();
        assert_eq!(w.total(), 6);
        let picks: Vec<String> = (1..=6).map(|n| w.pick(|_| n).service.to_string()).collect();
        assert_eq!(picks, ["a", "b", "b", "c", "c", "c"]);
        assert!(WeightedBackends::new([(id("a"), 0)]).is_none());
    }
}
