//! `keystone profile show TYPE:VALUE [--explain]`: one person's 360° view.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context, bail};
use arrow::array::{Array, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use clap::{Args, Subcommand};
use keystone_core::event::EventRow;
use keystone_core::identifier::normalize_email;
use keystone_engine::Engine;
use keystone_engine::output::{OutputFormat, write_stream};
use keystone_engine::resolve::ResolveState;
use keystone_identity::extract::to_e164;
use keystone_identity::{Rules, extract_identifiers};

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Print the profile holding an identifier: identifiers, traits, counts, recent events.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The identifier, as TYPE:VALUE (user_id:u-42, email:jane@example.org, phone:+33…, anonymous_id:…).
    pub identifier: String,
    /// For each identifier, show the event that linked it, and every merge into this profile.
    #[arg(long)]
    pub explain: bool,
    /// How many recent events to list.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
}

/// `'text'` as an SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Split `TYPE:VALUE` and normalise the value as resolution does.
pub fn parse_identifier(arg: &str, rules: &Rules) -> anyhow::Result<(String, String)> {
    let Some((kind, value)) = arg.split_once(':') else {
        bail!("identifier {arg:?}: expected TYPE:VALUE, e.g. email:jane@example.org or user_id:42");
    };
    let kind = kind.trim().to_lowercase();
    let value = value.trim();
    if kind.is_empty() || value.is_empty() {
        bail!("identifier {arg:?}: both TYPE and VALUE are needed");
    }
    let value = match kind.as_str() {
        "email" => normalize_email(value)
            .with_context(|| format!("identifier {arg:?}: {value:?} is not an email address"))?,
        "phone" => to_e164(value, rules.default_region.as_deref()),
        _ => value.to_string(),
    };
    Ok((kind, value))
}

pub async fn run(settings: &Settings, args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let ProfileCommand::Show(args) = args.command;
    let lake = settings.existing_lake()?;
    let rules = ResolveState::load(&lake)
        .await?
        .map(|s| s.rules)
        .unwrap_or_else(|| settings.rules.clone());
    let (kind, value) = parse_identifier(&args.identifier, &rules)?;
    let engine = Engine::open(lake).await?;
    if engine
        .lake()
        .load(&keystone_lake::IDENTITIES)
        .await?
        .is_none()
    {
        bail!("no identities yet: run `keystone resolve` first");
    }
    let found = engine
        .collect(&format!(
            "SELECT profile_id FROM identities WHERE identifier_type = {} AND identifier = {}",
            lit(&kind),
            lit(&value)
        ))
        .await?;
    let Some(profile) = first_string(&found)? else {
        bail!(
            "no profile holds {kind}:{value} (it may never have been seen, been cut by a rule — see identity_audit — or not resolved yet)"
        );
    };
    let p = lit(&profile);

    outln!("Profile {profile}\n");
    let row = engine
        .collect(&format!("SELECT * FROM profiles WHERE profile_id = {p}"))
        .await?;
    print_vertical(&row)?;

    outln!("\nIdentifiers:");
    let ids_sql = format!(
        "SELECT identifier_type, identifier, first_seen, last_seen, linked_by FROM identities \
         WHERE profile_id = {p} ORDER BY first_seen, identifier_type, identifier"
    );
    print_query(&engine, &ids_sql).await?;

    outln!("\nRecent events:");
    print_query(
        &engine,
        &format!(
            "SELECT \"timestamp\", type, coalesce(event, name) AS event, source, message_id \
             FROM events_resolved WHERE profile_id = {p} ORDER BY \"timestamp\" DESC LIMIT {}",
            args.events
        ),
    )
    .await?;

    if args.explain {
        explain(&engine, &profile, &rules).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn explain(engine: &Engine, profile: &str, rules: &Rules) -> anyhow::Result<()> {
    outln!("\nWhy these identifiers are one person:");
    let ids = engine
        .collect(&format!(
            "SELECT identifier_type, identifier, linked_by, CAST(first_seen AS VARCHAR) AS first_seen_text FROM identities \
             WHERE profile_id = {} ORDER BY first_seen, identifier_type, identifier",
            lit(profile)
        ))
        .await?;
    let ids = strings(&ids, 4)?;
    // Profiles absorbed into this one, transitively, with the merging events.
    let mut absorbed: Vec<Vec<String>> = Vec::new();
    let mut frontier = vec![profile.to_string()];
    let mut seen: BTreeSet<String> = BTreeSet::from([profile.to_string()]);
    while !frontier.is_empty() && engine.context().table_exist("profile_merges")? {
        let list = frontier
            .iter()
            .map(|f| lit(f))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = engine
            .collect(&format!(
                "SELECT from_profile_id, into_profile_id, CAST(merged_at AS VARCHAR) AS merged_text, reason, message_id \
                 FROM profile_merges WHERE into_profile_id IN ({list}) ORDER BY merged_at"
            ))
            .await?;
        frontier.clear();
        for r in strings(&rows, 5)? {
            if seen.insert(r[0].clone()) {
                frontier.push(r[0].clone());
                absorbed.push(r);
            }
        }
    }
    let mut mids: BTreeSet<String> = ids.iter().map(|r| r[2].clone()).collect();
    mids.extend(absorbed.iter().map(|r| r[4].clone()));
    let carried = event_identifiers(engine, &mids, rules).await?;
    let describe = |mid: &str| {
        carried
            .iter()
            .find(|(m, ..)| m == mid)
            .map(|(_, what, ids)| format!("{what} carrying {}", ids.join(", ")))
            .unwrap_or_else(|| "an event no longer in the lake".to_string())
    };
    for r in &ids {
        outln!("  {}:{}", r[0], r[1]);
        outln!("      linked {} by {} ({})", r[3], r[2], describe(&r[2]));
    }
    if absorbed.is_empty() {
        outln!("  No other profile was merged into this one.");
    } else {
        outln!("  Merges into this profile (oldest first):");
        for r in &absorbed {
            outln!(
                "    {}: profile {} joined {} ({}), event {} ({})",
                r[2],
                r[0],
                r[1],
                r[3],
                r[4],
                describe(&r[4])
            );
        }
    }
    Ok(())
}

/// For each message id: a short description and the identifiers it carried.
async fn event_identifiers(
    engine: &Engine,
    mids: &BTreeSet<String>,
    rules: &Rules,
) -> anyhow::Result<Vec<(String, String, Vec<String>)>> {
    if mids.is_empty() {
        return Ok(Vec::new());
    }
    let list = mids.iter().map(|m| lit(m)).collect::<Vec<_>>().join(", ");
    let rows = engine
        .collect(&format!(
            "SELECT message_id, type, coalesce(event, name, ''), CAST(\"timestamp\" AS VARCHAR) AS ts_text, \
             user_id, anonymous_id, previous_id, email, phone, device_id, context, properties, traits \
             FROM events WHERE message_id IN ({list})"
        ))
        .await?;
    let mut out = Vec::new();
    for r in strings_opt(&rows, 13)? {
        let get = |i: usize| r[i].clone();
        let row = EventRow {
            user_id: get(4),
            anonymous_id: get(5),
            previous_id: get(6),
            email: get(7),
            phone: get(8),
            device_id: get(9),
            context: get(10),
            properties: get(11),
            traits: get(12),
            ..EventRow::default()
        };
        let ids: Vec<String> = extract_identifiers(&row, rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        let what = format!(
            "{} {} at {}",
            get(1).unwrap_or_default(),
            get(2).unwrap_or_default(),
            get(3).unwrap_or_default()
        );
        out.push((get(0).unwrap_or_default(), what.replace("  ", " "), ids));
    }
    Ok(out)
}

async fn print_query(engine: &Engine, sql: &str) -> anyhow::Result<()> {
    let stream = engine.stream(sql).await?;
    write_stream(stream, OutputFormat::Table, &mut std::io::stdout()).await?;
    Ok(())
}

fn print_vertical(batches: &[RecordBatch]) -> anyhow::Result<()> {
    let opts = FormatOptions::default().with_null("");
    for batch in batches {
        let schema = batch.schema();
        let width = schema
            .fields()
            .iter()
            .map(|f| f.name().len())
            .max()
            .unwrap_or(0);
        for row in 0..batch.num_rows() {
            for (f, col) in schema.fields().iter().zip(batch.columns()) {
                let fmt = ArrayFormatter::try_new(col.as_ref(), &opts)?;
                outln!("  {:width$}  {}", f.name(), fmt.value(row));
            }
        }
    }
    Ok(())
}

fn first_string(batches: &[RecordBatch]) -> anyhow::Result<Option<String>> {
    Ok(strings(batches, 1)?
        .into_iter()
        .next()
        .map(|mut r| r.remove(0)))
}

fn strings(batches: &[RecordBatch], n: usize) -> anyhow::Result<Vec<Vec<String>>> {
    Ok(strings_opt(batches, n)?
        .into_iter()
        .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
        .collect())
}

fn strings_opt(batches: &[RecordBatch], n: usize) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let opts = FormatOptions::default();
    let mut out = Vec::new();
    for b in batches {
        let fmts = (0..n)
            .map(|i| ArrayFormatter::try_new(b.column(i).as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            out.push(
                (0..n)
                    .map(|i| (!b.column(i).is_null(row)).then(|| fmts[i].value(row).to_string()))
                    .collect(),
            );
        }
    }
    Ok(out)
}
