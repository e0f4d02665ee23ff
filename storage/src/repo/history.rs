//! Telemetry history. Raw samples are keyed `(day, thing, ts)` and hourly aggregates
//! `(day, thing, hour)`, partitioned by UTC day (from the sample's device time) so that
//! retention removes a whole day with one range clear and a day's rollup reads it in key order,
//! thing by thing. A redelivered sample (same thing and `ts`) overwrites itself.

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction},
};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use twin_core::ThingName;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;
/// Milliseconds in an hour.
pub const HOUR_MS: u64 = 3_600_000;

/// The UTC day of an epoch-ms time.
pub fn day_of(ts: u64) -> u32 {
    (ts / DAY_MS) as u32
}

/// Aggregates of one numeric field over an hour.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldAgg {
    /// Samples.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// The latest by time.
    pub last: f64,
}

impl FieldAgg {
    /// One sample.
    pub fn of(value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
            last: value,
        }
    }

    /// Adds a later sample.
    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last = value;
    }

    /// Merges the aggregates of a later period.
    pub fn merge(&mut self, later: &FieldAgg) {
        self.count += later.count;
        self.sum += later.sum;
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.last = later.last;
    }
}

/// Aggregates of every numeric field of a thing over one hour.
pub type HourAgg = BTreeMap<String, FieldAgg>;

/// A raw sample as stored: device time and the sample's fields as JSON.
pub type RawSample = (u64, Vec<u8>);

/// The telemetry history repository.
#[derive(Clone, Debug)]
pub struct History {
    raw: Subspace,
    hourly: Subspace,
    mark: Vec<u8>,
}

impl History {
    pub(crate) fn new(space: Subspace) -> Self {
        Self {
            raw: space.subspace(&"raw"),
            hourly: space.subspace(&"hourly"),
            mark: space.pack(&"rolled-up-to"),
        }
    }

    /// Records a sample's fields (JSON) at device time `ts`.
    pub fn append(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        ts: u64,
        json: &[u8],
    ) -> Result<(), StoreError> {
        tx.set(&self.raw.pack(&(day_of(ts), thing.as_str(), ts)), json)
    }

    /// Raw samples of `thing` with `from <= ts < to`, oldest first, at most `limit`.
    pub fn raw(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<RawSample>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        for day in day_of(from)..=day_of(to - 1) {
            let range = KeyRange::new(
                self.raw.pack(&(day, thing.as_str(), from)),
                self.raw.pack(&(day, thing.as_str(), to)),
            );
            let options = RangeOptions {
                limit: Some(limit - out.len()),
                reverse: false,
            };
            for (key, value) in tx.get_range(&range, options)? {
                let (_, _, ts): (u32, String, u64) = self
                    .raw
                    .unpack(&key)
                    .map_err(|e| StoreError::corrupt("telemetry key", e))?;
                out.push((ts, value));
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` raw samples of `day` after `after` (a thing and time), in key order:
    /// thing by thing, each thing's samples by time. For the rollup.
    pub fn raw_day(
        &self,
        tx: &mut impl Transaction,
        day: u32,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<(String, u64, Vec<u8>)>, StoreError> {
        let space = self.raw.subspace(&day);
        let (mut begin, end) = space.range();
        if let Some(after) = after {
            begin = space.pack(&after);
            begin.push(0);
        }
        let options = RangeOptions {
            limit: Some(limit),
            reverse: false,
        };
        tx.get_range(&KeyRange::new(begin, end), options)?
            .into_iter()
            .map(|(key, value)| {
                let (thing, ts): (String, u64) = space
                    .unpack(&key)
                    .map_err(|e| StoreError::corrupt("telemetry key", e))?;
                Ok((thing, ts, value))
            })
            .collect()
    }

    /// The oldest day holding raw samples.
    pub fn oldest_raw_day(&self, tx: &mut impl Transaction) -> Result<Option<u32>, StoreError> {
        let options = RangeOptions {
            limit: Some(1),
            reverse: false,
        };
        let first = tx.get_range(&self.raw.range().into(), options)?;
        first
            .first()
            .map(|(key, _)| {
                let (day, _, _): (u32, String, u64) = self
                    .raw
                    .unpack(key)
                    .map_err(|e| StoreError::corrupt("telemetry key", e))?;
                Ok(day)
            })
            .transpose()
    }

    /// Stores the aggregates of `thing` for the hour starting at `hour` (epoch ms).
    pub fn put_hourly(
        &self,
        tx: &mut impl Transaction,
        thing: &str,
        hour: u64,
        agg: &HourAgg,
    ) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(agg).map_err(|e| StoreError::corrupt("hourly aggregate", e))?;
        tx.set(&self.hourly.pack(&(day_of(hour), thing, hour)), &bytes)
    }

    /// Hourly aggregates of `thing` for hours starting in `[from, to)`.
    pub fn hourly(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, HourAgg)>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        for day in day_of(from)..=day_of(to - 1) {
            let range = KeyRange::new(
                self.hourly.pack(&(day, thing.as_str(), from)),
                self.hourly.pack(&(day, thing.as_str(), to)),
            );
            for (key, value) in tx.get_range(&range, RangeOptions::default())? {
                let (_, _, hour): (u32, String, u64) = self
                    .hourly
                    .unpack(&key)
                    .map_err(|e| StoreError::corrupt("hourly key", e))?;
                let agg = serde_json::from_slice(&value)
                    .map_err(|e| StoreError::corrupt("hourly aggregate", e))?;
                out.push((hour, agg));
            }
        }
        Ok(out)
    }

    /// Removes the raw samples of every day before `day`.
    pub fn drop_raw_before(&self, tx: &mut impl Transaction, day: u32) -> Result<(), StoreError> {
        tx.clear_range(&KeyRange::new(self.raw.range().0, self.raw.pack(&(day,))))
    }

    /// Removes the hourly aggregates of every day before `day`.
    pub fn drop_hourly_before(
        &self,
        tx: &mut impl Transaction,
        day: u32,
    ) -> Result<(), StoreError> {
        tx.clear_range(&KeyRange::new(
            self.hourly.range().0,
            self.hourly.pack(&(day,)),
        ))
    }

    /// The last day rolled up into hourly aggregates.
    pub fn rolled_up_to(&self, tx: &mut impl Transaction) -> Result<Option<u32>, StoreError> {
        tx.get(&self.mark)?
            .map(|v| {
                let bytes: [u8; 4] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::corrupt("rollup mark", "not 4 bytes"))?;
                Ok(u32::from_be_bytes(bytes))
            })
            .transpose()
    }

    /// Records that `day` is rolled up.
    pub fn set_rolled_up_to(&self, tx: &mut impl Transaction, day: u32) -> Result<(), StoreError> {
        tx.set(&self.mark, &day.to_be_bytes())
    }
}
