//! `clerk-users sync` (README, "Sync"): every Clerk user copied into the database, for a first
//! deployment in front of an existing Clerk instance and to catch up after missed webhooks.
//!
//! The walk follows Clerk's cursor: pages of [`PAGE_LIMIT`] in ascending `created_at`, each
//! after the last id of the one before, until a page holds fewer. Pages are streamed: one is
//! fetched while the one before is stored, so memory stays flat however many users Clerk has.
//! Each page is stored in one transaction by one statement (`db::users::store_page`), by the
//! webhooks' rules (newer wins by Clerk's `updated_at`, a remembered deletion wins over older
//! data, `id` and `metadata` are never touched), and every replica's cache is told of each
//! changed user in that transaction. A page that cannot be fetched stops the walk; what was
//! stored stays, and running it again is safe. `--prune` deletes the users Clerk did not list,
//! only after a complete walk; `--dry-run` runs the same statements and rolls them back.

use std::{io::IsTerminal, time::Instant};

use serde::Serialize;

use crate::{
    clerk::{ClerkApi, ClerkError, ClerkUser, PAGE_LIMIT},
    db::{self, Database, DbError, query::Client},
};

/// The flags of `clerk-users sync`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Store nothing; report what would change.
    pub dry_run: bool,
    /// After a complete walk, delete the local users Clerk no longer lists.
    pub prune: bool,
}

/// The last line of the command's stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Users Clerk listed.
    pub listed: u64,
    pub created: u64,
    pub updated: u64,
    /// Listed but left as stored: the same, older than the stored version, or deleted since.
    pub unchanged: u64,
    /// Deleted by `--prune`.
    pub deleted: u64,
    /// Whole seconds the run took.
    pub seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("page {page} of Clerk's user list could not be fetched: {source}")]
    Clerk {
        page: u64,
        #[source]
        source: ClerkError,
    },
    #[error("page {page} could not be stored: {source}")]
    Store {
        page: u64,
        #[source]
        source: DbError,
    },
    #[error("the database: {0}")]
    Db(#[from] DbError),
}

/// Where progress goes: a bar on a terminal, a log line per page otherwise.
pub enum Progress {
    Bar(indicatif::ProgressBar),
    Log,
}

impl Progress {
    /// A bar on stderr when it is a terminal (stdout keeps the log and the summary), else log
    /// lines.
    pub fn for_stderr() -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Log;
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} users  {rate}  {elapsed} elapsed, about {eta} left  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} users/s", state.per_sec());
                },
            ),
        );
        Progress::Bar(bar)
    }

    fn total(&self, total: Option<u64>) {
        match self {
            Progress::Bar(bar) => match total {
                Some(n) => bar.set_length(n),
                None => bar.unset_length(),
            },
            Progress::Log => tracing::info!(total, "sync: walking Clerk's user list"),
        }
    }

    fn page(&self, page: u64, so_far: &Summary, stored: usize) {
        match self {
            Progress::Bar(bar) => {
                // Clerk's count may lag the list: grow the bar rather than overflow it.
                if bar.length().is_some_and(|len| so_far.listed > len) {
                    bar.set_length(so_far.listed);
                }
                bar.set_position(so_far.listed);
                bar.set_message(format!(
                    "{} new, {} updated",
                    so_far.created, so_far.updated
                ));
            }
            Progress::Log => tracing::info!(
                page,
                users = stored,
                listed = so_far.listed,
                created = so_far.created,
                updated = so_far.updated,
                unchanged = so_far.unchanged,
                "sync: page stored"
            ),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
            // The bar's line ends here, so the summary on stdout starts a line of its own.
            eprintln!();
        }
    }
}

/// Walk Clerk's user list and store it. `Err` carries the summary of what was stored until the
/// walk stopped.
pub async fn run(
    db: &Database,
    clerk: &ClerkApi,
    options: Options,
    progress: &Progress,
) -> Result<Summary, (Summary, SyncError)> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let result = walk(db, clerk, options, progress, &mut summary).await;
    progress.finish();
    summary.seconds = started.elapsed().as_secs_f64().round() as u64;
    match result {
        Ok(()) => Ok(summary),
        Err(e) => Err((summary, e)),
    }
}

async fn walk(
    db: &Database,
    clerk: &ClerkApi,
    options: Options,
    progress: &Progress,
    summary: &mut Summary,
) -> Result<(), SyncError> {
    // One connection for the whole run: the ids listed live in its temporary table.
    let mut client = db.client().await?;
    let walk_started = db::sync::now(&client).await?;
    if options.prune {
        db::sync::create_listed(&client).await?;
    }
    let total = match clerk.count_users().await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "sync: Clerk's user count is unavailable; walking without a total");
            None
        }
    };
    progress.total(total);

    // The next page is fetched while this one is stored: at most three pages in memory.
    let (pages_tx, mut pages) = tokio::sync::mpsc::channel::<Result<Vec<ClerkUser>, SyncError>>(1);
    let fetcher = {
        let clerk = clerk.clone();
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            for page in 1u64.. {
                let fetched = clerk
                    .list_users(after.as_deref())
                    .await
                    .map_err(|source| SyncError::Clerk { page, source });
                let last = match &fetched {
                    Ok(users) if users.len() >= PAGE_LIMIT => users.last().map(|u| u.id.clone()),
                    _ => None,
                };
                if pages_tx.send(fetched).await.is_err() {
                    return;
                }
                match last {
                    Some(id) => after = Some(id),
                    None => return,
                }
            }
        })
    };
    let _stop_fetching = AbortOnDrop(fetcher);

    let mut page = 0u64;
    while let Some(fetched) = pages.recv().await {
        page += 1;
        let mut users = fetched?;
        // The cursor never repeats a user, but one statement cannot write a row twice.
        let mut seen = std::collections::HashSet::with_capacity(users.len());
        users.retain(|u| seen.insert(u.id.clone()));
        let outcome = store(&mut client, &users, options)
            .await
            .map_err(|source| SyncError::Store { page, source })?;
        summary.listed += users.len() as u64;
        summary.created += outcome.created;
        summary.updated += outcome.updated;
        summary.unchanged += outcome.unchanged;
        progress.page(page, summary, users.len());
    }

    if options.prune {
        summary.deleted = prune(&mut client, walk_started, options.dry_run).await?;
    }
    tracing::info!(
        listed = summary.listed,
        created = summary.created,
        updated = summary.updated,
        unchanged = summary.unchanged,
        deleted = summary.deleted,
        dry_run = options.dry_run,
        "sync: done"
    );
    Ok(())
}

/// One page in one transaction: the statement that stores it, the notifications of the users it
/// changed (delivered at commit), and with `--prune` the ids noted as listed.
async fn store(
    client: &mut Client,
    users: &[ClerkUser],
    options: Options,
) -> Result<db::users::PageOutcome, DbError> {
    let tx = client.transaction().await?;
    let (outcome, changed) = db::users::store_page(&tx, users).await?;
    db::notify::users_changed(&tx, &changed).await?;
    if options.dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    if options.prune {
        // Outside the page's transaction, so that a dry run notes them too.
        let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        db::sync::add_listed(&*client, &ids).await?;
    }
    Ok(outcome)
}

/// Delete the users the complete walk did not list, remembering the deletions, telling the
/// caches; rolled back in a dry run. Returns how many.
async fn prune(
    client: &mut Client,
    walk_started: time::OffsetDateTime,
    dry_run: bool,
) -> Result<u64, DbError> {
    // Deleting many users may take longer than one request's statement may.
    let tx = client
        .transaction()
        .await?
        .statement_timeout(std::time::Duration::from_secs(600));
    let gone = db::sync::prune_unlisted(&tx, walk_started).await?;
    db::notify::users_changed(&tx, &gone).await?;
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    if !gone.is_empty() {
        tracing::info!(
            deleted = gone.len(),
            dry_run,
            "sync: users Clerk no longer lists"
        );
    }
    Ok(gone.len() as u64)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
