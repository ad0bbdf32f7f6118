//! A time-decayed exponentially weighted moving average, for recent time to first token and
//! request duration.

use std::time::{Duration, Instant};

/// An exponentially weighted moving average whose memory decays with time: a sample counts
/// for about `half_life` before it weighs half as much, however often samples come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    value: Option<f64>,
    at: Option<Instant>,
    half_life: Duration,
}

impl Ewma {
    /// An empty average with this half-life.
    pub fn new(half_life: Duration) -> Ewma {
        Ewma {
            value: None,
            at: None,
            half_life,
        }
    }

    /// Adds a sample taken at `now`. The first sample is the average; a later one weighs
    /// `1 - 0.5^(elapsed / half_life)`, and at least a tenth, so samples taken at the same
    /// instant still move it. A `now` earlier than the last sample counts as no time passed.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let x = sample.as_secs_f64();
        self.value = Some(match (self.value, self.at) {
            (Some(v), Some(at)) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let keep = 0.5f64.powf(dt / self.half_life.as_secs_f64().max(1e-9)).min(0.9);
                v * keep + x * (1.0 - keep)
            }
            _ => x,
        });
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// The current average, if any sample was taken.
    pub fn get(&self) -> Option<Duration> {
        self.value.and_then(|v| Duration::try_from_secs_f64(v).ok())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Ewma;

    #[test]
    fn ewma_follows_samples_and_forgets_with_time() {
        let t0 = Instant::now();
        let mut e = Ewma::new(Duration::from_secs(10));
        assert_eq!(e.get(), None);
        e.observe(Duration::from_millis(100), t0);
        assert_eq!(e.get(), Some(Duration::from_millis(100)));
        e.observe(Duration::from_millis(300), t0 + Duration::from_secs(10));
        let v = e.get().unwrap().as_secs_f64();
        assert!((v - 0.2).abs() < 1e-9, "one half-life later, half and half: {v}");
        e.observe(Duration::from_millis(300), t0 + Duration::from_secs(10));
        assert!(
            e.get().unwrap().as_secs_f64() > v,
            "a sample at the same instant still counts"
        );
        e.observe(Duration::from_millis(1000), t0 + Duration::from_secs(1000));
        assert!(
            (e.get().unwrap().as_secs_f64() - 1.0).abs() < 1e-6,
            "old history is forgotten"
        );
        e.observe(Duration::from_millis(0), t0);
        let after_stale = e.get().unwrap().as_secs_f64();
        assert!(
            (after_stale - 0.9).abs() < 1e-6,
            "a sample stamped in the past counts as simultaneous: {after_stale}"
        );
        let mut zero = Ewma::new(Duration::ZERO);
        zero.observe(Duration::from_secs(1), t0);
        zero.observe(Duration::from_secs(3), t0 + Duration::from_millis(1));
        assert_eq!(
            zero.get(),
            Some(Duration::from_secs(3)),
            "a zero half-life keeps the latest"
        );
    }
}
