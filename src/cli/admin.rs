//! `migrate`, `connect`, `disconnect`, `status`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{bail, Context};
use plansync::config::{self, DatabaseSettings, Env};
use plansync::ids::{CalendarId, ConnectionId, RefreshToken, Subject, UserId};
use plansync::status::StatusReport;
use plansync::store::{
    self,
    connections::{ConnectionAuth, NewConnection},
};

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The host application's user id.
    #[arg(long)]
    user: UserId,
    /// The Google calendar id (`primary` or an address-like id).
    #[arg(long, value_parser = non_empty_calendar)]
    calendar: CalendarId,
    /// Make this the calendar new appointments are pushed to.
    #[arg(long)]
    push_target: bool,
    /// The region whose workers sync it (default: PLANSYNC_REGION).
    #[arg(long, value_parser = non_empty)]
    region: Option<String>,
    /// A delegated connection: act as this Workspace member (e-mail) through
    /// the service account of GOOGLE_SERVICE_ACCOUNT_KEY. stdin is not read.
    #[arg(long, value_name = "EMAIL", value_parser = member_address)]
    impersonate: Option<Subject>,
}

/// A Workspace member's address: `local@domain`, no spaces. Google decides
/// whether the member exists; this only catches what cannot be one.
fn member_address(s: &str) -> Result<Subject, String> {
    let s = non_empty(s)?;
    match s.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace) =>
        {
            Ok(Subject::new(s))
        }
        _ => Err(format!("{s:?} is not an e-mail address")),
    }
}

#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    #[arg(long)]
    connection: ConnectionId,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this user's connections and jobs.
    #[arg(long)]
    user: Option<UserId>,
    /// Print one JSON object (DESIGN.md, `status --json`).
    #[arg(long)]
    json: bool,
}

fn non_empty(s: &str) -> Result<String, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(trimmed.to_owned())
}

pub(crate) fn non_empty_calendar(s: &str) -> Result<CalendarId, String> {
    non_empty(s).map(CalendarId)
}

async fn pool(env: &Env) -> anyhow::Result<sqlx::PgPool> {
    let settings = DatabaseSettings::from_env(env)?;
    store::connect(&settings, 2)
        .await
        .with_context(|| format!("connecting to {}", settings.url.redacted()))
}

pub async fn migrate(env: &Env) -> anyhow::Result<ExitCode> {
    let settings = DatabaseSettings::from_env(env)?;
    let target = settings.url.redacted();
    if store::migrate::create_database_if_missing(&settings)
        .await
        .with_context(|| format!("creating the database of {target}"))?
    {
        tracing::info!(database = %target, "created database");
    }
    store::migrate::run(&settings)
        .await
        .with_context(|| format!("migrating {target}"))?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

pub async fn connect(env: &Env, args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let default_region = config::region(env)?;
    let auth = match &args.impersonate {
        // Nothing secret to store, so neither stdin nor the token key.
        Some(subject) => ConnectionAuth::Delegated {
            subject: subject.clone(),
        },
        None => {
            // Validate settings before reading stdin, so a misconfigured
            // command does not swallow the token first.
            let cipher = config::token_cipher(env)?;
            let token = read_refresh_token()?;
            ConnectionAuth::RefreshToken {
                encrypted: cipher.encrypt(args.user, &args.calendar, &token),
            }
        }
    };
    let pool = pool(env).await?;
    let outcome = store::connections::connect(
        &pool,
        NewConnection {
            user: args.user,
            calendar: &args.calendar,
            region: args.region.as_deref(),
            default_region: &default_region,
            push_target: args.push_target,
            auth,
        },
    )
    .await?;
    tracing::info!(
        connection = %outcome.id,
        user = %args.user,
        calendar = %args.calendar,
        delegated_as = args.impersonate.as_ref().map(tracing::field::display),
        created = outcome.created,
        "connection registered"
    );
    println!("{}", outcome.id);
    Ok(ExitCode::SUCCESS)
}

/// The first line of stdin, trimmed. The token never travels in argv, where
/// any user of the machine could read it from the process list.
fn read_refresh_token() -> anyhow::Result<RefreshToken> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the refresh token from stdin")?;
    let token = line.trim();
    if token.is_empty() {
        bail!("no refresh token on stdin: pipe it in as the first line");
    }
    Ok(RefreshToken::new(token))
}

pub async fn disconnect(env: &Env, args: DisconnectArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(env).await?;
    store::connections::disconnect(&pool, args.connection).await?;
    println!("connection {} disconnected", args.connection);
    Ok(ExitCode::SUCCESS)
}

pub async fn status(env: &Env, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(env).await?;
    let report = StatusReport::load(&pool, args.user).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
