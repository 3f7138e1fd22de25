//! The `clerk-users` binary: `serve` (the default), `migrate`, `sync`, `openapi`.

use std::process::ExitCode;

use clerk_users::{
    app,
    clerk::ClerkApi,
    db,
    metrics::Metrics,
    net,
    settings::Settings,
    sync::{self, Progress},
    telemetry,
};

const USAGE: &str = "usage: clerk-users [serve | migrate | sync [--dry-run] [--prune] | openapi]
  serve    run the service (the default)
  migrate  apply the schema in sql/ to DATABASE_URL and exit
  sync     copy every Clerk user into the database and exit (migrates first; needs
           DATABASE_URL and CLERK_SECRET_KEY). The last line of stdout is a JSON summary.
             --dry-run  store nothing, report what would change
             --prune    also delete the users Clerk no longer has (after a complete walk)
  openapi  print the OpenAPI document and exit (needs no settings)";

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    match command.as_str() {
        "openapi" => {
            println!("{}", clerk_users::api::document());
            ExitCode::SUCCESS
        }
        "serve" | "migrate" => run(&command),
        "sync" => {
            let mut options = sync::Options::default();
            for flag in std::env::args().skip(2) {
                match flag.as_str() {
                    "--dry-run" => options.dry_run = true,
                    "--prune" => options.prune = true,
                    other => {
                        eprintln!("unknown option {other:?} for sync\n{USAGE}");
                        return ExitCode::from(2);
                    }
                }
            }
            run_sync(options)
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(command: &str) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    // Declared first so it is dropped last: it writes out the log lines still queued.
    let (log_writer, _flush_logs) = match telemetry::batched_stdout() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("clerk-users: cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if command == "migrate" {
        let settings = match Settings::load_database_only() {
            Ok(s) => s,
            Err(e) => return config_error(e),
        };
        telemetry::init(settings.log_format, &settings.rust_log, log_writer);
        runtime.block_on(async move {
            let pool = db::create_pool(&settings.database);
            let applied = db::migrate(&settings.database, &pool).await?;
            tracing::info!(applied, "migrations applied");
            anyhow::Ok(())
        })
    } else {
        let settings = match Settings::load() {
            Ok(s) => s,
            Err(e) => return config_error(e),
        };
        telemetry::init(settings.log_format, &settings.rust_log, log_writer);
        runtime.block_on(async move {
            let app = app::Application::build(settings).await?;
            app.run_until_stopped(app::shutdown_signal()).await?;
            anyhow::Ok(())
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "clerk-users stopped with an error");
            eprintln!("clerk-users: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `clerk-users sync`: migrate, walk, print the summary last. Exit 1 when the walk stopped early,
/// with the reason on stderr; the summary then counts what was stored until then.
fn run_sync(options: sync::Options) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let settings = match Settings::load_for_sync() {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    let (log_writer, flush_logs) = match telemetry::batched_stdout() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("clerk-users: cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(settings.log_format, &settings.rust_log, log_writer);
    let progress = Progress::for_stderr();
    let outcome = runtime.block_on(async {
        let pool = db::create_pool(&settings.database);
        if let Err(e) = db::migrate(&settings.database, &pool).await {
            return Err((sync::Summary::default(), format!("migrations: {e}")));
        }
        pool.close();
        let clerk = ClerkApi::new(&settings.clerk, net::http_client(), Metrics::default());
        sync::run(
            &db::session_database(&settings.database),
            &clerk,
            options,
            &progress,
        )
        .await
        .map_err(|(summary, e)| (summary, e.to_string()))
    });
    let (summary, failure) = match outcome {
        Ok(summary) => (summary, None),
        Err((summary, reason)) => {
            tracing::error!(%reason, "sync stopped");
            (summary, Some(reason))
        }
    };
    // Every log line first: the summary is the last line of stdout.
    drop(flush_logs);
    println!(
        "{}",
        serde_json::to_string(&summary).unwrap_or_else(|_| "{}".into())
    );
    match failure {
        None => ExitCode::SUCCESS,
        Some(reason) => {
            eprintln!("clerk-users: sync stopped: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime every command but `openapi` runs on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("clerk-users: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// One line naming the variable, and EX_CONFIG.
fn config_error(e: clerk_users::settings::SettingsError) -> ExitCode {
    eprintln!("clerk-users: {e}");
    ExitCode::from(78)
}
