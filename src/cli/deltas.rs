//! `deltas --user ID --after N`: the catch-up data of `run`'s
//! `GET /users/{id}/deltas?after=N`, as JSON on stdout; exit 1 with the reason
//! on stderr when the deltas are no longer kept.

use std::process::ExitCode;

use anyhow::Context;
use plansync::config::{DatabaseSettings, Env};
use plansync::deltas::catch_up;
use plansync::ids::UserId;
use plansync::store;

#[derive(Debug, clap::Args)]
pub struct DeltasArgs {
    #[arg(long)]
    user: UserId,
    /// The last version the client has; deltas with a greater one are printed.
    #[arg(long, value_name = "VERSION")]
    after: i64,
}

pub async fn run(env: &Env, args: DeltasArgs) -> anyhow::Result<ExitCode> {
    let settings = DatabaseSettings::from_env(env)?;
    let pool = store::connect(&settings, 1)
        .await
        .with_context(|| format!("connecting to {}", settings.url.redacted()))?;
    // Gone, unknown user and a bad `after` all exit 1 with their message.
    let answer = catch_up::catch_up(&pool, args.user, args.after).await?;
    println!("{}", answer.to_json());
    Ok(ExitCode::SUCCESS)
}
