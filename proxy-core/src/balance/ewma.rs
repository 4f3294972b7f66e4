//! `load-balance: ewma`: peak-EWMA of each endpoint's response time, as ingress-nginx's
//! `balancer/ewma.lua`. A pick draws two endpoints at random and takes the one with the
//! lower score (the power of two choices); a response's time (connect plus waiting for
//! its head) is folded in with a weight that decays over [`DECAY`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// ingress-nginx's `DECAY_TIME`.
pub const DECAY: Duration = Duration::from_secs(10);

/// One endpoint's score.
#[derive(Clone, Copy, Debug)]
pub(super) struct Score {
    /// Seconds.
    ewma: f64,
    touched: Instant,
}

impl Score {
    /// The score `rtt` leaves behind at `now`.
    pub fn observe(prior: Option<Score>, rtt: Duration, now: Instant) -> Score {
        let ewma = match prior {
            Some(p) => decayed(p, rtt.as_secs_f64(), now),
            None => rtt.as_secs_f64(),
        };
        Score { ewma, touched: now }
    }

    /// The score as seen at `now` (decayed towards 0, as the Lua reads it with rtt 0).
    pub fn at(self, now: Instant) -> f64 {
        decayed(self, 0.0, now)
    }
}

fn decayed(prior: Score, rtt: f64, now: Instant) -> f64 {
    let td = now.saturating_duration_since(prior.touched).as_secs_f64();
    let weight = (-td / DECAY.as_secs_f64()).exp();
    prior.ewma * weight + rtt * (1.0 - weight)
}

/// Of `healthy` (at least two), the lower-scored of two drawn at random. An endpoint
/// with no score yet scores as the other one drawn, so a new pod gets its share without
/// being flooded (the Lua's slow start gives it the mean of the others).
pub(super) fn pick(
    healthy: &[SocketAddr],
    score: impl Fn(SocketAddr) -> Option<f64>,
    draw: impl FnOnce(usize) -> (usize, usize),
) -> SocketAddr {
    let (i, j) = draw(healthy.len());
    let (a, b) = (healthy[i], healthy[j]);
    let (sa, sb) = (score(a), score(b));
    let (sa, sb) = match (sa, sb) {
        (Some(x), Some(y)) => (x, y),
        (Some(x), None) => (x, x),
        (None, Some(y)) => (y, y),
        (None, None) => (0.0, 0.0),
    };
    if sb < sa {
        b
    } else {
        a
    }
}

/// Two distinct random indexes below `n` (n >= 2).
pub(super) fn draw_two(n: usize) -> (usize, usize) {
    let i = rand::random_range(0..n);
    let mut j = rand::random_range(0..n - 1);
    if j >= i {
        j += 1;
    }
    (i, j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_follows_response_times_and_decays() {
        let t0 = Instant::now();
        let s = Score::observe(None, Duration::from_millis(100), t0);
        assert!((s.at(t0) - 0.1).abs() < 1e-9);
        // Ten seconds on, a fast answer weighs 1 - 1/e.
        let later = t0 + DECAY;
        let s2 = Score::observe(Some(s), Duration::from_millis(10), later);
        let expect = 0.1 / std::f64::consts::E + 0.01 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((s2.at(later) - expect).abs() < 1e-9);
        // Untouched, it decays towards 0.
        assert!(s2.at(later + Duration::from_secs(60)) < 0.001);
    }

    #[test]
    fn the_lower_score_of_the_two_drawn_wins() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let score = |x: SocketAddr| Some(if x == a { 0.5 } else { 0.01 });
        assert_eq!(pick(&[a, b], score, |_| (0, 1)), b);
        assert_eq!(pick(&[a, b], score, |_| (1, 0)), b);
        // A newcomer takes the other's score: ties go to the first drawn.
        assert_eq!(pick(&[a, b], |x| (x == a).then_some(0.2), |_| (1, 0)), b);
        for _ in 0..100 {
            let (i, j) = draw_two(3);
            assert!(i != j && i < 3 && j < 3);
        }
    }
}
