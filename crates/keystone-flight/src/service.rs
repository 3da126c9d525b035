//! The Flight SQL service: authentication, metadata, queries, prepared
//! statements and bulk ingest over Keystone's engine.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementIngest, CommandStatementQuery,
    DoPutPreparedStatementResult, Nullable, ProstMessageExt, Searchable, SqlInfo,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, TableExistsOption, TicketStatementQuery,
    XdbcDataType,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::common::ParamValues;
use datafusion::common::TableReference;
use datafusion::config::Dialect;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use keystone_engine::consent::CONSENTS;
use keystone_engine::{CATALOG, EVENTS_RESOLVED, Engine, PUBLIC, SEGMENTS};
use keystone_ingest::{Format, IngestOptions, ingest_files};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Principal};
use crate::config::FlightConfig;
use crate::policy::{self, INFORMATION_SCHEMA};
use crate::sql::{conform, flight_schema, number_placeholders, status_of};

type DoGetStream = <KeystoneFlight as FlightService>::DoGetStream;

/// How stale the segment definitions may be when a query is planned (they
/// change from other processes: `keystone segment create|drop`).
const SEGMENTS_MAX_AGE: Duration = Duration::from_secs(2);

/// How long a plan made for GetFlightInfo waits for the DoGet of its ticket,
/// and how many such plans wait at most (a client that never fetches costs
/// nothing after that).
const PLANNED_MAX_AGE: Duration = Duration::from_secs(10);
const PLANNED_MAX: usize = 64;
/// How long the plan a CreatePreparedStatement made waits for the first
/// GetFlightInfo: clients that execute at once (ADBC) skip a plan, while a
/// statement prepared ahead plans afresh and sees the data of its execution.
const PREPARED_PLAN_MAX_AGE: Duration = Duration::from_secs(1);

/// The action ADBC sends when a connection closes.
const CLOSE_SESSION: &str = "CloseSession";

/// Keystone's Flight SQL service.
pub struct KeystoneFlight {
    engine: Arc<Engine>,
    auth: Authenticator,
    config: FlightConfig,
    prepared: Mutex<HashMap<String, Prepared>>,
    planned: Mutex<VecDeque<Planned>>,
    active: Arc<AtomicUsize>,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
    threads: QueryThreads,
}

/// The threads served queries execute on, apart from the runtime that
/// answers the network (Flight's gRPC, and the collector's HTTP when `serve`
/// runs both): a query that keeps every core busy, or computes for seconds
/// without yielding, neither delays the collector nor keeps the query
/// deadline's timer from firing.
///
/// Each query gets threads of its own (a runtime with one worker per core,
/// started for the query and stopped with it), so the operating system
/// shares the cores between running queries: a dashboard's small query is
/// not queued behind an analyst's heavy one, whose operators may compute
/// for seconds between two yields (a sort, a regular expression over every
/// row), as it would be on threads the queries shared.
///
/// ```text
///  network runtime: gRPC call ─ plan ─ deadline ─ encode ◀── channel (2 batches)
///  query's threads:              execute_stream ─ poll ──▶ channel
/// ```
struct QueryThreads {
    cores: usize,
    /// Threads of finished queries, kept for the next ones: starting a
    /// runtime costs ≈ 0.7 ms, a fifth of a small query's whole time.
    idle: Arc<IdleRuntimes>,
}

/// Runtimes of finished queries. Dropped from async code (the server
/// stopping): they are shut down without waiting for their threads.
#[derive(Default)]
struct IdleRuntimes(Mutex<Vec<tokio::runtime::Runtime>>);

impl Drop for IdleRuntimes {
    fn drop(&mut self) {
        let idle = match self.0.get_mut() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        for runtime in idle.drain(..) {
            runtime.shutdown_background();
        }
    }
}

/// How many finished queries' runtimes are kept for reuse.
const IDLE_RUNTIMES: usize = 4;

impl QueryThreads {
    fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            cores,
            idle: Arc::new(IdleRuntimes::default()),
        }
    }

    /// Start `task` on threads of its own.
    fn spawn(
        &self,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<RunningQuery> {
        let reused = self.idle.0.lock().ok().and_then(|mut idle| idle.pop());
        let runtime = match reused {
            Some(runtime) => runtime,
            None => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.cores)
                .thread_name("keystone-query")
                .enable_all()
                .build()?,
        };
        let task = runtime.spawn(task);
        Ok(RunningQuery {
            task,
            runtime: Some(runtime),
            idle: Arc::clone(&self.idle),
        })
    }
}

/// A query executing on its threads, cancelled when dropped (its client
/// went away, or its deadline passed): at its next yield, which
/// DataFusion's operators reach between batches. The threads of a query
/// that ran to its end are kept for another; those of a cancelled one stop
/// (it may still be computing until that yield).
struct RunningQuery {
    task: tokio::task::JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
    idle: Arc<IdleRuntimes>,
}

impl Drop for RunningQuery {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if self.task.is_finished()
            && let Ok(mut idle) = self.idle.0.lock()
            && idle.len() < IDLE_RUNTIMES
        {
            idle.push(runtime);
            return;
        }
        self.task.abort();
        // Dropped from async code: do not wait for the threads.
        runtime.shutdown_background();
    }
}

/// A prepared statement: its SQL, its owner and its bound parameters.
struct Prepared {
    key_id: String,
    /// The handshake session that prepared it (closed with that session).
    session: Option<[u8; 32]>,
    sql: String,
    params: Option<RecordBatch>,
    last_used: Instant,
}

/// A query planned by one call, kept for the call that follows it so the
/// query is not parsed, checked and planned again: a statement's DoGet runs
/// the plan its GetFlightInfo made, and a prepared statement's first
/// GetFlightInfo and each DoGet run the plan the call before made (ADBC's
/// `execute` is CreatePreparedStatement, GetFlightInfo, DoGet: one plan
/// instead of three). A DoGet also runs exactly the plan whose schema the
/// FlightInfo announced.
struct Planned {
    key_id: String,
    what: PlanOf,
    ctx: SessionContext,
    plan: LogicalPlan,
    at: Instant,
}

/// What a kept plan was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PlanOf {
    /// A statement, by its SQL (which is also its ticket).
    Statement(String),
    /// A prepared statement by its handle, planned at its creation, without
    /// parameters.
    Prepared(String),
    /// A prepared statement by its handle, with the parameters bound when
    /// its GetFlightInfo planned it; dropped when new parameters arrive.
    PreparedBound(String),
}

impl PlanOf {
    /// How long a plan kept for this may wait for its use.
    fn max_age(&self) -> Duration {
        match self {
            PlanOf::Prepared(_) => PREPARED_PLAN_MAX_AGE,
            PlanOf::Statement(_) | PlanOf::PreparedBound(_) => PLANNED_MAX_AGE,
        }
    }
}

/// Counts a running query until its stream is dropped (finished, failed or
/// abandoned by a client that went away, which cancels its plan).
struct QueryGuard(Arc<AtomicUsize>);

impl QueryGuard {
    fn new(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        Self(active.clone())
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn timed_out(timeout: Duration) -> Status {
    Status::resource_exhausted(format!(
        "the query ran longer than a query may ([flight] query_timeout_secs = {})",
        timeout.as_secs()
    ))
}

/// A prepared statement's handle as the key of Keystone's maps.
fn handle_of(handle: &[u8]) -> String {
    String::from_utf8_lossy(handle).into_owned()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(internal)?;
    Ok(bytes)
}

fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(internal)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn batch_stream(schema: SchemaRef, batch: RecordBatch) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

impl KeystoneFlight {
    /// A service over `engine`, checking keys of its lake.
    pub async fn new(engine: Arc<Engine>, config: FlightConfig) -> crate::Result<Self> {
        config.validate().map_err(crate::Error::Config)?;
        let auth = Authenticator::new(
            engine.lake().clone(),
            Duration::from_secs(config.token_ttl_secs),
        )
        .await?;
        Ok(Self {
            engine,
            auth,
            sql_info: sql_info(&config)?,
            xdbc: xdbc_info()?,
            config,
            prepared: Mutex::new(HashMap::new()),
            planned: Mutex::new(VecDeque::new()),
            active: Arc::new(AtomicUsize::new(0)),
            threads: QueryThreads::new(),
        })
    }

    /// Queries whose results are still streaming.
    pub fn active_queries(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Counter of running queries, shared with the streams.
    pub fn active_counter(&self) -> Arc<AtomicUsize> {
        self.active.clone()
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.query_timeout_secs)
    }

    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        self.auth.authenticate(request.metadata()).await
    }

    fn session(&self, principal: &Principal) -> SessionContext {
        self.engine.served_context(principal.masked())
    }

    /// Parse, check and plan `sql` for `principal`.
    async fn plan(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<(SessionContext, LogicalPlan), Status> {
        policy::check_can_query(principal)?;
        // Segments may have been defined or dropped by another process.
        self.engine
            .refresh_segments_if_older(SEGMENTS_MAX_AGE)
            .await
            .map_err(internal)?;
        let ctx = self.session(principal);
        let state = ctx.state();
        let sql = number_placeholders(sql);
        let statement = state
            .sql_to_statement(&sql, &Dialect::Generic)
            .map_err(|e| crate::sql::syntax_status(&sql, &e))?;
        policy::check_statement(&statement)?;
        let references = state
            .resolve_table_references(&statement)
            .map_err(|e| status_of(&e))?;
        for reference in references {
            // Table functions (generate_series, range) read no table.
            if let TableReference::Bare { table } = &reference
                && state.table_functions().contains_key(table.as_ref())
            {
                continue;
            }
            self.check_reference(&ctx, principal, &reference)?;
        }
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| status_of(&e))?;
        datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok((ctx, plan))
    }

    fn check_reference(
        &self,
        ctx: &SessionContext,
        principal: &Principal,
        reference: &TableReference,
    ) -> Result<(), Status> {
        let resolved = reference.clone().resolve(CATALOG, PUBLIC);
        let (catalog, schema, table) = (
            resolved.catalog.as_ref(),
            resolved.schema.as_ref(),
            resolved.table.as_ref(),
        );
        if catalog != CATALOG {
            return Err(Status::not_found(format!(
                "catalog {catalog} does not exist: Keystone's catalog is {CATALOG}"
            )));
        }
        if schema != INFORMATION_SCHEMA {
            let exists = ctx
                .catalog(CATALOG)
                .and_then(|c| c.schema(schema))
                .is_some_and(|s| s.table_exist(table));
            if !exists {
                return Err(Status::not_found(format!(
                    "table {CATALOG}.{schema}.{table} does not exist"
                )));
            }
        }
        policy::check_table(principal, schema, table)
    }

    /// Bind one row of parameters to `plan`, cast to the types the plan infers.
    fn bind(plan: LogicalPlan, params: Option<&RecordBatch>) -> Result<LogicalPlan, Status> {
        let Some(params) = params else {
            return Ok(plan);
        };
        if params.num_columns() == 0 {
            return Ok(plan);
        }
        if params.num_rows() != 1 {
            return Err(Status::invalid_argument(format!(
                "a query runs with one row of parameters (got {} rows)",
                params.num_rows()
            )));
        }
        let types = plan.get_parameter_types().map_err(|e| status_of(&e))?;
        let values = params
            .columns()
            .iter()
            .enumerate()
            .map(|(i, column)| -> Result<ScalarValue, Status> {
                let value = ScalarValue::try_from_array(column, 0).map_err(|e| status_of(&e))?;
                match types.get(&format!("${}", i + 1)).cloned().flatten() {
                    Some(dt) if dt != value.data_type() => value
                        .cast_to(&dt)
                        .map_err(|e| Status::invalid_argument(format!("parameter {}: {e}", i + 1))),
                    _ => Ok(value),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        plan.with_param_values(ParamValues::from(values))
            .map_err(|e| status_of(&e))
    }

    /// Plan `sql` (with `params`), unless `planned` is its plan already, and
    /// stream its results, batch by batch, within the query deadline.
    async fn execute(
        &self,
        principal: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
        planned: Option<(SessionContext, LogicalPlan)>,
    ) -> Result<Response<DoGetStream>, Status> {
        let timeout = self.timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let guard = QueryGuard::new(&self.active);
        let start = async {
            let (ctx, plan) = match planned {
                Some(planned) => planned,
                None => self.plan(principal, sql).await?,
            };
            let plan = Self::bind(plan, params)?;
            let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
            let schema = flight_schema(plan.schema().as_arrow());
            let state = ctx.state();
            let physical = state
                .create_physical_plan(&plan)
                .await
                .map_err(|e| status_of(&e))?;
            let task = self
                .engine
                .task_context(&state, Some(self.config.query_memory_limit_bytes))
                .map_err(internal)?;
            Ok::<_, Status>((schema, physical, task, explain))
        };
        let (schema, physical, task, explain) = tokio::time::timeout_at(deadline, start)
            .await
            .map_err(|_| timed_out(timeout))??;
        // Executed on the query's threads (operators spawn their tasks on the
        // runtime that executes them), handed over batch by batch.
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let running = self
            .threads
            .spawn(async move {
                let mut stream = match execute_stream(physical, task) {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                while let Some(batch) = stream.next().await {
                    let failed = batch.is_err();
                    if tx.send(batch).await.is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| {
                Status::resource_exhausted(format!("cannot start a query's threads: {e}"))
            })?;
        // EXPLAIN names files relative to the lake, not where the server keeps it.
        let hidden = explain.then(|| crate::sql::lake_prefixes(self.engine.lake().root()));
        let stream =
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(move |batch| {
                match (&hidden, batch) {
                    (Some(prefixes), Ok(batch)) => crate::sql::without_prefixes(batch, prefixes)
                        .map_err(|s| DataFusionError::Execution(s.message().to_string())),
                    (_, batch) => batch,
                }
            });
        let batches = limited(
            Box::pin(stream),
            schema.clone(),
            deadline,
            timeout,
            (guard, running),
        );
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    /// Keep the plan of `sql` made for GetFlightInfo until its DoGet.
    fn keep_planned(
        &self,
        principal: &Principal,
        what: PlanOf,
        ctx: SessionContext,
        plan: LogicalPlan,
    ) -> Result<(), Status> {
        let mut planned = self.planned.lock().map_err(internal)?;
        planned.retain(|p| p.at.elapsed() < p.what.max_age());
        while planned.len() >= PLANNED_MAX {
            planned.pop_front();
        }
        planned.push_back(Planned {
            key_id: principal.key_id.clone(),
            what,
            ctx,
            plan,
            at: Instant::now(),
        });
        Ok(())
    }

    /// The plan kept for `what` and this key, if it is still fresh; each
    /// plan is used once.
    fn take_planned(
        &self,
        principal: &Principal,
        what: &PlanOf,
    ) -> Result<Option<(SessionContext, LogicalPlan)>, Status> {
        let mut planned = self.planned.lock().map_err(internal)?;
        let found = planned.iter().position(|p| {
            p.key_id == principal.key_id && &p.what == what && p.at.elapsed() < what.max_age()
        });
        Ok(found
            .and_then(|i| planned.remove(i))
            .map(|p| (p.ctx, p.plan)))
    }

    /// Drop the plans kept for `what` (its parameters changed, or it closed).
    fn forget_planned(&self, what: &[PlanOf]) -> Result<(), Status> {
        let mut planned = self.planned.lock().map_err(internal)?;
        planned.retain(|p| !what.contains(&p.what));
        Ok(())
    }

    fn remember(&self, principal: &Principal, sql: String) -> Result<String, Status> {
        let handle = uuid::Uuid::new_v4().simple().to_string();
        let mut prepared = self.prepared.lock().map_err(internal)?;
        // The cap is per key: one key's statements never evict another's.
        let mine = |p: &Prepared| p.key_id == principal.key_id;
        while prepared.values().filter(|p| mine(p)).count() >= self.config.max_prepared_statements {
            let oldest = prepared
                .iter()
                .filter(|(_, p)| mine(p))
                .min_by_key(|(_, p)| p.last_used)
                .map(|(h, _)| h.clone());
            match oldest {
                Some(h) => prepared.remove(&h),
                None => break,
            };
        }
        prepared.insert(
            handle.clone(),
            Prepared {
                key_id: principal.key_id.clone(),
                session: principal.session,
                sql,
                params: None,
                last_used: Instant::now(),
            },
        );
        Ok(handle)
    }

    /// The SQL and parameters of a prepared statement `principal` owns.
    fn recall(
        &self,
        principal: &Principal,
        handle: &str,
    ) -> Result<(String, Option<RecordBatch>), Status> {
        let mut prepared = self.prepared.lock().map_err(internal)?;
        match prepared.get_mut(handle) {
            Some(p) if p.key_id == principal.key_id => {
                p.last_used = Instant::now();
                Ok((p.sql.clone(), p.params.clone()))
            }
            _ => Err(Status::not_found(format!(
                "prepared statement {handle} does not exist (closed, expired or another key's)"
            ))),
        }
    }

    /// Every table `principal` may read: (schema, name, is_view, provider schema).
    async fn visible_tables(
        &self,
        principal: &Principal,
    ) -> Result<Vec<(String, String, bool, SchemaRef)>, Status> {
        self.engine
            .refresh_segments_if_older(SEGMENTS_MAX_AGE)
            .await
            .map_err(internal)?;
        let ctx = self.session(principal);
        let Some(catalog) = ctx.catalog(CATALOG) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for schema_name in [PUBLIC, SEGMENTS] {
            let Some(schema) = catalog.schema(schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                // Collector keys see `events`, the table they ingest into.
                let ingest_target =
                    principal.role == keystone_lake::Role::Collector && name == "events";
                if !(policy::can_read(principal.role, schema_name, &name) || ingest_target) {
                    continue;
                }
                let Some(provider) = schema.table(&name).await.map_err(|e| status_of(&e))? else {
                    continue;
                };
                let is_view =
                    schema_name == SEGMENTS || name == EVENTS_RESOLVED || name == CONSENTS;
                out.push((
                    schema_name.to_string(),
                    name,
                    is_view,
                    flight_schema(&provider.schema()),
                ));
            }
        }
        Ok(out)
    }
}

/// `stream` with each batch conformed to `schema`, ended by an error at the
/// deadline; `guard` lives as long as the stream (and cancels the query
/// when dropped).
fn limited(
    stream: Pin<Box<dyn Stream<Item = datafusion::error::Result<RecordBatch>> + Send>>,
    schema: SchemaRef,
    deadline: tokio::time::Instant,
    timeout: Duration,
    guard: (QueryGuard, RunningQuery),
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static {
    futures::stream::unfold(Some((stream, guard)), move |state| {
        let schema = schema.clone();
        async move {
            let (mut stream, guard) = state?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => Some((Err(FlightError::from(timed_out(timeout))), None)),
                Ok(None) => None,
                Ok(Some(Err(e))) => Some((Err(FlightError::from(status_of(&e))), None)),
                Ok(Some(Ok(batch))) => match conform(&schema, batch) {
                    Ok(batch) => Some((Ok(batch), Some((stream, guard)))),
                    Err(status) => Some((Err(FlightError::from(status)), None)),
                },
            }
        }
    })
}

fn sql_info(config: &FlightConfig) -> crate::Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Keystone");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        i32::try_from(config.query_timeout_secs.saturating_mul(1000)).unwrap_or(i32::MAX),
    );
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, false);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.build().map_err(|e| crate::Error::Config(e.to_string()))
}

fn xdbc_info() -> crate::Result<XdbcTypeInfoData> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("VARCHAR", XdbcDataType::XdbcVarchar, Some("'"), true),
        ("BIGINT", XdbcDataType::XdbcBigint, None, false),
        ("INTEGER", XdbcDataType::XdbcInteger, None, false),
        ("DOUBLE", XdbcDataType::XdbcDouble, None, false),
        ("BOOLEAN", XdbcDataType::XdbcBit, None, false),
        ("DATE", XdbcDataType::XdbcDate, Some("'"), false),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some("'"), false),
    ];
    for (name, data_type, quote, case_sensitive) in types {
        b.append(XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            literal_prefix: quote.map(str::to_string),
            literal_suffix: quote.map(str::to_string),
            nullable: Nullable::NullabilityNullable,
            case_sensitive,
            searchable: Searchable::Full,
            local_type_name: Some(name.to_string()),
            sql_data_type: data_type,
            ..Default::default()
        });
    }
    b.build().map_err(|e| crate::Error::Config(e.to_string()))
}

#[tonic::async_trait]
impl FlightSqlService for KeystoneFlight {
    type FlightService = KeystoneFlight;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let (_, token) = self.auth.handshake(request.metadata()).await?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::iter([Ok(reply)]));
        let mut response = Response::new(stream);
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(internal)?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request).await?;
        let (ctx, plan) = self.plan(&principal, &query.query).await?;
        let schema = flight_schema(plan.schema().as_arrow());
        self.keep_planned(
            &principal,
            PlanOf::Statement(query.query.clone()),
            ctx,
            plan,
        )?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement ticket is not UTF-8 SQL"))?;
        let planned = self.take_planned(&principal, &PlanOf::Statement(sql.clone()))?;
        self.execute(&principal, &sql, None, planned).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request).await?;
        let handle = handle_of(&cmd.prepared_statement_handle);
        let (sql, params) = self.recall(&principal, &handle)?;
        let (ctx, plan) = match self.take_planned(&principal, &PlanOf::Prepared(handle.clone()))? {
            Some(planned) => planned,
            None => self.plan(&principal, &sql).await?,
        };
        let plan = Self::bind(plan, params.as_ref())?;
        let schema = flight_schema(plan.schema().as_arrow());
        self.keep_planned(&principal, PlanOf::PreparedBound(handle), ctx, plan)?;
        flight_info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let handle = handle_of(&cmd.prepared_statement_handle);
        let (sql, params) = self.recall(&principal, &handle)?;
        match self.take_planned(&principal, &PlanOf::PreparedBound(handle))? {
            // Planned with these parameters by its GetFlightInfo.
            Some(planned) => self.execute(&principal, &sql, None, Some(planned)).await,
            None => self.execute(&principal, &sql, params.as_ref(), None).await,
        }
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.principal(&request).await?;
        let (ctx, plan) = self.plan(&principal, &query.query).await?;
        let types = plan.get_parameter_types().map_err(|e| status_of(&e))?;
        let mut numbered: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(id, dt)| id.strip_prefix('$')?.parse().ok().map(|n| (n, dt)))
            .collect();
        numbered.sort_by_key(|(n, _)| *n);
        let parameter_schema = Schema::new(
            numbered
                .into_iter()
                .map(|(n, dt)| Field::new(format!("${n}"), dt.unwrap_or(DataType::Null), true))
                .collect::<Vec<_>>(),
        );
        let dataset_schema = flight_schema(plan.schema().as_arrow());
        let handle = self.remember(&principal, query.query)?;
        self.keep_planned(&principal, PlanOf::Prepared(handle.clone()), ctx, plan)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: schema_bytes(&dataset_schema)?,
            parameter_schema: if parameter_schema.fields().is_empty() {
                bytes::Bytes::new()
            } else {
                schema_bytes(&parameter_schema)?
            },
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = self.principal(&request).await?;
        // Owner check before reading the parameters.
        let handle = handle_of(&cmd.prepared_statement_handle);
        self.recall(&principal, &handle)?;
        let stream = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(Status::from)?;
        let params = match batches.first() {
            None => None,
            Some(first) => Some(
                arrow::compute::concat_batches(&first.schema(), &batches)
                    .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?,
            ),
        };
        {
            let mut prepared = self.prepared.lock().map_err(internal)?;
            if let Some(p) = prepared.get_mut(&handle) {
                p.params = params;
                p.last_used = Instant::now();
            }
        }
        // A plan bound to the previous parameters must not run.
        self.forget_planned(&[PlanOf::PreparedBound(handle)])?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(cmd.prepared_statement_handle),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let principal = self.principal(&request).await?;
        let handle = handle_of(&query.prepared_statement_handle);
        let owned = {
            let mut prepared = self.prepared.lock().map_err(internal)?;
            let owned = prepared
                .get(&handle)
                .is_some_and(|p| p.key_id == principal.key_id);
            if owned {
                prepared.remove(&handle);
            }
            owned
        };
        if owned {
            self.forget_planned(&[
                PlanOf::Prepared(handle.clone()),
                PlanOf::PreparedBound(handle),
            ])?;
        }
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        let schema = builder.schema();
        Ok(batch_stream(schema, builder.build().map_err(internal)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.clone().into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let mut builder = query.into_builder();
        for schema in [INFORMATION_SCHEMA, PUBLIC, SEGMENTS] {
            let listed = match principal.role {
                keystone_lake::Role::Collector => schema == PUBLIC,
                keystone_lake::Role::Activation => schema != INFORMATION_SCHEMA,
                _ => true,
            };
            if listed {
                builder.append(CATALOG, schema);
            }
        }
        let schema = builder.schema();
        Ok(batch_stream(schema, builder.build().map_err(internal)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.clone().into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let tables = self.visible_tables(&principal).await?;
        let mut builder = query.into_builder();
        for (schema, name, is_view, table_schema) in tables {
            let kind = if is_view { "VIEW" } else { "TABLE" };
            builder
                .append(CATALOG, &schema, &name, kind, &table_schema)
                .map_err(internal)?;
        }
        let schema = builder.schema();
        Ok(batch_stream(schema, builder.build().map_err(internal)?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        let schema = builder.schema();
        Ok(batch_stream(schema, builder.build().map_err(internal)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        Ok(batch_stream(schema, builder.build().map_err(internal)?))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.into_builder(&self.xdbc).schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let builder = query.into_builder(&self.xdbc);
        let schema = builder.schema();
        Ok(batch_stream(schema, builder.build().map_err(internal)?))
    }

    /// A path descriptor names a table or segment: `["segments", "vip"]`,
    /// `["profiles"]`. Its ticket streams every row, as the caller may see it.
    async fn get_flight_info_fallback(
        &self,
        _cmd: arrow_flight::sql::Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request).await?;
        let descriptor = request.into_inner();
        if descriptor.r#type != DescriptorType::Path as i32 {
            return Err(Status::unimplemented(
                "unknown Flight SQL command; path descriptors name a table: [\"segments\", NAME] or [TABLE]",
            ));
        }
        let name = match descriptor.path.as_slice() {
            [table] => quote_ident(table),
            [schema, table] => format!("{}.{}", quote_ident(schema), quote_ident(table)),
            _ => {
                return Err(Status::invalid_argument(
                    "a path descriptor has one or two parts: [TABLE] or [SCHEMA, TABLE]",
                ));
            }
        };
        let sql = format!("SELECT * FROM {name}");
        let (_, plan) = self.plan(&principal, &sql).await?;
        let schema = flight_schema(plan.schema().as_arrow());
        let ticket = TicketStatementQuery {
            statement_handle: sql.into_bytes().into(),
        };
        flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = self.principal(&request).await?;
        policy::check_can_ingest(&principal)?;
        check_ingest_target(&cmd)?;
        let source = cmd
            .options
            .get("source")
            .cloned()
            .unwrap_or_else(|| principal.name.clone());
        let stream = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        let staged = crate::ingest::stage(stream, self.config.max_ingest_bytes).await?;
        let Some(staged) = staged else {
            return Ok(0);
        };
        let opts = IngestOptions {
            format: Some(Format::Parquet),
            source: Some(source),
            label: Some(format!("flight ingest (key {})", principal.key_id)),
            ..Default::default()
        };
        // The load is not `Send` (progress callbacks): it runs on a blocking
        // thread that drives it on this runtime.
        let lake = self.engine.lake().clone();
        let runtime = tokio::runtime::Handle::current();
        let metrics = tokio::task::spawn_blocking(move || {
            let path = staged.path().to_path_buf();
            let result = runtime.block_on(ingest_files(&lake, &[path], &opts, &mut |_, _| {}));
            drop(staged);
            result
        })
        .await
        .map_err(internal)?
        .map_err(|e| Status::invalid_argument(format!("bulk ingest: {e}")))?;
        i64::try_from(metrics.events).map_err(internal)
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let principal = self.principal(&request).await?;
        if request.get_ref().r#type == CLOSE_SESSION {
            // A handshake session's prepared statements go with it. A key
            // sent with every call names no session (many connections may
            // share it): their statements are closed one by one by
            // ClosePreparedStatement, or evicted by the LRU cap.
            if let Some(session) = principal.session {
                let mut prepared = self.prepared.lock().map_err(internal)?;
                prepared.retain(|_, p| p.session != Some(session));
            }
            // CloseSessionResult { status: CLOSED (1) }.
            let body = arrow_flight::Result {
                body: bytes::Bytes::from_static(&[0x08, 0x01]),
            };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))));
        }
        Err(Status::unimplemented(format!(
            "action {} is not supported",
            request.get_ref().r#type
        )))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CLOSE_SESSION.to_string(),
            description: "Close the session and its prepared statements".to_string(),
        })])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Bulk ingest lands in `events` (appended, validated like `keystone ingest`).
fn check_ingest_target(cmd: &CommandStatementIngest) -> Result<(), Status> {
    let table_ok = cmd.table.eq_ignore_ascii_case("events");
    let schema_ok = cmd
        .schema
        .as_deref()
        .is_none_or(|s| s.is_empty() || s.eq_ignore_ascii_case(PUBLIC));
    let catalog_ok = cmd
        .catalog
        .as_deref()
        .is_none_or(|c| c.is_empty() || c.eq_ignore_ascii_case(CATALOG));
    if !(table_ok && schema_ok && catalog_ok) || cmd.temporary {
        return Err(Status::invalid_argument(format!(
            "bulk ingest appends to {CATALOG}.{PUBLIC}.events only (got table {:?}{})",
            cmd.table,
            if cmd.temporary { ", temporary" } else { "" }
        )));
    }
    if let Some(options) = &cmd.table_definition_options {
        match TableExistsOption::try_from(options.if_exists) {
            Ok(TableExistsOption::Replace) => {
                return Err(Status::invalid_argument(
                    "bulk ingest cannot replace events: use mode='append'",
                ));
            }
            Ok(TableExistsOption::Fail) => {
                return Err(Status::already_exists(
                    "table events exists: bulk ingest appends to it (mode='append')",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(threads: &QueryThreads) -> usize {
        threads.idle.0.lock().expect("lock").len()
    }

    #[tokio::test]
    async fn finished_queries_leave_their_threads_to_the_next_and_cancelled_ones_stop_them() {
        let threads = QueryThreads::new();
        let query = threads.spawn(async {}).expect("threads");
        while !query.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(query);
        assert_eq!(idle(&threads), 1, "kept for the next query");

        // The next query runs on them; cancelled, it stops them.
        let (mut tx, rx) = tokio::sync::oneshot::channel::<()>();
        let query = threads
            .spawn(async move {
                let _ = rx.await;
            })
            .expect("threads");
        assert_eq!(idle(&threads), 0, "reused");
        drop(query);
        assert_eq!(
            idle(&threads),
            0,
            "a cancelled query's threads are not kept"
        );
        tokio::time::timeout(Duration::from_secs(10), tx.closed())
            .await
            .expect("the cancelled query was dropped");

        // No more than IDLE_RUNTIMES are kept.
        let queries: Vec<_> = (0..IDLE_RUNTIMES + 2)
            .map(|_| threads.spawn(async {}).expect("threads"))
            .collect();
        for query in &queries {
            while !query.task.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        drop(queries);
        assert_eq!(idle(&threads), IDLE_RUNTIMES);
    }
}
