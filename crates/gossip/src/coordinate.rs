//! Vivaldi network coordinates, as Serf computes them (docs/gossip-facts/serf.md §4b): 8
//! dimensions plus a height and an adjustment term, fed by probe round-trip times, carried in ack
//! payloads as `[1] ++ msgpack(Coordinate)`.

use std::collections::HashMap;
use std::time::Duration;

use crate::env::Rng;
use crate::wire_struct;

pub const DIMENSIONS: usize = 8;
const ERROR_MAX: f64 = 1.5;
const CE: f64 = 0.25;
const CC: f64 = 0.25;
const ADJUSTMENT_WINDOW: usize = 20;
const HEIGHT_MIN: f64 = 10.0e-6;
const LATENCY_FILTER: usize = 3;
const GRAVITY_RHO: f64 = 150.0;
const ZERO_THRESHOLD: f64 = 1.0e-6;
/// The ack payload's version byte.
pub const PING_VERSION: u8 = 1;

wire_struct! {
    pub struct Coordinate {
        "Adjustment" => pub adjustment: f64,
        "Error" => pub error: f64,
        "Height" => pub height: f64,
        "Vec" => pub vec: Vec<f64>,
    }
}

impl Coordinate {
    pub fn origin() -> Coordinate {
        Coordinate { vec: vec![0.0; DIMENSIONS], error: ERROR_MAX, adjustment: 0.0, height: HEIGHT_MIN }
    }

    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|v| v.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    pub fn is_compatible(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    fn raw_distance(&self, other: &Coordinate) -> f64 {
        magnitude(&diff(&self.vec, &other.vec)) + self.height + other.height
    }

    /// The estimated round trip to `other`, in seconds.
    pub fn distance_to(&self, other: &Coordinate) -> f64 {
        let raw = self.raw_distance(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        if adjusted > 0.0 {
            adjusted
        } else {
            raw
        }
    }

    fn apply_force(&mut self, rng: &mut dyn Rng, force: f64, other: &Coordinate) {
        let (unit, mag) = unit_vector_at(rng, &self.vec, &other.vec);
        for (v, u) in self.vec.iter_mut().zip(unit) {
            *v += u * force;
        }
        if mag > ZERO_THRESHOLD {
            self.height = ((self.height + other.height) * force / mag + self.height).max(HEIGHT_MIN);
        }
    }

    /// The ack payload carrying this coordinate.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut e = crate::msgpack::Enc::new();
        e.buf.push(PING_VERSION);
        crate::msgpack::Wire::encode(self, &mut e);
        e.into_vec()
    }

    pub fn from_payload(p: &[u8]) -> Option<Coordinate> {
        let (&v, rest) = p.split_first()?;
        if v != PING_VERSION {
            return None;
        }
        crate::msgpack::decode(rest).ok()
    }
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn unit_vector_at(rng: &mut dyn Rng, a: &[f64], b: &[f64]) -> (Vec<f64>, f64) {
    let d = diff(a, b);
    let mag = magnitude(&d);
    if mag > ZERO_THRESHOLD {
        return (d.iter().map(|x| x / mag).collect(), mag);
    }
    // The two are on top of each other: push in a random direction.
    let r: Vec<f64> = (0..a.len()).map(|_| (rng.next_u64() as f64 / u64::MAX as f64) - 0.5).collect();
    let m = magnitude(&r);
    if m > ZERO_THRESHOLD {
        return (r.iter().map(|x| x / m).collect(), 0.0);
    }
    let mut e = vec![0.0; a.len()];
    if let Some(x) = e.first_mut() {
        *x = 1.0;
    }
    (e, 0.0)
}

/// One node's view: its own coordinate and the latency samples it bases it on.
#[derive(Debug, Clone)]
pub struct Client {
    coord: Coordinate,
    origin: Coordinate,
    adjustment_index: usize,
    adjustment_samples: [f64; ADJUSTMENT_WINDOW],
    latency: HashMap<String, Vec<f64>>,
    pub resets: u64,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            coord: Coordinate::origin(),
            origin: Coordinate::origin(),
            adjustment_index: 0,
            adjustment_samples: [0.0; ADJUSTMENT_WINDOW],
            latency: HashMap::new(),
            resets: 0,
        }
    }
}

impl Client {
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    pub fn forget(&mut self, node: &str) {
        self.latency.remove(node);
    }

    /// Folds one observed round trip to `node` (at `other`) into our coordinate.
    pub fn update(
        &mut self,
        rng: &mut dyn Rng,
        node: &str,
        other: &Coordinate,
        rtt: Duration,
    ) -> Result<(), &'static str> {
        if !other.is_compatible(&self.coord) {
            return Err("dimensions aren't compatible");
        }
        if !other.is_valid() {
            return Err("coordinate is invalid");
        }
        if rtt > Duration::from_secs(10) {
            return Err("round trip time not in valid range");
        }
        let samples = self.latency.entry(node.to_string()).or_default();
        samples.push(rtt.as_secs_f64());
        if samples.len() > LATENCY_FILTER {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let rtt = sorted[sorted.len() / 2].max(ZERO_THRESHOLD);

        // Vivaldi.
        let dist = self.coord.distance_to(other);
        let wrongness = (dist - rtt).abs() / rtt;
        let total = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total;
        self.coord.error = (CE * weight * wrongness + self.coord.error * (1.0 - CE * weight)).min(ERROR_MAX);
        let force = CC * weight * (rtt - dist);
        self.coord.apply_force(rng, force, other);

        // Adjustment: the average error of the raw model over a window.
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance(other);
        self.adjustment_index = (self.adjustment_index + 1) % ADJUSTMENT_WINDOW;
        self.coord.adjustment = self.adjustment_samples.iter().sum::<f64>() / (2.0 * ADJUSTMENT_WINDOW as f64);

        // Gravity pulls everyone gently toward the origin so the space does not drift.
        let d = self.origin.distance_to(&self.coord);
        let force = -(d / GRAVITY_RHO).powi(2);
        let origin = self.origin.clone();
        self.coord.apply_force(rng, force, &origin);

        if !self.coord.is_valid() {
            self.resets += 1;
            self.coord = Coordinate::origin();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::SeededRng;

    #[test]
    fn converges_to_measured_distance() {
        let mut rng = SeededRng(1);
        let mut a = Client::default();
        let mut b = Client::default();
        let rtt = Duration::from_millis(50);
        for _ in 0..200 {
            let cb = b.coordinate().clone();
            a.update(&mut rng, "b", &cb, rtt).unwrap();
            let ca = a.coordinate().clone();
            b.update(&mut rng, "a", &ca, rtt).unwrap();
        }
        let est = a.coordinate().distance_to(b.coordinate());
        assert!((est - 0.05).abs() < 0.01, "estimate {est}");
    }

    #[test]
    fn payload_round_trip_and_rejects() {
        let c = Coordinate::origin();
        assert_eq!(Coordinate::from_payload(&c.to_payload()), Some(c.clone()));
        assert_eq!(Coordinate::from_payload(&[2, 0x80]), None);
        let mut rng = SeededRng(1);
        let bad = Coordinate { vec: vec![f64::NAN; 8], ..c };
        assert!(Client::default().update(&mut rng, "x", &bad, Duration::from_millis(1)).is_err());
    }
}
