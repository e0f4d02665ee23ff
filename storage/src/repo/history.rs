//! Telemetry history. Raw samples are keyed `(day, thing, ts)` and hourly aggregates
//! `(day, thing, hour)`, partitioned by UTC day (from the sample's device time) so that
//! retention removes a whole day with one range clear and a day's rollup reads it in key order,
//! thing by thing. Every sample has its own key: `(day, thing, ts, seq)`, where `seq` (unique
//! per node, rising) keeps apart samples that share a device time.

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction, key_after},
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

/// A raw sample as stored: device time, sequence, and the sample's fields as JSON.
pub type RawSample = (u64, u64, Vec<u8>);

/// A raw sample in a day's rollup: thing, device time, sequence, fields as JSON.
pub type DaySample = (String, u64, u64, Vec<u8>);

/// Reads a raw key's `(day, thing, ts, seq)`; keys written before samples had a sequence
/// (`(day, thing, ts)`) read with sequence 0.
fn unpack_raw(space: &Subspace, key: &[u8]) -> Result<(u32, String, u64, u64), StoreError> {
    match space.unpack::<(u32, String, u64, u64)>(key) {
        Ok(parts) => Ok(parts),
        Err(error) => space
            .unpack::<(u32, String, u64)>(key)
            .map(|(day, thing, ts)| (day, thing, ts, 0))
            .map_err(|_| StoreError::corrupt("telemetry key", error)),
    }
}

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

    /// Records a sample's fields (JSON) at device time `ts`; `seq` tells apart samples of the
    /// same thing and time (each write with a new `seq` is a new sample).
    pub fn append(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        ts: u64,
        seq: u64,
        json: &[u8],
    ) -> Result<(), StoreError> {
        tx.set(&self.raw.pack(&(day_of(ts), thing.as_str(), ts, seq)), json)
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
        let begin = self.raw.pack(&(day_of(from), thing.as_str(), from));
        self.raw_from(tx, thing, from, begin, to, limit)
    }

    /// Raw samples of `thing` after the sample `(ts, seq)` and before `to`, oldest first, at
    /// most `limit`: the next page after a page that ended with that sample.
    pub fn raw_after(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        (ts, seq): (u64, u64),
        to: u64,
        limit: usize,
    ) -> Result<Vec<RawSample>, StoreError> {
        let begin = key_after(self.raw.pack(&(day_of(ts), thing.as_str(), ts, seq)));
        self.raw_from(tx, thing, ts, begin, to, limit)
    }

    fn raw_from(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        from: u64,
        mut begin: Vec<u8>,
        to: u64,
        limit: usize,
    ) -> Result<Vec<RawSample>, StoreError> {
        let mut out = Vec::new();
        if from >= to || limit == 0 {
            return Ok(out);
        }
        for day in day_of(from)..=day_of(to - 1) {
            if day != day_of(from) {
                begin = self.raw.pack(&(day, thing.as_str()));
            }
            let end = if day == day_of(to - 1) {
                self.raw.pack(&(day, thing.as_str(), to))
            } else {
                self.raw.subspace(&(day, thing.as_str())).range().1
            };
            let options = RangeOptions::first(limit - out.len());
            for (key, value) in
                tx.get_range(&KeyRange::new(std::mem::take(&mut begin), end), options)?
            {
                let (_, _, ts, seq) = unpack_raw(&self.raw, &key)?;
                out.push((ts, seq, value));
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` raw samples of `day` after `after` (a thing, time and sequence), in key
    /// order: thing by thing, each thing's samples by time. For the rollup.
    pub fn raw_day(
        &self,
        tx: &mut impl Transaction,
        day: u32,
        after: Option<(&str, u64, u64)>,
        limit: usize,
    ) -> Result<Vec<DaySample>, StoreError> {
        let space = self.raw.subspace(&day);
        let (mut begin, end) = space.range();
        if let Some((thing, ts, seq)) = after {
            begin = key_after(self.raw.pack(&(day, thing, ts, seq)));
        }
        let options = RangeOptions::first(limit);
        tx.get_range(&KeyRange::new(begin, end), options)?
            .into_iter()
            .map(|(key, value)| {
                let (_, thing, ts, seq) = unpack_raw(&self.raw, &key)?;
                Ok((thing, ts, seq, value))
            })
            .collect()
    }

    /// Removes every sample and hourly aggregate of `thing` on the days from the oldest that
    /// holds any sample to `last_day` (a decommissioned thing's history goes with it, so a
    /// thing registered later under the same name starts with none).
    pub fn remove_thing(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        last_day: u32,
    ) -> Result<(), StoreError> {
        for space in [&self.raw, &self.hourly] {
            let Some(first) = self.oldest_day(tx, space)? else {
                continue;
            };
            for day in first..=last_day {
                tx.clear_range(&space.subspace(&(day, thing.as_str())).range().into())?;
            }
        }
        Ok(())
    }

    fn oldest_day(
        &self,
        tx: &mut impl Transaction,
        space: &Subspace,
    ) -> Result<Option<u32>, StoreError> {
        let options = RangeOptions::first(1);
        let first = tx.get_range(&space.range().into(), options)?;
        first
            .first()
            .map(|(key, _)| {
                // Raw and hourly keys both start with the day.
                match space.unpack::<foundationdb_tuple::Element>(key) {
                    Ok(foundationdb_tuple::Element::Tuple(parts)) => match parts.first() {
                        Some(foundationdb_tuple::Element::Int(day)) => u32::try_from(*day).ok(),
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| StoreError::corrupt("telemetry key", "no day"))
            })
            .transpose()
    }

    /// The oldest day holding raw samples.
    pub fn oldest_raw_day(&self, tx: &mut impl Transaction) -> Result<Option<u32>, StoreError> {
        self.oldest_day(tx, &self.raw)
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
