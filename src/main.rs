//! The `clerk-users` binary: `serve` (the default), `migrate`, `openapi`.

use std::process::ExitCode;

use clerk_users::{app, db, settings::Settings, telemetry};

const USAGE: &str = "usage: clerk-users [serve | migrate | openapi]
  serve    run the service (the default)
  migrate  apply the schema in sql/ to DATABASE_URL and exit
  openapi  print the OpenAPI document and exit (needs no settings)";

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    match command.as_str() {
        "openapi" => {
            println!("{}", clerk_users::api::document());
            ExitCode::SUCCESS
        }
        "serve" | "migrate" => run(&command),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clerk-users: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
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

/// One line naming the variable, and EX_CONFIG.
fn config_error(e: clerk_users::settings::SettingsError) -> ExitCode {
    eprintln!("clerk-users: {e}");
    ExitCode::from(78)
}
