//! Device models. A sensor's readings follow a random walk with occasional anomalies (a spike
//! a threshold rule should catch); an actuator follows its desired state (`power`, `setpoint`)
//! and reports its state back, its temperature drifting towards the setpoint.

use rand::{Rng, rngs::SmallRng};
use serde_json::{Map, Value};
use std::fmt::Write;

/// Chance per sample that a sensor reports an anomaly.
const ANOMALY: f64 = 0.002;

/// A sensor's state.
#[derive(Debug, Clone)]
pub(crate) struct Sensor {
    temp: f32,
    hum: f32,
    battery: f32,
}

impl Sensor {
    /// A sensor with readings spread around room conditions.
    pub fn new(rng: &mut SmallRng) -> Self {
        Self {
            temp: rng.random_range(18.0..24.0),
            hum: rng.random_range(35.0..55.0),
            battery: rng.random_range(60.0..100.0),
        }
    }

    /// Takes the next readings and writes them as JSON members (`"temp":…,"hum":…`).
    pub fn sample(&mut self, rng: &mut SmallRng, out: &mut String) {
        self.temp = (self.temp + rng.random_range(-0.2..0.2)).clamp(-20.0, 60.0);
        self.hum = (self.hum + rng.random_range(-0.5..0.5)).clamp(0.0, 100.0);
        self.battery = (self.battery - 0.001).max(0.0);
        let temp = if rng.random_bool(ANOMALY) {
            self.temp + 40.0
        } else {
            self.temp
        };
        let _ = write!(
            out,
            "\"temp\":{temp:.2},\"hum\":{:.1},\"battery\":{:.1}",
            self.hum, self.battery
        );
    }
}

/// An actuator's state.
#[derive(Debug, Clone)]
pub(crate) struct Actuator {
    power: bool,
    setpoint: f32,
    temp: f32,
}

impl Actuator {
    pub fn new(rng: &mut SmallRng) -> Self {
        Self {
            power: false,
            setpoint: 20.0,
            temp: rng.random_range(18.0..24.0),
        }
    }

    /// Applies a delta (the desired values that differ from reported); returns the reported
    /// state to send back, or `None` if the delta names nothing the actuator has.
    pub fn follow(&mut self, delta: &Map<String, Value>) -> Option<Value> {
        let mut reported = Map::new();
        if let Some(power) = delta.get("power").and_then(Value::as_str) {
            self.power = power == "on";
            reported.insert("power".into(), Value::from(power));
        }
        if let Some(setpoint) = delta.get("setpoint").and_then(Value::as_f64) {
            self.setpoint = setpoint as f32;
            reported.insert("setpoint".into(), Value::from(setpoint));
        }
        (!reported.is_empty()).then(|| serde_json::json!({ "state": { "reported": reported } }))
    }

    /// Takes the next reading (the temperature moves towards the setpoint while powered).
    pub fn sample(&mut self, rng: &mut SmallRng, out: &mut String) {
        if self.power {
            self.temp += (self.setpoint - self.temp) * 0.1;
        }
        self.temp += rng.random_range(-0.05..0.05);
        let _ = write!(
            out,
            "\"temp\":{:.2},\"power\":\"{}\"",
            self.temp,
            if self.power { "on" } else { "off" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sensors_write_json_members() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut sensor = Sensor::new(&mut rng);
        for _ in 0..1000 {
            let mut out = String::from("{");
            sensor.sample(&mut rng, &mut out);
            out.push('}');
            let v: Value = serde_json::from_str(&out).unwrap();
            assert!(v["temp"].is_number() && v["hum"].is_number() && v["battery"].is_number());
        }
    }

    #[test]
    fn actuators_follow_their_delta() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut a = Actuator::new(&mut rng);
        let delta = serde_json::json!({"power": "on", "setpoint": 22.5, "other": 1});
        let reported = a.follow(delta.as_object().unwrap()).unwrap();
        assert_eq!(
            reported,
            serde_json::json!({"state": {"reported": {"power": "on", "setpoint": 22.5}}})
        );
        assert!(a.follow(&Map::new()).is_none());
        for _ in 0..200 {
            a.sample(&mut rng, &mut String::new());
        }
        assert!((a.temp - 22.5).abs() < 0.5, "{}", a.temp);
    }
}
