//! Row counts of a copy and the per-table summary printed at its end.

use std::time::Duration;

/// Row counts of a table (or batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows_read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.rows_read += other.rows_read;
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

/// What one table's copy did.
#[derive(Debug, Clone)]
pub struct TableSummary {
    pub name: String,
    pub counts: Counts,
    /// Rows deleted by `--prune` (0 without it).
    pub deleted: u64,
    /// From the first claim of one of its ranges to the last range done, over every process.
    pub elapsed: Duration,
    /// Workers (and their processes) that finished its ranges: every process sharing the run.
    pub workers: usize,
    pub processes: usize,
}

/// The summary table on stdout; `dry_run` says "would insert/update".
pub fn print_summary(summaries: &[TableSummary], dry_run: bool) {
    print!("{}", render_summary(summaries, dry_run));
}

fn render_summary(summaries: &[TableSummary], dry_run: bool) -> String {
    let (ins, upd, del) = if dry_run {
        ("would insert", "would update", "would delete")
    } else {
        ("inserted", "updated", "deleted")
    };
    let mut out = format!(
        "{:<20} {:>12} {:>12} {:>12} {:>12} {:>10} {:>8} {:>10}\n",
        "table", ins, upd, "unchanged", del, "elapsed", "workers", "processes"
    );
    for s in summaries {
        out.push_str(&format!(
            "{:<20} {:>12} {:>12} {:>12} {:>12} {:>9.2}s {:>8} {:>10}\n",
            s.name,
            s.counts.inserted,
            s.counts.updated,
            s.counts.unchanged,
            s.deleted,
            s.elapsed.as_secs_f64(),
            s.workers,
            s.processes
        ));
    }
    if dry_run {
        out.push_str("dry run: nothing was written\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_kind_of_run() {
        let s = TableSummary {
            name: "users".into(),
            counts: Counts {
                rows_read: 3,
                inserted: 1,
                updated: 1,
                unchanged: 1,
            },
            deleted: 2,
            elapsed: Duration::from_millis(1500),
            workers: 3,
            processes: 2,
        };
        let dry = render_summary(std::slice::from_ref(&s), true);
        assert!(dry.contains("would insert") && dry.ends_with("dry run: nothing was written\n"));
        assert!(dry.contains("would delete"), "{dry}");
        let real = render_summary(&[s], false);
        assert!(!real.contains("would") && real.contains("1.50s"), "{real}");
        let figures: Vec<&str> = real.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(figures[1..5], ["1", "1", "1", "2"], "{real}");
        assert_eq!(figures[6..], ["3", "2"], "{real}");
    }
}
