//! `keystone maintain`: retention, then compaction, checkpoints and vacuum.
//!
//! Retention (`[retention]` in keystone.toml), by whole UTC days of
//! `event_date`:
//! - `anonymous_events_days` (default 395, about 13 months — the CNIL's
//!   guideline for audience-measurement cookies): events whose profile holds
//!   no user id, e-mail or phone (a visitor never identified). Events not yet
//!   resolved are kept until a `resolve` has seen them.
//! - `events_days` (default 0: kept): every event.
//! - `quarantine_days` (default 30): rejected input rows, by day of receipt.
//!
//! Then every table is compacted to `target_file_mb` files, checkpointed, and
//! files unused for `vacuum_retention_hours` are deleted (`[maintain]`).

use std::time::{Duration, Instant};

use keystone_lake::{EVENTS, QUARANTINE, TABLES};
use serde::{Deserialize, Serialize};

use crate::{Engine, Result};

/// `[retention]` of keystone.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub anonymous_events_days: u32,
    pub events_days: u32,
    pub quarantine_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            anonymous_events_days: 395,
            events_days: 0,
            quarantine_days: 30,
        }
    }
}

/// `[maintain]` of keystone.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaintainConfig {
    /// Size compaction aims at.
    pub target_file_mb: u64,
    /// Files unused for this long are deleted (readers of older versions
    /// need them until then).
    pub vacuum_retention_hours: u64,
    /// How often `keystone serve` runs maintenance (0: never).
    pub interval_minutes: u64,
}

impl Default for MaintainConfig {
    fn default() -> Self {
        Self {
            target_file_mb: 128,
            vacuum_retention_hours: 168,
            interval_minutes: 60,
        }
    }
}

/// What one table's maintenance did.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub rows_expired: u64,
    pub files_before: u64,
    pub files_after: u64,
    pub files_vacuumed: u64,
    pub seconds: f64,
}

/// What `maintain` did.
#[derive(Debug, Clone, Serialize)]
pub struct MaintainReport {
    pub tables: Vec<TableReport>,
    pub seconds: f64,
}

fn cutoff(today: chrono::NaiveDate, days: u32) -> String {
    (today - chrono::Days::new(u64::from(days)))
        .format("%Y-%m-%d")
        .to_string()
}

impl Engine {
    /// Apply retention as of `today`, then compact, checkpoint and vacuum
    /// every table; `progress` is told each table as it is done.
    pub async fn maintain(
        &self,
        retention: &RetentionConfig,
        config: &MaintainConfig,
        today: chrono::NaiveDate,
        mut progress: impl FnMut(&TableReport),
    ) -> Result<MaintainReport> {
        let started = Instant::now();
        let mut expired = std::collections::HashMap::<&str, u64>::new();
        let lake = self.lake();
        if lake.load(&EVENTS).await?.is_some() {
            if retention.events_days > 0 {
                let day = cutoff(today, retention.events_days);
                *expired.entry(EVENTS.name).or_default() += lake
                    .delete_where(&EVENTS, &format!("event_date < '{day}'"))
                    .await?;
            }
            let resolved = lake.load(&keystone_lake::PROFILES).await?.is_some();
            if retention.anonymous_events_days > 0 && resolved {
                let day = cutoff(today, retention.anonymous_events_days);
                let keys = self
                    .sql(&format!(
                        "SELECT DISTINCT e.message_id, e.event_date FROM events_resolved e \
                         JOIN profiles p ON p.profile_id = e.profile_id \
                         WHERE e.event_date < DATE '{day}' AND p.user_id IS NULL \
                         AND p.email IS NULL AND p.phone IS NULL"
                    ))
                    .await?;
                *expired.entry(EVENTS.name).or_default() += lake
                    .delete_matching(
                        &EVENTS,
                        keys,
                        &format!(
                            "t.event_date < '{day}' AND t.event_date = s.event_date AND t.message_id = s.message_id"
                        ),
                    )
                    .await?;
            }
        }
        if retention.quarantine_days > 0 && lake.load(&QUARANTINE).await?.is_some() {
            let day = cutoff(today, retention.quarantine_days);
            *expired.entry(QUARANTINE.name).or_default() += lake
                .delete_where(&QUARANTINE, &format!("event_date < '{day}'"))
                .await?;
        }

        let target = config.target_file_mb.max(1) * 1024 * 1024;
        let keep =
            chrono::Duration::from_std(Duration::from_secs(config.vacuum_retention_hours * 3600))
                .unwrap_or(chrono::Duration::days(7));
        let mut tables = Vec::new();
        for spec in TABLES {
            let t = Instant::now();
            let Some(upkeep) = lake.upkeep(spec, target, keep).await? else {
                continue;
            };
            let report = TableReport {
                table: spec.name.to_string(),
                rows_expired: expired.get(spec.name).copied().unwrap_or(0),
                files_before: upkeep.files_before,
                files_after: upkeep.files_after,
                files_vacuumed: upkeep.files_vacuumed,
                seconds: t.elapsed().as_secs_f64(),
            };
            progress(&report);
            tables.push(report);
        }
        Ok(MaintainReport {
            tables,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
