//! Telemetry history beyond the commit path: the background maintenance that rolls finished
//! days up into hourly aggregates and removes expired days, and queries that downsample raw
//! samples (recent data) or hourly aggregates (older data) into buckets.

use crate::{
    config::HistoryConfig,
    directory::{Directory, LogKind},
    error::NodeError,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use storage::{
    Store,
    repo::{DAY_MS, FieldAgg, HOUR_MS, HourAgg, day_of},
};
use tracing::{debug, info};
use twin_core::ThingName;

/// How buckets are summarized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    /// Mean.
    Avg,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// Sum.
    Sum,
    /// Number of samples.
    Count,
    /// Latest by time.
    Last,
}

impl Agg {
    /// Parses `avg`, `min`, `max`, `sum`, `count` or `last`.
    pub fn parse(text: &str) -> Option<Agg> {
        Some(match text {
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "last" => Agg::Last,
            _ => return None,
        })
    }

    fn of(self, a: &FieldAgg) -> f64 {
        match self {
            Agg::Avg => a.sum / a.count as f64,
            Agg::Min => a.min,
            Agg::Max => a.max,
            Agg::Sum => a.sum,
            Agg::Count => a.count as f64,
            Agg::Last => a.last,
        }
    }
}

/// A history query.
#[derive(Clone, Debug)]
pub struct Query {
    /// Start, epoch ms (inclusive).
    pub from: u64,
    /// End, epoch ms (exclusive).
    pub to: u64,
    /// Bucket width in ms; `None` for raw samples.
    pub step: Option<u64>,
    /// Bucket summary.
    pub agg: Agg,
    /// Only these fields (all numeric fields if `None`).
    pub fields: Option<Vec<String>>,
    /// Most raw samples or buckets returned.
    pub limit: usize,
}

/// One bucket: its start and the summary of each field.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Bucket start, epoch ms.
    pub ts: u64,
    /// Field → summary.
    pub values: BTreeMap<String, f64>,
}

/// What a query returns.
#[derive(Clone, Debug, PartialEq)]
pub enum Series {
    /// Raw samples: device time and fields.
    Raw(Vec<(u64, Value)>),
    /// Downsampled buckets.
    Points(Vec<Point>),
}

/// Why a query was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query itself is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// First day whose raw samples are kept, as of `now`.
fn raw_start_day(config: &HistoryConfig, now: u64) -> u32 {
    let days = (config.raw_retention.as_millis() as u64).div_ceil(DAY_MS) as u32;
    day_of(now).saturating_sub(days)
}

fn hourly_start_day(config: &HistoryConfig, now: u64) -> u32 {
    let days = (config.hourly_retention.as_millis() as u64).div_ceil(DAY_MS) as u32;
    day_of(now).saturating_sub(days)
}

fn numeric_fields(sample: &Map<String, Value>) -> impl Iterator<Item = (&String, f64)> {
    sample
        .iter()
        .filter_map(|(k, v)| v.as_f64().map(|n| (k, n)))
}

/// The sequence of the next telemetry sample: unique and rising in this process, and ahead of
/// every sequence an earlier run of the node used (it starts from the clock in microseconds
/// and advances by one per sample, far slower than the clock).
pub(crate) fn next_seq() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now_us.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Runs a query against the history of `thing`.
pub fn query(
    directory: &Directory,
    config: &HistoryConfig,
    thing: &ThingName,
    q: &Query,
    now: u64,
) -> Result<Series, QueryError> {
    if q.from >= q.to {
        return Err(QueryError::Invalid("from must be before to".into()));
    }
    let repos = directory.repos();
    let store = directory.store();
    let raw_from = u64::from(raw_start_day(config, now)) * DAY_MS;
    let keep = |field: &str| {
        q.fields
            .as_ref()
            .is_none_or(|f| f.iter().any(|x| x == field))
    };
    let Some(step) = q.step else {
        if q.from < raw_from {
            return Err(QueryError::Invalid(
                "raw samples are kept only for the raw retention; ask for a step".into(),
            ));
        }
        let raw = store
            .transact(|tx| repos.history.raw(tx, thing, q.from, q.to, q.limit))
            .map_err(NodeError::from)?;
        let samples = raw
            .into_iter()
            .filter_map(|(ts, _, json)| {
                serde_json::from_slice::<Map<String, Value>>(&json)
                    .ok()
                    .map(|m| (ts, m))
            })
            .map(|(ts, m)| {
                (
                    ts,
                    Value::Object(m.into_iter().filter(|(k, _)| keep(k)).collect()),
                )
            })
            .collect();
        return Ok(Series::Raw(samples));
    };
    if step == 0 {
        return Err(QueryError::Invalid("step must be positive".into()));
    }
    let buckets = (q.to - q.from).div_ceil(step);
    if buckets as usize > q.limit {
        return Err(QueryError::Invalid(format!(
            "{buckets} buckets; at most {} per query",
            q.limit
        )));
    }
    let mut acc: BTreeMap<u64, HourAgg> = BTreeMap::new();
    let bucket = |ts: u64| q.from + (ts - q.from) / step * step;
    // Older than the raw retention: hourly aggregates, which only divide into whole hours.
    if q.from < raw_from {
        if !step.is_multiple_of(HOUR_MS) || !q.from.is_multiple_of(HOUR_MS) {
            return Err(QueryError::Invalid("data older than the raw retention is kept hourly: use whole hours for from and step".into()));
        }
        let hourly = store
            .transact(|tx| repos.history.hourly(tx, thing, q.from, raw_from.min(q.to)))
            .map_err(NodeError::from)?;
        for (hour, agg) in hourly {
            let slot = acc.entry(bucket(hour)).or_default();
            for (field, a) in agg.into_iter().filter(|(f, _)| keep(f)) {
                match slot.get_mut(&field) {
                    Some(existing) => existing.merge(&a),
                    None => {
                        slot.insert(field, a);
                    }
                }
            }
        }
    }
    if q.to > raw_from {
        let start = q.from.max(raw_from);
        let mut after: Option<(u64, u64)> = None;
        // Raw samples are read in pages so that a long range does not load in one piece.
        loop {
            let page = store
                .transact(|tx| match after {
                    None => repos.history.raw(tx, thing, start, q.to, 10_000),
                    Some(after) => repos.history.raw_after(tx, thing, after, q.to, 10_000),
                })
                .map_err(NodeError::from)?;
            let full = page.len() == 10_000;
            for (ts, _, json) in &page {
                let Ok(sample) = serde_json::from_slice::<Map<String, Value>>(json) else {
                    continue;
                };
                let slot = acc.entry(bucket(*ts)).or_default();
                for (field, value) in numeric_fields(&sample).filter(|(f, _)| keep(f)) {
                    match slot.get_mut(field) {
                        Some(a) => a.add(value),
                        None => {
                            slot.insert(field.clone(), FieldAgg::of(value));
                        }
                    }
                }
            }
            match page.last() {
                Some((ts, seq, _)) if full => after = Some((*ts, *seq)),
                _ => break,
            }
        }
    }
    Ok(Series::Points(
        acc.into_iter()
            .map(|(ts, fields)| Point {
                ts,
                values: fields
                    .iter()
                    .map(|(k, a)| (k.clone(), q.agg.of(a)))
                    .collect(),
            })
            .collect(),
    ))
}

/// Rolls every finished day that is not yet rolled up into hourly aggregates, then removes raw
/// days, hourly days and rule-log entries past their retention. Returns the days rolled up.
pub fn maintain(directory: &Directory, config: &HistoryConfig, now: u64) -> Result<u32, NodeError> {
    let repos = directory.repos();
    let store = directory.store();
    let today = day_of(now);
    let (mark, oldest) = store.transact(|tx| {
        Ok((
            repos.history.rolled_up_to(tx)?,
            repos.history.oldest_raw_day(tx)?,
        ))
    })?;
    let first = match (mark, oldest) {
        (Some(mark), _) => mark + 1,
        (None, Some(oldest)) => oldest,
        (None, None) => today,
    };
    let mut rolled = 0;
    for day in first..today {
        rollup_day(directory, day)?;
        store.transact(|tx| repos.history.set_rolled_up_to(tx, day))?;
        rolled += 1;
    }
    let raw_start = raw_start_day(config, now);
    let hourly_start = hourly_start_day(config, now);
    // The rule log (alerts, commands) is kept as long as the hourly aggregates.
    let log_start = u64::from(hourly_start) * DAY_MS;
    store.transact(|tx| {
        repos.history.drop_raw_before(tx, raw_start)?;
        repos.history.drop_hourly_before(tx, hourly_start)?;
        for kind in [LogKind::Alert, LogKind::Command] {
            repos.rule_log.expire(tx, kind, log_start)?;
        }
        Ok(())
    })?;
    if rolled > 0 {
        info!(
            rolled,
            raw_from_day = raw_start,
            "telemetry history rolled up"
        );
    }
    Ok(rolled)
}

fn rollup_day(directory: &Directory, day: u32) -> Result<(), NodeError> {
    let repos = directory.repos();
    let store = directory.store();
    let mut after: Option<(String, u64, u64)> = None;
    let mut current: Option<(String, BTreeMap<u64, HourAgg>)> = None;
    let flush = |thing: &str, hours: &BTreeMap<u64, HourAgg>| -> Result<(), NodeError> {
        store.transact(|tx| {
            for (hour, agg) in hours {
                repos.history.put_hourly(tx, thing, *hour, agg)?;
            }
            Ok(())
        })?;
        Ok(())
    };
    loop {
        let page = store.transact(|tx| {
            repos.history.raw_day(
                tx,
                day,
                after.as_ref().map(|(t, ts, seq)| (t.as_str(), *ts, *seq)),
                10_000,
            )
        })?;
        let done = page.len() < 10_000;
        for (thing, ts, seq, json) in page {
            if current.as_ref().is_none_or(|(t, _)| *t != thing) {
                if let Some((t, hours)) = current.take() {
                    flush(&t, &hours)?;
                }
                current = Some((thing.clone(), BTreeMap::new()));
            }
            if let (Some((_, hours)), Ok(sample)) = (
                current.as_mut(),
                serde_json::from_slice::<Map<String, Value>>(&json),
            ) {
                let hour = hours.entry(ts / HOUR_MS * HOUR_MS).or_default();
                for (field, value) in numeric_fields(&sample) {
                    match hour.get_mut(field) {
                        Some(a) => a.add(value),
                        None => {
                            hour.insert(field.clone(), FieldAgg::of(value));
                        }
                    }
                }
            }
            after = Some((thing, ts, seq));
        }
        if done {
            break;
        }
    }
    if let Some((t, hours)) = current {
        flush(&t, &hours)?;
    }
    debug!(day, "rolled up a day of telemetry");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::{AnyStore, FjallStore, Repos};

    const DAY0: u64 = 20_000 * DAY_MS;

    fn setup() -> (tempfile::TempDir, Directory) {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::from(FjallStore::open(dir.path()).unwrap());
        (dir, Directory::load(store, Repos::default()).unwrap())
    }

    fn write(d: &Directory, thing: &ThingName, samples: &[(u64, Value)]) {
        d.store()
            .transact(|tx| {
                for (ts, v) in samples {
                    d.repos().history.append(
                        tx,
                        thing,
                        *ts,
                        next_seq(),
                        v.to_string().as_bytes(),
                    )?;
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn recent_data_is_downsampled_from_raw_samples() {
        let (_dir, d) = setup();
        let t = ThingName::new("m").unwrap();
        let now = DAY0 + 12 * HOUR_MS;
        let samples: Vec<(u64, Value)> = (0..60)
            .map(|i| {
                (
                    DAY0 + i * 60_000,
                    serde_json::json!({"temp": i, "state": "on"}),
                )
            })
            .collect();
        write(&d, &t, &samples);
        let q = Query {
            from: DAY0,
            to: DAY0 + HOUR_MS,
            step: Some(15 * 60_000),
            agg: Agg::Avg,
            fields: None,
            limit: 1000,
        };
        let Series::Points(points) = query(&d, &HistoryConfig::default(), &t, &q, now).unwrap()
        else {
            panic!()
        };
        assert_eq!(points.len(), 4);
        assert_eq!(points[0].ts, DAY0);
        assert_eq!(points[0].values["temp"], 7.0, "mean of 0..=14");
        assert!(
            !points[0].values.contains_key("state"),
            "only numeric fields"
        );
        for (agg, expected) in [
            (Agg::Min, 15.0),
            (Agg::Max, 29.0),
            (Agg::Count, 15.0),
            (Agg::Sum, 330.0),
            (Agg::Last, 29.0),
        ] {
            let Series::Points(p) = query(
                &d,
                &HistoryConfig::default(),
                &t,
                &Query { agg, ..q.clone() },
                now,
            )
            .unwrap() else {
                panic!()
            };
            assert_eq!(p[1].values["temp"], expected, "{agg:?}");
        }
        let raw = Query {
            step: None,
            to: DAY0 + 3 * 60_000,
            ..q
        };
        assert_eq!(
            query(&d, &HistoryConfig::default(), &t, &raw, now).unwrap(),
            Series::Raw(samples[..3].to_vec())
        );
    }

    #[test]
    fn old_days_are_rolled_up_then_expire() {
        let (_dir, d) = setup();
        let t = ThingName::new("m").unwrap();
        let config = HistoryConfig {
            raw_retention: std::time::Duration::from_secs(2 * 86_400),
            ..HistoryConfig::default()
        };
        // Two samples in the first hour of DAY0, one in the second, ten days before "now".
        write(
            &d,
            &t,
            &[
                (DAY0 + 1, serde_json::json!({"kwh": 2})),
                (DAY0 + 2, serde_json::json!({"kwh": 4})),
                (DAY0 + HOUR_MS, serde_json::json!({"kwh": 10})),
            ],
        );
        let now = DAY0 + 10 * DAY_MS;
        assert_eq!(
            maintain(&d, &config, now).unwrap(),
            10,
            "every finished day since the oldest sample"
        );
        assert_eq!(maintain(&d, &config, now).unwrap(), 0, "once only");
        assert!(
            d.store()
                .transact(|tx| d.repos().history.raw(tx, &t, DAY0, DAY0 + DAY_MS, 10))
                .unwrap()
                .is_empty(),
            "raw expired"
        );
        let q = Query {
            from: DAY0,
            to: DAY0 + 2 * HOUR_MS,
            step: Some(HOUR_MS),
            agg: Agg::Avg,
            fields: None,
            limit: 100,
        };
        let Series::Points(points) = query(&d, &config, &t, &q, now).unwrap() else {
            panic!()
        };
        assert_eq!(
            points
                .iter()
                .map(|p| (p.ts, p.values["kwh"]))
                .collect::<Vec<_>>(),
            [(DAY0, 3.0), (DAY0 + HOUR_MS, 10.0)]
        );
        let two_hours = Query {
            step: Some(2 * HOUR_MS),
            agg: Agg::Sum,
            ..q.clone()
        };
        let Series::Points(points) = query(&d, &config, &t, &two_hours, now).unwrap() else {
            panic!()
        };
        assert_eq!(
            points[0].values["kwh"], 16.0,
            "hourly aggregates merge into wider buckets"
        );
        assert!(matches!(
            query(
                &d,
                &config,
                &t,
                &Query {
                    step: Some(60_000),
                    ..q.clone()
                },
                now
            ),
            Err(QueryError::Invalid(_))
        ));
        assert!(matches!(
            query(
                &d,
                &config,
                &t,
                &Query {
                    step: None,
                    ..q.clone()
                },
                now
            ),
            Err(QueryError::Invalid(_))
        ));
        let later = DAY0 + 100 * DAY_MS;
        let log = |at: u64| storage::RuleLogEntry {
            at,
            thing: "m".into(),
            rule: "r".into(),
            details: Default::default(),
        };
        d.store()
            .transact(|tx| {
                d.repos().rule_log.append(tx, LogKind::Alert, &log(DAY0))?;
                d.repos()
                    .rule_log
                    .append(tx, LogKind::Alert, &log(later - DAY_MS))
            })
            .unwrap();
        maintain(&d, &config, later).unwrap();
        let alerts = d
            .store()
            .transact(|tx| {
                d.repos()
                    .rule_log
                    .list(tx, LogKind::Alert, (0, later), None, 10)
            })
            .unwrap();
        assert_eq!(
            alerts.iter().map(|(_, e)| e.at).collect::<Vec<_>>(),
            [later - DAY_MS],
            "rule-log entries expire with the hourly aggregates"
        );
        let Series::Points(points) = query(&d, &config, &t, &q, later).unwrap() else {
            panic!()
        };
        assert!(
            points.is_empty(),
            "hourly aggregates expire after their retention"
        );
    }

    #[test]
    fn too_many_buckets_are_refused() {
        let (_dir, d) = setup();
        let t = ThingName::new("m").unwrap();
        let q = Query {
            from: DAY0,
            to: DAY0 + DAY_MS,
            step: Some(1),
            agg: Agg::Avg,
            fields: None,
            limit: 1000,
        };
        assert!(matches!(
            query(&d, &HistoryConfig::default(), &t, &q, DAY0),
            Err(QueryError::Invalid(_))
        ));
    }
}
