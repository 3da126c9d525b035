//! The floor of a Flight SQL stream: the same query scanned in process, no
//! encoding, no network. Prints one JSON line: rows, Arrow bytes, seconds.
//!
//! ```text
//! cargo bench -p keystone-flight --bench scan_floor -- LAKE "SELECT * FROM events"
//! ```
//!
//! Arrow bytes are the sliced buffer sizes of every column of every batch
//! (what pyarrow's `nbytes` counts on the client side).

use std::time::Instant;

use futures::StreamExt;
use keystone_engine::Engine;
use keystone_lake::Lake;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [lake, sql] = args.as_slice() else {
        return Err("usage: scan_floor LAKE SQL".into());
    };
    let engine = Engine::open(Lake::open(lake)?).await?;
    let ctx = engine.served_context(false);
    let started = Instant::now();
    let mut stream = ctx.sql(sql).await?.execute_stream().await?;
    let (mut rows, mut bytes) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        bytes += batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum::<usize>();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"rows\": {rows}, \"bytes\": {bytes}, \"seconds\": {seconds:.3}}}");
    Ok(())
}
