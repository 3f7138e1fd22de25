//! How every statement of `src/db/` reaches PostgreSQL: through [`Conn`], on a pooled connection
//! or inside a transaction, with its parameter types declared.
//!
//! - Prepared statements (`DATABASE_PREPARED_STATEMENTS=true`, the default): each statement is
//!   prepared once per connection and kept (deadpool's statement cache). Behind a transaction
//!   pooler that does not track them (PgBouncer before 1.21, or with `max_prepared_statements = 0`)
//!   the next transaction may land on a server connection that never saw the statement, so with
//!   `false` every statement goes as one unnamed Parse/Bind/Execute (`query_typed`): no named
//!   statement ever, and one round trip.
//! - The statement timeout: a transaction pooler hands each transaction to any server connection
//!   and keeps no session state (PgBouncer rejects the `options` startup parameter, and a session
//!   `SET` would stay behind on a server connection another client gets next). What a
//!   transaction sets with `SET LOCAL` stays with it, wherever the pooler sends it: a statement
//!   outside a transaction is sent as `begin; set local statement_timeout = …`, the statement,
//!   `commit`, pipelined (one round trip); inside a transaction, `set local …` goes just before
//!   it.

use std::{future::Future, time::Duration};

use tokio_postgres::{
    Client as PgClient, Error, Row, Statement,
    types::{ToSql, Type},
};

use crate::settings::DatabaseSettings;

/// How statements go to this database: prepared and cached or unnamed, and the statement timeout
/// set with each transaction. Part of every connection handed out ([`Client`]), never a global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub prepared_statements: bool,
    pub statement_timeout: Duration,
}

impl Mode {
    pub fn of(settings: &DatabaseSettings) -> Self {
        Self {
            prepared_statements: settings.prepared_statements,
            statement_timeout: settings.statement_timeout,
        }
    }

    fn set_local(self) -> String {
        format!(
            "set local statement_timeout = {}",
            self.statement_timeout.as_millis()
        )
    }
}

/// A pooled connection with the [`Mode`] of its database.
pub struct Client {
    inner: deadpool_postgres::Object,
    mode: Mode,
}

impl Client {
    pub fn new(inner: deadpool_postgres::Object, mode: Mode) -> Self {
        Self { inner, mode }
    }

    pub async fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        Ok(Transaction {
            inner: self.inner.transaction().await?,
            mode: self.mode,
        })
    }

    /// For statements without parameters that no pooler mode affects (`LISTEN`, DDL).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.inner.batch_execute(sql).await
    }
}

/// A transaction on a [`Client`].
pub struct Transaction<'a> {
    inner: deadpool_postgres::Transaction<'a>,
    mode: Mode,
}

impl Transaction<'_> {
    pub async fn commit(self) -> Result<(), Error> {
        self.inner.commit().await
    }

    /// Its statements may run this long (each statement sets it again, `SET LOCAL`).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.mode.statement_timeout = timeout;
        self
    }

    pub async fn rollback(self) -> Result<(), Error> {
        self.inner.rollback().await
    }

    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.inner.batch_execute(sql).await
    }
}

/// A pooled connection or a transaction on one: what every query function of `src/db/` takes.
pub trait Conn: Sync {
    /// The connection's client (statements on it run inside the transaction, if any).
    fn pg(&self) -> &PgClient;
    /// Whether a transaction is open.
    fn in_transaction(&self) -> bool;
    fn mode(&self) -> Mode;
    /// Prepare once per connection and keep.
    fn prepare_cached(
        &self,
        sql: &str,
        types: &[Type],
    ) -> impl Future<Output = Result<Statement, Error>> + Send;
}

impl Conn for Client {
    fn pg(&self) -> &PgClient {
        &self.inner
    }
    fn in_transaction(&self) -> bool {
        false
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    async fn prepare_cached(&self, sql: &str, types: &[Type]) -> Result<Statement, Error> {
        self.inner.prepare_typed_cached(sql, types).await
    }
}

impl Conn for Transaction<'_> {
    fn pg(&self) -> &PgClient {
        self.inner.client()
    }
    fn in_transaction(&self) -> bool {
        true
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    async fn prepare_cached(&self, sql: &str, types: &[Type]) -> Result<Statement, Error> {
        self.inner.prepare_typed_cached(sql, types).await
    }
}

/// What a statement returns.
enum Out {
    Rows(Vec<Row>),
    Count(u64),
}

async fn run(
    c: &impl Conn,
    sql: &str,
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
    rows: bool,
) -> Result<Out, Error> {
    debug_assert_eq!(types.len(), params.len(), "one type per parameter: {sql}");
    let pg = c.pg();
    // Prepared first (a cache hit after the first time), so that the pipeline below holds only
    // the statement itself between begin and commit.
    let mode = c.mode();
    let prepared = if mode.prepared_statements {
        Some(c.prepare_cached(sql, types).await?)
    } else {
        None
    };
    let typed: Vec<(&(dyn ToSql + Sync), Type)> = if prepared.is_none() {
        params.iter().copied().zip(types.iter().cloned()).collect()
    } else {
        Vec::new()
    };
    let statement = async {
        match (&prepared, rows) {
            (Some(st), true) => pg.query(st, params).await.map(Out::Rows),
            (Some(st), false) => pg.execute(st, params).await.map(Out::Count),
            (None, true) => pg.query_typed(sql, &typed).await.map(Out::Rows),
            (None, false) => pg.execute_typed(sql, &typed).await.map(Out::Count),
        }
    };
    let set = mode.set_local();
    if c.in_transaction() {
        let (set, out) = futures_util::join!(pg.batch_execute(&set), statement);
        set?;
        out
    } else {
        let begin = format!("begin; {set}");
        let (begin, out, commit) = futures_util::join!(
            pg.batch_execute(&begin),
            statement,
            pg.batch_execute("commit")
        );
        begin?;
        let out = out?;
        commit?;
        Ok(out)
    }
}

/// Every row.
pub async fn query(
    c: &impl Conn,
    sql: &str,
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Error> {
    match run(c, sql, types, params, true).await? {
        Out::Rows(rows) => Ok(rows),
        Out::Count(_) => unreachable!("rows were asked for"),
    }
}

/// At most one row.
pub async fn query_opt(
    c: &impl Conn,
    sql: &str,
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, Error> {
    Ok(query(c, sql, types, params).await?.into_iter().next())
}

/// Exactly one row (the statement's shape guarantees it, as `returning` of an upsert does).
pub async fn query_one(
    c: &impl Conn,
    sql: &str,
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, Error> {
    let mut rows = query(c, sql, types, params).await?.into_iter();
    match (rows.next(), rows.next()) {
        (Some(row), None) => Ok(row),
        // The same error tokio-postgres' own query_one gives.
        _ => Err(pg_row_count_error(c).await),
    }
}

/// tokio-postgres has no public constructor for its errors; its own `query_one` makes the one
/// we want from an empty result.
async fn pg_row_count_error(c: &impl Conn) -> Error {
    match c.pg().query_typed_one("select 1 where false", &[]).await {
        Err(e) => e,
        Ok(_) => unreachable!("select … where false returns no row"),
    }
}

/// The number of rows changed.
pub async fn execute(
    c: &impl Conn,
    sql: &str,
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, Error> {
    match run(c, sql, types, params, false).await? {
        Out::Count(n) => Ok(n),
        Out::Rows(_) => unreachable!("a count was asked for"),
    }
}
