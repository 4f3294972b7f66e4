//! Gateway API `RequestMirror`: a copy of each (sampled) request also goes to another
//! backend, whose answer is thrown away.
//!
//! The copy is made as the request leaves for the route's own backend (after every
//! filter, so the mirror sees the path and headers the backend sees) and is sent from
//! a task of its own: the client's request never waits for it, and nothing the mirror
//! does (refusing the connection, answering slowly, failing) reaches the client. A
//! request body is copied only when it costs no extra read: a request without one, or
//! one the route has already read whole into memory (request buffering); a request
//! whose body streams is not mirrored.
//!
//! A route without mirrors carries `None` in its policy and pays one check.

use crate::config::BackendId;

/// The share of requests a mirror gets: `numerator` out of every `denominator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    numerator: u32,
    denominator: u32,
}

impl Fraction {
    /// Every request.
    pub const ALL: Fraction = Fraction {
        numerator: 1,
        denominator: 1,
    };

    /// `numerator / denominator`, above 1 taken as 1; `None` for a zero denominator.
    pub fn new(numerator: u32, denominator: u32) -> Option<Self> {
        (denominator > 0).then(|| Self {
            numerator: numerator.min(denominator),
            denominator,
        })
    }

    /// `percent` out of 100, above 100 taken as 100.
    pub fn percent(percent: u32) -> Self {
        Self {
            numerator: percent.min(100),
            denominator: 100,
        }
    }

    /// Whether a request is sampled, given a draw from `0..denominator` (`draw` is given
    /// the denominator; it is not called for none or all).
    fn takes(&self, draw: impl FnOnce(u32) -> u32) -> bool {
        if self.numerator == 0 {
            return false;
        }
        self.numerator >= self.denominator || draw(self.denominator) < self.numerator
    }
}

/// One `RequestMirror` filter of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMirror {
    pub backend: BackendId,
    pub fraction: Fraction,
}

/// The mirrors of a route, in the order its filters name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrors(pub Vec<RequestMirror>);

impl Mirrors {
    /// The backends this request is copied to, each mirror sampled on its own.
    pub(crate) fn sample(&self) -> impl Iterator<Item = &BackendId> + '_ {
        self.sample_with(|n| rand::random_range(0..n))
    }

    fn sample_with<'a>(
        &'a self,
        mut draw: impl FnMut(u32) -> u32 + 'a,
    ) -> impl Iterator<Item = &'a BackendId> + 'a {
        self.0
            .iter()
            .filter(move |m| m.fraction.takes(&mut draw))
            .map(|m| &m.backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(service: &str, fraction: Fraction) -> RequestMirror {
        RequestMirror {
            backend: BackendId::new("ns", service, "8080"),
            fraction,
        }
    }

    #[test]
    fn fractions_sample_their_share() {
        assert!(Fraction::ALL.takes(|_| unreachable!()));
        assert!(!Fraction::percent(0).takes(|_| unreachable!()));
        assert!(Fraction::percent(100).takes(|_| unreachable!()));
        assert!(Fraction::percent(250).takes(|_| unreachable!()));
        let twenty = Fraction::percent(20);
        assert!(twenty.takes(|n| {
            assert_eq!(n, 100);
            19
        }));
        assert!(!twenty.takes(|_| 20));
        let half = Fraction::new(25, 50).unwrap();
        assert!(half.takes(|_| 24));
        assert!(!half.takes(|_| 25));
        assert_eq!(Fraction::new(1, 0), None);
        assert_eq!(Fraction::new(7, 5), Fraction::new(5, 5));
    }

    #[test]
    fn each_mirror_is_sampled_on_its_own() {
        let mirrors = Mirrors(vec![
            mirror("all", Fraction::ALL),
            mirror("none", Fraction::percent(0)),
            mirror("half", Fraction::percent(50)),
        ]);
        let low: Vec<_> = mirrors.sample_with(|_| 10).map(|b| &*b.service).collect();
        assert_eq!(low, ["all", "half"]);
        let high: Vec<_> = mirrors.sample_with(|_| 60).map(|b| &*b.service).collect();
        assert_eq!(high, ["all"]);
        // Over many draws, a 20% mirror gets about a fifth.
        let twenty = Mirrors(vec![mirror("m", Fraction::percent(20))]);
        let hits = (0..10_000)
            .filter(|_| twenty.sample().next().is_some())
            .count();
        assert!((1_500..2_500).contains(&hits), "{hits}");
    }
}
