//! Network coordinates (Vivaldi, as Serf computes them): each node has a position in an
//! 8-dimensional Euclidean space plus a "height" (its access-link latency) and an adjustment term;
//! the estimated round-trip time between two nodes is the distance between their coordinates, in
//! seconds. Used by `?near=` sorting, prepared queries' `Near` and `cairn rtt`.

use serde::{Deserialize, Serialize};

/// Serf's LAN coordinate dimensionality.
pub const DIMENSIONALITY: usize = 8;
/// The smallest height Serf's Vivaldi client uses (10 µs), also a new client's starting height.
pub const HEIGHT_MIN: f64 = 10.0e-6;
/// A new client's error estimate.
pub const INITIAL_ERROR: f64 = 1.5;

/// A node's coordinate (`Coord` on the wire).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Coordinate {
    pub vec: Vec<f64>,
    pub error: f64,
    pub adjustment: f64,
    pub height: f64,
}

/// Bitwise equality, so that `Eq` holds (values are validated finite before they are stored).
impl PartialEq for Coordinate {
    fn eq(&self, o: &Self) -> bool {
        let b = |x: f64| x.to_bits();
        self.vec.len() == o.vec.len()
            && self.vec.iter().zip(&o.vec).all(|(x, y)| b(*x) == b(*y))
            && b(self.error) == b(o.error)
            && b(self.adjustment) == b(o.adjustment)
            && b(self.height) == b(o.height)
    }
}
impl Eq for Coordinate {}

impl Default for Coordinate {
    fn default() -> Self {
        Self::origin()
    }
}

impl Coordinate {
    /// Where a node starts before it has measured anything.
    pub fn origin() -> Self {
        Coordinate { vec: vec![0.0; DIMENSIONALITY], error: INITIAL_ERROR, adjustment: 0.0, height: HEIGHT_MIN }
    }

    /// Rejects what the distance computation cannot use: a wrong dimensionality or a non-finite
    /// component.
    pub fn validate(&self) -> Result<(), String> {
        if self.vec.len() != DIMENSIONALITY {
            return Err(format!(
                "incompatible coordinate (dimensionality {}, expected {DIMENSIONALITY})",
                self.vec.len()
            ));
        }
        let all = self.vec.iter().chain([&self.error, &self.adjustment, &self.height]);
        if all.clone().any(|x| !x.is_finite()) {
            return Err("invalid coordinate (a component is not a finite number)".into());
        }
        Ok(())
    }

    /// The estimated round-trip time to `other` in seconds: the Euclidean distance between the
    /// vectors plus both heights, corrected by both adjustments unless that would make it
    /// non-positive. `None` when the two are not comparable (different dimensionality).
    pub fn distance_to(&self, other: &Coordinate) -> Option<f64> {
        if self.vec.len() != other.vec.len() {
            return None;
        }
        let sq: f64 = self.vec.iter().zip(&other.vec).map(|(a, b)| (a - b) * (a - b)).sum();
        let raw = sq.sqrt() + self.height + other.height;
        let adjusted = raw + self.adjustment + other.adjustment;
        Some(if adjusted > 0.0 { adjusted } else { raw })
    }
}

/// A node's coordinate as listed by `/v1/coordinate/nodes` and sent to `/v1/coordinate/update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CoordinateEntry {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub segment: String,
    pub coord: Coordinate,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64, height: f64, adjustment: f64) -> Coordinate {
        let mut c = Coordinate::origin();
        c.vec[0] = x;
        c.height = height;
        c.adjustment = adjustment;
        c
    }

    #[test]
    fn distance_is_euclidean_plus_heights_with_adjustments() {
        let a = at(0.0, 0.001, 0.0);
        let mut b = at(0.003, 0.002, 0.0);
        b.vec[1] = 0.004;
        // sqrt(0.003² + 0.004²) = 0.005, plus both heights.
        assert!((a.distance_to(&b).unwrap() - 0.008).abs() < 1e-12);
        assert_eq!(a.distance_to(&b), b.distance_to(&a));
        // Adjustments apply when the result stays positive...
        let c = at(0.003, 0.002, 0.001);
        assert!((a.distance_to(&c).unwrap() - (0.003 + 0.003 + 0.001)).abs() < 1e-12);
        // ...and are dropped when they would not.
        let d = at(0.003, 0.002, -1.0);
        assert!((a.distance_to(&d).unwrap() - 0.006).abs() < 1e-12);
        let mut short = Coordinate::origin();
        short.vec.pop();
        assert_eq!(a.distance_to(&short), None);
    }

    #[test]
    fn validation() {
        assert!(Coordinate::origin().validate().is_ok());
        let mut c = Coordinate::origin();
        c.vec.push(0.0);
        assert!(c.validate().unwrap_err().contains("incompatible coordinate (dimensionality 9"));
        let mut c = Coordinate::origin();
        c.height = f64::INFINITY;
        assert!(c.validate().is_err());
    }

    #[test]
    fn wire_shape() {
        let e = CoordinateEntry { node: "n1".into(), segment: String::new(), coord: Coordinate::origin() };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["Coord"]["Vec"].as_array().unwrap().len(), 8);
        assert_eq!(v["Coord"]["Error"], 1.5);
        let back: CoordinateEntry = serde_json::from_str(
            r#"{"Node":"n1","Coord":{"Vec":[0,0,0,0,0,0,0,0],"Error":1.5,"Adjustment":0,"Height":0.00001}}"#,
        )
        .unwrap();
        assert_eq!(back, e);
    }
}
