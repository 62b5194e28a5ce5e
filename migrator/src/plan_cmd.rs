//! `migrator plan`: checks the plan against both databases (exit 5 naming the table/column when it
//! does not fit) and prints each table's source projection, i.e. exactly what `copy` reads.

use crate::cli::PlanCommandArgs;
use crate::db;
use crate::plan::{self, Plan};

pub async fn run(args: PlanCommandArgs) -> anyhow::Result<u8> {
    let plan = Plan::load(args.plan.plan.as_deref())?;
    let selected = plan.select(&args.tables.tables)?;
    let mut target = db::connect("target", &args.target.target_url).await?;
    let mut source = db::connect("source", &args.source.source_url).await?;
    let tables = plan::resolve(&mut source, &mut target, &selected).await?;
    for table in &tables {
        println!(
            "-- {} → {} (key {})",
            table.name(),
            table.plan.target,
            table.key().name
        );
        println!("{};", table.source_projection_sql());
    }
    println!("-- plan OK: {} table(s)", tables.len());
    Ok(0)
}
