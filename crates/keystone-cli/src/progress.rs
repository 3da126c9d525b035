//! Progress bars on a terminal, nothing otherwise (or with `--quiet`).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-counting bar for `total` bytes.
pub fn bytes(total: u64, quiet: bool, what: &str) -> ProgressBar {
    bar(
        total,
        quiet,
        &format!("{what} {{bar:30}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, eta {{eta}})"),
    )
}

/// A counting bar for `total` items.
pub fn count(total: u64, quiet: bool, what: &str) -> ProgressBar {
    bar(
        total,
        quiet,
        &format!("{what} {{bar:30}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"),
    )
}

fn bar(total: u64, quiet: bool, template: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb
}

/// A spinner with a message, for work of unknown length.
pub fn spinner(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        pb.set_style(style);
    }
    pb
}
