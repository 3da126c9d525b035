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
        "SELECT source, count(*) AS events, count(DISTINCT coalesce(user_id, anonymous_id, email)) AS people FROM events GROUP BY source ORDER BY events DESC",
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
    "keystone profile show user_id:u_000001 --explain",
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
    println!(
        "1/4 generating sample data: {} people over {} days up to {}",
        cfg.profiles, cfg.days, cfg.end
    );
    let generated = gen_cmd::run_config(&cfg, dir.path(), settings.quiet)?;
    println!(
        "    {} web/app events (Segment spec) and {} store purchases (CSV keyed by email)",
        generated.events, generated.store_purchases
    );

    println!("2/4 ingesting into the lake at {}", lake.root());
    let files = vec![
        dir.path().join(keystone_gen::EVENTS_FILE),
        dir.path().join(keystone_gen::STORE_FILE),
    ];
    let opts = IngestOptions {
        batch_rows: settings.batch_rows,
        ..IngestOptions::default()
    };
    let metrics = ingest::ingest_with_progress(&lake, &files, &opts, settings.quiet).await?;
    ingest::print_summary(&metrics);

    println!("3/4 resolving identities into profiles");
    let report = resolve::resolve_with_progress(&lake, settings).await?;
    resolve::print_summary(&report);

    println!("4/4 summary of the lake");
    let engine = Engine::open(lake).await?;
    for (title, query) in SUMMARY {
        println!("\n{title}:");
        sql::run_statements(&engine, query, OutputFormat::Table).await?;
    }
    println!("\nExplore next:");
    for q in NEXT {
        println!("  {q}");
    }
    Ok(ExitCode::SUCCESS)
}
