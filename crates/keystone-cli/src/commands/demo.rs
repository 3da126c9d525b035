//! `keystone demo`: sample data → lake → profiles → summary, on whatever lake is configured.

use std::process::ExitCode;

use clap::Args;
use keystone_engine::Engine;
use keystone_engine::output::OutputFormat;
use keystone_gen::GenConfig;
use keystone_ingest::IngestOptions;

use crate::commands::{gen_cmd, ingest, resolve, sql};
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// People to simulate (≈ 10 events each).
    #[arg(long, default_value_t = 2_000)]
    pub profiles: u64,
    /// Random seed of the sample data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

const SUMMARY: &[(&str, &str)] = &[
    (
        "Events per type",
        "SELECT type, count(*) AS events FROM events GROUP BY type ORDER BY events DESC",
    ),
    (
        "Events per source",
        "SELECT source, count(*) AS events, count(DISTINCT profile_id) AS profiles FROM events_resolved GROUP BY source ORDER BY events DESC",
    ),
    (
        "Top profiles by revenue (web, app and store stitched together)",
        "SELECT user_id, email, event_count AS events, order_count AS orders, round(revenue, 2) AS revenue, favorite_category, rfm_recency AS r, rfm_frequency AS f, rfm_monetary AS m FROM profiles ORDER BY revenue DESC LIMIT 5",
    ),
    (
        "Last 7 days",
        "SELECT event_date, count(*) AS events, count(*) FILTER (WHERE event = 'Order Completed') AS orders, round(sum(revenue), 2) AS revenue FROM events WHERE event_date > (SELECT max(event_date) FROM events) - INTERVAL '7' DAY GROUP BY event_date ORDER BY event_date",
    ),
];

const NEXT: &[&str] = &[
    "keystone sql \"SELECT rfm_recency, count(*) AS buyers, round(avg(revenue), 2) AS avg_revenue FROM profiles WHERE order_count > 0 GROUP BY 1 ORDER BY 1\"",
    "keystone sql \"SELECT category, count(*) AS orders, round(sum(revenue), 2) AS revenue FROM events WHERE event = 'Order Completed' GROUP BY category ORDER BY revenue DESC\"",
    "keystone sql \"SELECT json_get_str(properties, 'sku') AS sku, count(*) AS views FROM events WHERE event = 'Product Viewed' GROUP BY sku ORDER BY views DESC LIMIT 10\"",
    "keystone sql \"SELECT utm_source, utm_campaign, count(*) FROM events WHERE utm_source IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC\"",
    "keystone sql \"SELECT email, count(*) AS store_orders FROM events WHERE source = 'store_purchases' GROUP BY email ORDER BY store_orders DESC LIMIT 10\"",
    "keystone sql        # a REPL with history; \\d lists the tables",
];

pub async fn run(settings: &Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let lake = settings.lake()?;
    let dir = tempfile::tempdir()?;
    let mut cfg = GenConfig::new(args.profiles);
    cfg.seed = args.seed;
    cfg.end = chrono::Utc::now().date_naive();
    // --quiet: only the summary of the lake (the tables of step 4).
    let say = |line: String| {
        if !settings.quiet {
            outln!("{line}");
        }
    };
    say(format!(
        "1/4 generating sample data: {} people over {} days up to {}",
        cfg.profiles, cfg.days, cfg.end
    ));
    let generated = gen_cmd::run_config(&cfg, dir.path(), settings.quiet)?;
    say(format!(
        "    {} web/app events (Segment spec) and {} store purchases (CSV keyed by email)",
        generated.events, generated.store_purchases
    ));

    say(format!("2/4 ingesting into the lake at {}", lake.root()));
    let files = vec![
        dir.path().join(keystone_gen::EVENTS_FILE),
        dir.path().join(keystone_gen::STORE_FILE),
    ];
    let opts = IngestOptions {
        batch_rows: settings.batch_rows,
        ..IngestOptions::default()
    };
    let metrics = ingest::ingest_with_progress(&lake, &files, &opts, settings.quiet).await?;
    if !settings.quiet {
        ingest::print_summary(&metrics);
    }

    say("3/4 resolving identities into profiles".into());
    let report = resolve::resolve_with_progress(&lake, settings).await?;
    if !settings.quiet {
        resolve::print_summary(&report);
    }

    say("4/4 summary of the lake".into());
    let engine = Engine::open(lake).await?;
    for (title, query) in SUMMARY {
        outln!("\n{title}:");
        sql::run_statements(&engine, query, OutputFormat::Table).await?;
    }
    if settings.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    // The commands to try next run against this lake, and show a person
    // the sample holds: the best customer.
    let lake_arg = if settings.lake_location == crate::config::DEFAULT_LAKE {
        String::new()
    } else {
        format!(" --lake {}", settings.lake_location)
    };
    let best = engine
        .collect("SELECT user_id FROM profiles WHERE user_id IS NOT NULL ORDER BY revenue DESC, user_id LIMIT 1")
        .await?;
    let best = best
        .first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).ok())
        .map(|c| {
            arrow::array::AsArray::as_string::<i32>(&c)
                .value(0)
                .to_string()
        });
    outln!("\nExplore next:");
    if let Some(user) = best {
        outln!("  keystone{lake_arg} profile show user_id:{user} --explain");
    }
    for q in NEXT {
        outln!(
            "  {}",
            q.replacen("keystone", &format!("keystone{lake_arg}"), 1)
        );
    }
    Ok(ExitCode::SUCCESS)
}
