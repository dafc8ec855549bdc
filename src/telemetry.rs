//! Logging setup: everything goes to stderr, so stdout carries only a
//! command's output. Levels come from `RUST_LOG` (default `info`), the format
//! from `PLANSYNC_LOG_FORMAT`.
//!
//! One exception overrides `RUST_LOG`: yup-oauth2 logs the signed JWT
//! assertion and the token endpoint's answers (access tokens) at debug
//! level, so its target never logs below info, whatever `RUST_LOG` asks.

use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The log target of the crate whose debug output carries credentials.
const YUP_OAUTH2_TARGET: &str = "yup_oauth2";

/// False for a debug or trace event of yup-oauth2.
fn not_credential_noise(metadata: &tracing::Metadata<'_>) -> bool {
    let target = metadata.target();
    let is_yup = target == YUP_OAUTH2_TARGET
        || target
            .strip_prefix(YUP_OAUTH2_TARGET)
            .is_some_and(|rest| rest.starts_with("::"));
    !(is_yup && *metadata.level() > LevelFilter::INFO)
}

/// Installs the global subscriber. Calling it twice is harmless (tests).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(
            fmt.with_filter(filter)
                .with_filter(filter_fn(not_credential_noise)),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yup_oauth2_debug_is_dropped_and_its_info_kept() {
        use tracing::{callsite::Identifier, field::FieldSet, metadata::Kind, Level, Metadata};
        struct Cs;
        impl tracing::callsite::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let meta = |target: &'static str, level: Level| {
            Metadata::new(
                "event",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&CS)),
                Kind::EVENT,
            )
        };
        assert!(!not_credential_noise(&meta(
            "yup_oauth2::service_account",
            Level::DEBUG
        )));
        assert!(!not_credential_noise(&meta("yup_oauth2", Level::TRACE)));
        assert!(not_credential_noise(&meta(
            "yup_oauth2::authenticator",
            Level::INFO
        )));
        assert!(not_credential_noise(&meta("yup_oauth2x", Level::DEBUG)));
        assert!(not_credential_noise(&meta("plansync::sync", Level::DEBUG)));
    }
}
