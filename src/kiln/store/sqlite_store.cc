#include "kiln/store/sqlite_store.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kiln/base/status.h"

namespace kiln::store {
namespace {

// Each entry migrates the schema from version i to i+1. Append only: a released
// migration never changes, so every database walks the same path.
const char* const kMigrations[] = {
    // 0 -> 1: the core schema.
    R"sql(
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  username TEXT NOT NULL UNIQUE,
  password_hash TEXT NOT NULL,
  admin INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE TABLE tokens (
  hash TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
  job_id INTEGER,
  created_at INTEGER NOT NULL,
  expires_at INTEGER
);
CREATE INDEX tokens_job ON tokens(job_id) WHERE job_id IS NOT NULL;
CREATE TABLE packages (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  kind TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE agents (
  id TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  slots INTEGER NOT NULL,
  gpus TEXT NOT NULL,
  registered_at INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL
);
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  user_id INTEGER NOT NULL REFERENCES users(id),
  state TEXT NOT NULL,
  spec TEXT NOT NULL,
  agent_id TEXT NOT NULL DEFAULT '',
  exit_code INTEGER,
  signal INTEGER,
  reason TEXT NOT NULL DEFAULT '',
  kill_requested INTEGER NOT NULL DEFAULT 0,
  allocation TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  scheduled_at INTEGER,
  started_at INTEGER,
  finished_at INTEGER
);
CREATE INDEX jobs_state ON jobs(state, id);
CREATE INDEX jobs_user ON jobs(user_id, id);
CREATE TABLE job_events (
  id INTEGER PRIMARY KEY,
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  time INTEGER NOT NULL,
  type TEXT NOT NULL,
  message TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events(job_id, id);
CREATE TABLE log_lines (
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  time INTEGER NOT NULL,
  stream TEXT NOT NULL,
  text TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE metric_points (
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  grp TEXT NOT NULL,
  step INTEGER NOT NULL,
  value REAL NOT NULL,
  time INTEGER NOT NULL
);
CREATE INDEX metric_points_job ON metric_points(job_id, name, grp, step);
CREATE TABLE stream_offsets (
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  stream TEXT NOT NULL,
  offset INTEGER NOT NULL,
  PRIMARY KEY (job_id, stream)
) WITHOUT ROWID;
)sql",
    // 1 -> 2: hyperparameter searches and their trials.
    R"sql(
CREATE TABLE experiments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  user_id INTEGER NOT NULL REFERENCES users(id),
  state TEXT NOT NULL,
  spec TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER
);
CREATE INDEX experiments_user ON experiments(user_id, id);
CREATE TABLE trials (
  experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
  number INTEGER NOT NULL,
  state TEXT NOT NULL,
  params TEXT NOT NULL,
  config TEXT NOT NULL,
  budget INTEGER NOT NULL DEFAULT 0,
  parent INTEGER,
  job_id INTEGER,
  job_ids TEXT NOT NULL DEFAULT '[]',
  attempts INTEGER NOT NULL DEFAULT 0,
  value REAL,
  intermediate TEXT NOT NULL DEFAULT '{}',
  reason TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  PRIMARY KEY (experiment_id, number)
) WITHOUT ROWID;
)sql",
    // 2 -> 3: distributed jobs (a worker is a job with a parent) and elastic generations.
    R"sql(
ALTER TABLE jobs ADD COLUMN parent_id INTEGER REFERENCES jobs(id);
ALTER TABLE jobs ADD COLUMN worker_index INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN target_workers INTEGER;
CREATE INDEX jobs_parent ON jobs(parent_id, id);
CREATE TABLE job_generations (
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  generation INTEGER NOT NULL,
  members TEXT NOT NULL,
  store TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  reason TEXT NOT NULL,
  PRIMARY KEY (job_id, generation)
) WITHOUT ROWID;
)sql",
    // 3 -> 4: the model registry (job artifacts, models and their versions), deployments
    // with their replicas (jobs with a deployment_id), and foreign dialects' objects.
    R"sql(
ALTER TABLE jobs ADD COLUMN deployment_id INTEGER;
CREATE INDEX jobs_deployment ON jobs(deployment_id, id) WHERE deployment_id IS NOT NULL;
CREATE TABLE job_artifacts (
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  package_id TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (job_id, path)
) WITHOUT ROWID;
CREATE TABLE models (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  user_id INTEGER NOT NULL REFERENCES users(id),
  description TEXT NOT NULL DEFAULT '',
  last_version INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE INDEX models_user ON models(user_id, id);
CREATE TABLE model_versions (
  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  version INTEGER NOT NULL,
  package_id TEXT NOT NULL,
  file_name TEXT NOT NULL,
  size INTEGER NOT NULL,
  signature TEXT NOT NULL,
  metrics TEXT NOT NULL DEFAULT '{}',
  lineage TEXT NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL,
  PRIMARY KEY (model_id, version)
) WITHOUT ROWID;
CREATE TABLE deployments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  user_id INTEGER NOT NULL REFERENCES users(id),
  model_id INTEGER NOT NULL,
  version INTEGER NOT NULL,
  state TEXT NOT NULL,
  spec TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX deployments_user ON deployments(user_id, id);
CREATE INDEX deployments_model ON deployments(model_id, version);
CREATE TABLE deployment_replicas (
  deployment_id INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
  job_id INTEGER NOT NULL,
  version INTEGER NOT NULL,
  address TEXT NOT NULL DEFAULT '',
  ready_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (deployment_id, job_id)
) WITHOUT ROWID;
CREATE TABLE dialect_objects (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  user_id INTEGER NOT NULL,
  space_id TEXT NOT NULL DEFAULT '',
  body TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX dialect_objects_list ON dialect_objects(kind, created_at);
)sql",
};

constexpr int kLatestVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

const char kJobColumns[] =
    "j.id, j.name, j.user_id, u.username, j.state, j.spec, j.agent_id, j.exit_code, j.signal, "
    "j.reason, j.kill_requested, j.created_at, j.scheduled_at, j.started_at, j.finished_at, "
    "j.allocation, j.parent_id, j.worker_index, j.target_workers, j.deployment_id";

absl::StatusOr<JobRecord> ReadJob(SqliteStatement& st) {
  JobRecord job;
  job.id = st.ColumnInt(0);
  job.name = st.ColumnText(1);
  job.user_id = st.ColumnInt(2);
  job.username = st.ColumnText(3);
  KILN_ASSIGN_OR_RETURN(job.state, ParseJobState(st.ColumnText(4)));
  job.spec_json = st.ColumnText(5);
  job.agent_id = st.ColumnText(6);
  if (auto v = st.ColumnOptionalInt(7)) job.exit_code = static_cast<int>(*v);
  if (auto v = st.ColumnOptionalInt(8)) job.signal = static_cast<int>(*v);
  job.reason = st.ColumnText(9);
  job.kill_requested = st.ColumnInt(10) != 0;
  job.created_at = st.ColumnInt(11);
  job.scheduled_at = st.ColumnOptionalInt(12);
  job.started_at = st.ColumnOptionalInt(13);
  job.finished_at = st.ColumnOptionalInt(14);
  job.allocation_json = st.ColumnText(15);
  job.parent_id = st.ColumnOptionalInt(16);
  job.worker_index = static_cast<int>(st.ColumnInt(17));
  if (auto v = st.ColumnOptionalInt(18)) job.target_workers = static_cast<int>(*v);
  job.deployment_id = st.ColumnOptionalInt(19);
  return job;
}

UserRecord ReadUser(SqliteStatement& st) {
  UserRecord u;
  u.id = st.ColumnInt(0);
  u.username = st.ColumnText(1);
  u.password_hash = st.ColumnText(2);
  u.admin = st.ColumnInt(3) != 0;
  u.created_at = st.ColumnInt(4);
  return u;
}

const char kExperimentColumns[] =
    "e.id, e.name, e.user_id, u.username, e.state, e.spec, e.reason, e.created_at, "
    "e.started_at, e.finished_at";

absl::StatusOr<ExperimentRecord> ReadExperiment(SqliteStatement& st) {
  ExperimentRecord e;
  e.id = st.ColumnInt(0);
  e.name = st.ColumnText(1);
  e.user_id = st.ColumnInt(2);
  e.username = st.ColumnText(3);
  KILN_ASSIGN_OR_RETURN(e.state, ParseExperimentState(st.ColumnText(4)));
  e.spec_json = st.ColumnText(5);
  e.reason = st.ColumnText(6);
  e.created_at = st.ColumnInt(7);
  e.started_at = st.ColumnOptionalInt(8);
  e.finished_at = st.ColumnOptionalInt(9);
  return e;
}

const char kModelColumns[] = "m.id, m.name, m.user_id, u.username, m.description, m.created_at";

ModelRecord ReadModel(SqliteStatement& st) {
  ModelRecord m;
  m.id = st.ColumnInt(0);
  m.name = st.ColumnText(1);
  m.user_id = st.ColumnInt(2);
  m.username = st.ColumnText(3);
  m.description = st.ColumnText(4);
  m.created_at = st.ColumnInt(5);
  return m;
}

const char kVersionColumns[] =
    "model_id, version, package_id, file_name, size, signature, metrics, lineage, created_at";

ModelVersionRecord ReadModelVersion(SqliteStatement& st) {
  ModelVersionRecord v;
  v.model_id = st.ColumnInt(0);
  v.version = st.ColumnInt(1);
  v.package_id = st.ColumnText(2);
  v.file_name = st.ColumnText(3);
  v.size = st.ColumnInt(4);
  v.signature_json = st.ColumnText(5);
  v.metrics_json = st.ColumnText(6);
  v.lineage_json = st.ColumnText(7);
  v.created_at = st.ColumnInt(8);
  return v;
}

const char kDeploymentColumns[] =
    "d.id, d.name, d.user_id, u.username, d.model_id, d.version, d.state, d.spec, d.reason, "
    "d.created_at, d.updated_at";

absl::StatusOr<DeploymentRecord> ReadDeployment(SqliteStatement& st) {
  DeploymentRecord d;
  d.id = st.ColumnInt(0);
  d.name = st.ColumnText(1);
  d.user_id = st.ColumnInt(2);
  d.username = st.ColumnText(3);
  d.model_id = st.ColumnInt(4);
  d.version = st.ColumnInt(5);
  KILN_ASSIGN_OR_RETURN(d.state, ParseDeploymentState(st.ColumnText(6)));
  d.spec_json = st.ColumnText(7);
  d.reason = st.ColumnText(8);
  d.created_at = st.ColumnInt(9);
  d.updated_at = st.ColumnInt(10);
  return d;
}

const char kDialectColumns[] = "kind, id, user_id, space_id, body, created_at, updated_at";

DialectObject ReadDialectObject(SqliteStatement& st) {
  DialectObject o;
  o.kind = st.ColumnText(0);
  o.id = st.ColumnText(1);
  o.user_id = st.ColumnInt(2);
  o.space_id = st.ColumnText(3);
  o.body_json = st.ColumnText(4);
  o.created_at = st.ColumnInt(5);
  o.updated_at = st.ColumnInt(6);
  return o;
}

absl::StatusOr<TokenKind> ParseTokenKind(const std::string& s) {
  for (TokenKind k : {TokenKind::kSession, TokenKind::kTask, TokenKind::kAgent}) {
    if (TokenKindName(k) == s) return k;
  }
  return absl::InternalError(absl::StrCat("stored token has unknown kind ", s));
}

}  // namespace

int SqliteStore::LatestSchemaVersion() { return kLatestVersion; }

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(auto db, SqliteDb::Open(path));
  std::unique_ptr<SqliteStore> store(new SqliteStore(std::move(db)));
  KILN_RETURN_IF_ERROR(store->Migrate(kLatestVersion));
  return store;
}

absl::Status SqliteStore::MigrateForTesting(const std::string& path, int version) {
  if (version < 0 || version > kLatestVersion) {
    return absl::InvalidArgumentError(absl::StrCat("no schema version ", version));
  }
  KILN_ASSIGN_OR_RETURN(auto db, SqliteDb::Open(path));
  SqliteStore store(std::move(db));
  return store.Migrate(version);
}

absl::Status SqliteStore::Migrate(int target_version) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * get, db_->Prepare("PRAGMA user_version"));
  KILN_ASSIGN_OR_RETURN(bool row, get->Step());
  int version = row ? static_cast<int>(get->ColumnInt(0)) : 0;
  get->Reset();
  if (version > kLatestVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the database has schema version ", version, " but this kilnd knows only up to ",
        kLatestVersion, "; run a newer kilnd or use another --data-dir"));
  }
  for (int v = version; v < target_version; ++v) {
    // Schema change and version bump commit together: a crash mid-migration leaves the
    // previous version intact.
    KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
    KILN_RETURN_IF_ERROR(db_->Exec(kMigrations[v]));
    KILN_RETURN_IF_ERROR(db_->Exec(absl::StrCat("PRAGMA user_version = ", v + 1)));
    KILN_RETURN_IF_ERROR(txn.Commit());
  }
  return absl::OkStatus();
}

// ---- users ----

absl::StatusOr<UserRecord> SqliteStore::CreateUser(UserRecord user) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("INSERT INTO users (username, password_hash, admin, created_at) "
                   "VALUES (?, ?, ?, ?)"));
  st->Bind(1, user.username).Bind(2, user.password_hash).Bind(3, user.admin ? 1 : 0);
  st->Bind(4, user.created_at);
  absl::Status s = st->Run();
  if (absl::IsAlreadyExists(s)) {
    return absl::AlreadyExistsError(
        absl::StrCat("a user named \"", user.username, "\" already exists"));
  }
  KILN_RETURN_IF_ERROR(s);
  user.id = db_->LastInsertRowId();
  return user;
}

absl::StatusOr<UserRecord> SqliteStore::GetUser(int64_t id) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare(
          "SELECT id, username, password_hash, admin, created_at FROM users WHERE id = ?"));
  st->Bind(1, id);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no user with id ", id));
  UserRecord user = ReadUser(*st);
  st->Reset();
  return user;
}

absl::StatusOr<UserRecord> SqliteStore::GetUserByName(const std::string& name) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT id, username, password_hash, admin, created_at "
                                     "FROM users WHERE username = ?"));
  st->Bind(1, name);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no user named \"", name, "\""));
  UserRecord user = ReadUser(*st);
  st->Reset();
  return user;
}

absl::StatusOr<std::vector<UserRecord>> SqliteStore::ListUsers() {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("SELECT id, username, password_hash, admin, created_at FROM users ORDER BY id"));
  std::vector<UserRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out.push_back(ReadUser(*st));
  }
  return out;
}

// ---- tokens ----

absl::Status SqliteStore::PutToken(const TokenRecord& token) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("INSERT OR REPLACE INTO tokens "
                                     "(hash, kind, user_id, job_id, created_at, expires_at) "
                                     "VALUES (?, ?, ?, ?, ?, ?)"));
  st->Bind(1, token.hash).Bind(2, TokenKindName(token.kind)).Bind(3, token.user_id);
  st->Bind(4, token.job_id).Bind(5, token.created_at).Bind(6, token.expires_at);
  return st->Run();
}

absl::StatusOr<TokenRecord> SqliteStore::GetToken(const std::string& hash, int64_t now) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT hash, kind, user_id, job_id, created_at, expires_at "
                                     "FROM tokens WHERE hash = ?"));
  st->Bind(1, hash);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError("unknown token");
  TokenRecord t;
  t.hash = st->ColumnText(0);
  KILN_ASSIGN_OR_RETURN(t.kind, ParseTokenKind(st->ColumnText(1)));
  t.user_id = st->ColumnOptionalInt(2);
  t.job_id = st->ColumnOptionalInt(3);
  t.created_at = st->ColumnInt(4);
  t.expires_at = st->ColumnOptionalInt(5);
  st->Reset();
  if (t.expires_at && *t.expires_at <= now) return absl::NotFoundError("token expired");
  return t;
}

absl::Status SqliteStore::DeleteToken(const std::string& hash) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare("DELETE FROM tokens WHERE hash = ?"));
  st->Bind(1, hash);
  return st->Run();
}

absl::Status SqliteStore::DeleteJobTokens(int64_t job_id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("DELETE FROM tokens WHERE job_id = ? AND kind = 'task'"));
  st->Bind(1, job_id);
  return st->Run();
}

// ---- packages ----

absl::Status SqliteStore::PutPackage(const PackageRecord& p) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("INSERT OR IGNORE INTO packages (id, name, kind, size, "
                                     "created_at) VALUES (?, ?, ?, ?, ?)"));
  st->Bind(1, p.id).Bind(2, p.name).Bind(3, p.kind).Bind(4, p.size).Bind(5, p.created_at);
  return st->Run();
}

absl::StatusOr<PackageRecord> SqliteStore::GetPackage(const std::string& id) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("SELECT id, name, kind, size, created_at FROM packages WHERE id = ?"));
  st->Bind(1, id);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("no package \"", id, "\"; upload it with POST /api/v1/packages first"));
  }
  PackageRecord p;
  p.id = st->ColumnText(0);
  p.name = st->ColumnText(1);
  p.kind = st->ColumnText(2);
  p.size = st->ColumnInt(3);
  p.created_at = st->ColumnInt(4);
  st->Reset();
  return p;
}

// ---- jobs ----

absl::Status SqliteStore::InsertEvent(const EventRecord& e) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("INSERT INTO job_events (job_id, time, type, message) VALUES (?, ?, ?, ?)"));
  st->Bind(1, e.job_id).Bind(2, e.time).Bind(3, e.type).Bind(4, e.message);
  return st->Run();
}

absl::StatusOr<JobRecord> SqliteStore::CreateJob(JobRecord job, const EventRecord& event) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare(
          "INSERT INTO jobs (name, user_id, state, spec, created_at, parent_id, worker_index, "
          "target_workers, deployment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  st->Bind(1, job.name).Bind(2, job.user_id).Bind(3, JobStateName(job.state));
  st->Bind(4, job.spec_json).Bind(5, job.created_at).Bind(6, job.parent_id);
  st->Bind(7, job.worker_index);
  std::optional<int64_t> target;
  if (job.target_workers) target = *job.target_workers;
  st->Bind(8, target).Bind(9, job.deployment_id);
  KILN_RETURN_IF_ERROR(st->Run());
  job.id = db_->LastInsertRowId();
  EventRecord e = event;
  e.job_id = job.id;
  KILN_RETURN_IF_ERROR(InsertEvent(e));
  KILN_RETURN_IF_ERROR(txn.Commit());
  return job;
}

absl::StatusOr<JobRecord> SqliteStore::GetJob(int64_t id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("SELECT ", kJobColumns,
                                                  " FROM jobs j JOIN users u ON u.id = j.user_id "
                                                  "WHERE j.id = ?")));
  st->Bind(1, id);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no job with id ", id));
  auto job = ReadJob(*st);
  st->Reset();
  return job;
}

absl::StatusOr<std::vector<JobRecord>> SqliteStore::ListJobs(const JobFilter& filter) {
  std::string sql =
      absl::StrCat("SELECT ", kJobColumns, " FROM jobs j JOIN users u ON u.id = j.user_id WHERE 1");
  if (filter.user_id) sql += " AND j.user_id = ?1";
  if (filter.before_id) sql += " AND j.id < ?2";
  if (filter.parent_id) sql += " AND j.parent_id = ?4";
  if (filter.deployment_id) sql += " AND j.deployment_id = ?5";
  if (!filter.parent_id && !filter.deployment_id && !filter.include_workers) {
    // Top level: workers show under their parent, replicas under their deployment.
    sql += " AND j.parent_id IS NULL AND j.deployment_id IS NULL";
  }
  if (!filter.states.empty()) {
    sql += " AND j.state IN (";
    for (size_t i = 0; i < filter.states.size(); ++i) {
      absl::StrAppend(&sql, i ? ", " : "", "'", std::string(JobStateName(filter.states[i])), "'");
    }
    sql += ")";
  }
  sql += " ORDER BY j.id DESC LIMIT ?3";
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare(sql));
  if (filter.user_id) st->Bind(1, *filter.user_id);
  if (filter.before_id) st->Bind(2, *filter.before_id);
  st->Bind(3, filter.limit);
  if (filter.parent_id) st->Bind(4, *filter.parent_id);
  if (filter.deployment_id) st->Bind(5, *filter.deployment_id);
  std::vector<JobRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    KILN_ASSIGN_OR_RETURN(JobRecord job, ReadJob(*st));
    out.push_back(std::move(job));
  }
  return out;
}

absl::Status SqliteStore::UpdateJob(const JobRecord& job, const std::optional<EventRecord>& event) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("UPDATE jobs SET state = ?, agent_id = ?, exit_code = ?, signal = ?, "
                   "reason = ?, kill_requested = ?, scheduled_at = ?, started_at = ?, "
                   "finished_at = ?, allocation = ?, target_workers = ? WHERE id = ?"));
  st->Bind(1, JobStateName(job.state)).Bind(2, job.agent_id).Bind(3, job.exit_code);
  st->Bind(4, job.signal).Bind(5, job.reason).Bind(6, job.kill_requested ? 1 : 0);
  st->Bind(7, job.scheduled_at).Bind(8, job.started_at).Bind(9, job.finished_at);
  std::optional<int64_t> target;
  if (job.target_workers) target = *job.target_workers;
  st->Bind(10, job.allocation_json).Bind(11, target).Bind(12, job.id);
  KILN_RETURN_IF_ERROR(st->Run());
  if (db_->Changes() == 0) return absl::NotFoundError(absl::StrCat("no job with id ", job.id));
  if (event) KILN_RETURN_IF_ERROR(InsertEvent(*event));
  return txn.Commit();
}

absl::StatusOr<std::vector<EventRecord>> SqliteStore::ListEvents(int64_t job_id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT job_id, time, type, message FROM job_events "
                                     "WHERE job_id = ? ORDER BY id"));
  st->Bind(1, job_id);
  std::vector<EventRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out.push_back({st->ColumnInt(0), st->ColumnInt(1), st->ColumnText(2), st->ColumnText(3)});
  }
  return out;
}

absl::Status SqliteStore::PutGeneration(const GenerationRecord& g,
                                        const std::optional<EventRecord>& event) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("INSERT OR REPLACE INTO job_generations (job_id, generation, members, store, "
                   "started_at, reason) VALUES (?, ?, ?, ?, ?, ?)"));
  st->Bind(1, g.job_id).Bind(2, g.id).Bind(3, absl::StrJoin(g.members, ","));
  st->Bind(4, g.store_address).Bind(5, g.started_at).Bind(6, g.reason);
  KILN_RETURN_IF_ERROR(st->Run());
  if (event) KILN_RETURN_IF_ERROR(InsertEvent(*event));
  return txn.Commit();
}

absl::StatusOr<std::vector<GenerationRecord>> SqliteStore::ListGenerations(int64_t job_id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT generation, members, store, started_at, reason "
                                     "FROM job_generations WHERE job_id = ? ORDER BY generation"));
  st->Bind(1, job_id);
  std::vector<GenerationRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    GenerationRecord g;
    g.job_id = job_id;
    g.id = st->ColumnInt(0);
    for (absl::string_view m : absl::StrSplit(st->ColumnText(1), ',', absl::SkipEmpty())) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(m, &id)) {
        return absl::DataLossError(
            absl::StrCat("generation ", g.id, " of job ", job_id, " has a malformed member list"));
      }
      g.members.push_back(id);
    }
    g.store_address = st->ColumnText(2);
    g.started_at = st->ColumnInt(3);
    g.reason = st->ColumnText(4);
    out.push_back(std::move(g));
  }
  return out;
}

// ---- tracking ----

absl::Status SqliteStore::SetOffset(int64_t job_id, const std::string& stream, int64_t offset) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("INSERT INTO stream_offsets (job_id, stream, offset) "
                                     "VALUES (?, ?, ?) ON CONFLICT (job_id, stream) "
                                     "DO UPDATE SET offset = excluded.offset"));
  st->Bind(1, job_id).Bind(2, stream).Bind(3, offset);
  return st->Run();
}

absl::Status SqliteStore::InsertMetricPoints(int64_t job_id,
                                             const std::vector<MetricPoint>& points) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("INSERT INTO metric_points (job_id, name, grp, step, value, "
                                     "time) VALUES (?, ?, ?, ?, ?, ?)"));
  for (const MetricPoint& p : points) {
    st->Reset();
    st->Bind(1, job_id).Bind(2, p.name).Bind(3, p.group).Bind(4, p.step).Bind(5, p.value);
    st->Bind(6, p.time);
    KILN_RETURN_IF_ERROR(st->Run());
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStore::AppendTaskOutput(int64_t job_id, const TaskOutput& output) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  KILN_ASSIGN_OR_RETURN(auto stored, GetStreamOffsets(job_id));
  for (const auto& [stream, expected] : output.expected_offsets) {
    auto it = stored.find(stream);
    int64_t have = it == stored.end() ? 0 : it->second;
    if (have != expected) {
      return absl::FailedPreconditionError(absl::StrCat(
          "stream ", stream, " of job ", job_id, " is at offset ", have, ", not ", expected));
    }
  }
  const int64_t owner = output.record_under.value_or(job_id);
  KILN_ASSIGN_OR_RETURN(int64_t seq, GetLastLogSeq(owner));
  if (!output.lines.empty()) {
    KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                          db_->Prepare("INSERT INTO log_lines (job_id, seq, time, stream, text) "
                                       "VALUES (?, ?, ?, ?, ?)"));
    for (const LogLine& line : output.lines) {
      st->Reset();
      st->Bind(1, owner).Bind(2, ++seq).Bind(3, line.time);
      st->Bind(4, std::string_view(line.stream == 'e' ? "e" : "o")).Bind(5, line.text);
      KILN_RETURN_IF_ERROR(st->Run());
    }
  }
  KILN_RETURN_IF_ERROR(InsertMetricPoints(owner, output.metrics));
  for (const auto& [stream, offset] : output.offsets) {
    KILN_RETURN_IF_ERROR(SetOffset(job_id, stream, offset));
  }
  KILN_RETURN_IF_ERROR(txn.Commit());
  return seq;
}

absl::StatusOr<std::map<std::string, int64_t>> SqliteStore::GetStreamOffsets(int64_t job_id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT stream, offset FROM stream_offsets WHERE job_id = ?"));
  st->Bind(1, job_id);
  std::map<std::string, int64_t> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out[st->ColumnText(0)] = st->ColumnInt(1);
  }
  return out;
}

absl::StatusOr<bool> SqliteStore::AppendMetrics(int64_t job_id, const std::string& writer,
                                                int64_t seq,
                                                const std::vector<MetricPoint>& points) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  std::string stream = absl::StrCat("writer:", writer);
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare("SELECT offset FROM stream_offsets "
                                                           "WHERE job_id = ? AND stream = ?"));
  st->Bind(1, job_id).Bind(2, stream);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (row && st->ColumnInt(0) >= seq) return false;
  st->Reset();
  KILN_RETURN_IF_ERROR(InsertMetricPoints(job_id, points));
  KILN_RETURN_IF_ERROR(SetOffset(job_id, stream, seq));
  KILN_RETURN_IF_ERROR(txn.Commit());
  return true;
}

absl::StatusOr<std::vector<LogLine>> SqliteStore::GetLogLines(int64_t job_id, int64_t after_seq,
                                                              int limit) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT seq, time, stream, text FROM log_lines "
                                     "WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?"));
  st->Bind(1, job_id).Bind(2, after_seq).Bind(3, limit);
  std::vector<LogLine> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    std::string stream = st->ColumnText(2);
    out.push_back(
        {st->ColumnInt(0), st->ColumnInt(1), stream == "e" ? 'e' : 'o', st->ColumnText(3)});
  }
  return out;
}

absl::StatusOr<int64_t> SqliteStore::GetLastLogSeq(int64_t job_id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT MAX(seq) FROM log_lines WHERE job_id = ?"));
  st->Bind(1, job_id);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  int64_t seq = row && !st->ColumnIsNull(0) ? st->ColumnInt(0) : 0;
  st->Reset();
  return seq;
}

absl::StatusOr<std::vector<MetricPoint>> SqliteStore::GetMetrics(
    int64_t job_id, const std::optional<std::string>& name) {
  std::string sql = "SELECT name, grp, step, value, time FROM metric_points WHERE job_id = ?1";
  if (name) sql += " AND name = ?2";
  sql += " ORDER BY name, grp, step, rowid";
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare(sql));
  st->Bind(1, job_id);
  if (name) st->Bind(2, *name);
  std::vector<MetricPoint> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out.push_back({st->ColumnText(0), st->ColumnText(1), st->ColumnInt(2), st->ColumnDouble(3),
                   st->ColumnInt(4)});
  }
  return out;
}

// ---- agents ----

absl::Status SqliteStore::PutAgent(const AgentRecord& a) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("INSERT INTO agents (id, hostname, slots, gpus, registered_at, last_seen_at) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                   "hostname = excluded.hostname, slots = excluded.slots, gpus = excluded.gpus, "
                   "registered_at = excluded.registered_at, last_seen_at = excluded.last_seen_at"));
  st->Bind(1, a.id).Bind(2, a.hostname).Bind(3, a.slots).Bind(4, a.gpus_json);
  st->Bind(5, a.registered_at).Bind(6, a.last_seen_at);
  return st->Run();
}

absl::StatusOr<std::vector<AgentRecord>> SqliteStore::ListAgents() {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT id, hostname, slots, gpus, registered_at, "
                                     "last_seen_at FROM agents ORDER BY id"));
  std::vector<AgentRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    AgentRecord a;
    a.id = st->ColumnText(0);
    a.hostname = st->ColumnText(1);
    a.slots = static_cast<int>(st->ColumnInt(2));
    a.gpus_json = st->ColumnText(3);
    a.registered_at = st->ColumnInt(4);
    a.last_seen_at = st->ColumnInt(5);
    out.push_back(std::move(a));
  }
  return out;
}

// ---- experiments ----

absl::StatusOr<ExperimentRecord> SqliteStore::CreateExperiment(ExperimentRecord e) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("INSERT INTO experiments (name, user_id, state, spec, reason, created_at, "
                   "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
  st->Bind(1, e.name).Bind(2, e.user_id).Bind(3, ExperimentStateName(e.state));
  st->Bind(4, e.spec_json).Bind(5, e.reason).Bind(6, e.created_at).Bind(7, e.started_at);
  st->Bind(8, e.finished_at);
  absl::Status s = st->Run();
  if (absl::IsAlreadyExists(s)) {
    return absl::AlreadyExistsError(
        absl::StrCat("an experiment named \"", e.name, "\" already exists; choose another name"));
  }
  KILN_RETURN_IF_ERROR(s);
  e.id = db_->LastInsertRowId();
  return e;
}

absl::StatusOr<ExperimentRecord> SqliteStore::GetExperiment(int64_t id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("SELECT ", kExperimentColumns,
                                                  " FROM experiments e JOIN users u ON "
                                                  "u.id = e.user_id WHERE e.id = ?")));
  st->Bind(1, id);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no experiment with id ", id));
  auto e = ReadExperiment(*st);
  st->Reset();
  return e;
}

absl::StatusOr<ExperimentRecord> SqliteStore::GetExperimentByName(const std::string& name) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("SELECT ", kExperimentColumns,
                                                  " FROM experiments e JOIN users u ON "
                                                  "u.id = e.user_id WHERE e.name = ?")));
  st->Bind(1, name);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no experiment named \"", name, "\""));
  auto e = ReadExperiment(*st);
  st->Reset();
  return e;
}

absl::StatusOr<std::vector<ExperimentRecord>> SqliteStore::ListExperiments(
    std::optional<int64_t> user_id) {
  std::string sql = absl::StrCat("SELECT ", kExperimentColumns,
                                 " FROM experiments e JOIN users u ON u.id = e.user_id");
  if (user_id) sql += " WHERE e.user_id = ?";
  sql += " ORDER BY e.id DESC";
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare(sql));
  if (user_id) st->Bind(1, *user_id);
  std::vector<ExperimentRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    KILN_ASSIGN_OR_RETURN(ExperimentRecord e, ReadExperiment(*st));
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status SqliteStore::UpdateExperiment(const ExperimentRecord& e) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("UPDATE experiments SET state = ?, reason = ?, started_at = ?, "
                   "finished_at = ? WHERE id = ?"));
  st->Bind(1, ExperimentStateName(e.state)).Bind(2, e.reason).Bind(3, e.started_at);
  st->Bind(4, e.finished_at).Bind(5, e.id);
  KILN_RETURN_IF_ERROR(st->Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("no experiment with id ", e.id));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::DeleteExperiment(int64_t id) {
  // Trials go with it through ON DELETE CASCADE, in the same statement's transaction.
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare("DELETE FROM experiments WHERE id = ?"));
  st->Bind(1, id);
  KILN_RETURN_IF_ERROR(st->Run());
  if (db_->Changes() == 0) return absl::NotFoundError(absl::StrCat("no experiment with id ", id));
  return absl::OkStatus();
}

absl::Status SqliteStore::PutTrial(const TrialRow& t) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("INSERT OR REPLACE INTO trials (experiment_id, number, state, params, config, "
                   "budget, parent, job_id, job_ids, attempts, value, intermediate, reason, "
                   "created_at, started_at, finished_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  st->Bind(1, t.experiment_id).Bind(2, t.number).Bind(3, TrialStateName(t.state));
  st->Bind(4, t.params_json).Bind(5, t.config_json).Bind(6, t.budget).Bind(7, t.parent);
  st->Bind(8, t.job_id).Bind(9, t.job_ids_json).Bind(10, t.attempts).Bind(11, t.value);
  st->Bind(12, t.intermediate_json).Bind(13, t.reason).Bind(14, t.created_at);
  st->Bind(15, t.started_at).Bind(16, t.finished_at);
  absl::Status s = st->Run();
  // The only constraint a well-formed row can break is the experiment's foreign key.
  if (absl::IsFailedPrecondition(s)) {
    return absl::NotFoundError(absl::StrCat("no experiment with id ", t.experiment_id));
  }
  return s;
}

absl::StatusOr<std::vector<TrialRow>> SqliteStore::ListTrials(int64_t experiment_id) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("SELECT experiment_id, number, state, params, config, budget, parent, job_id, "
                   "job_ids, attempts, value, intermediate, reason, created_at, started_at, "
                   "finished_at FROM trials WHERE experiment_id = ? ORDER BY number"));
  st->Bind(1, experiment_id);
  std::vector<TrialRow> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    TrialRow t;
    t.experiment_id = st->ColumnInt(0);
    t.number = st->ColumnInt(1);
    KILN_ASSIGN_OR_RETURN(t.state, ParseTrialState(st->ColumnText(2)));
    t.params_json = st->ColumnText(3);
    t.config_json = st->ColumnText(4);
    t.budget = st->ColumnInt(5);
    t.parent = st->ColumnOptionalInt(6);
    t.job_id = st->ColumnOptionalInt(7);
    t.job_ids_json = st->ColumnText(8);
    t.attempts = static_cast<int>(st->ColumnInt(9));
    if (!st->ColumnIsNull(10)) t.value = st->ColumnDouble(10);
    t.intermediate_json = st->ColumnText(11);
    t.reason = st->ColumnText(12);
    t.created_at = st->ColumnInt(13);
    t.started_at = st->ColumnOptionalInt(14);
    t.finished_at = st->ColumnOptionalInt(15);
    out.push_back(std::move(t));
  }
  return out;
}

// ---- artifacts ----

absl::Status SqliteStore::PutArtifacts(int64_t job_id,
                                       const std::vector<ArtifactRecord>& artifacts) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  KILN_ASSIGN_OR_RETURN(SqliteStatement * exists, db_->Prepare("SELECT 1 FROM jobs WHERE id = ?"));
  exists->Bind(1, job_id);
  KILN_ASSIGN_OR_RETURN(bool row, exists->Step());
  exists->Reset();
  if (!row) return absl::NotFoundError(absl::StrCat("no job with id ", job_id));
  KILN_ASSIGN_OR_RETURN(SqliteStatement * clear,
                        db_->Prepare("DELETE FROM job_artifacts WHERE job_id = ?"));
  clear->Bind(1, job_id);
  KILN_RETURN_IF_ERROR(clear->Run());
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("INSERT OR REPLACE INTO job_artifacts (job_id, path, "
                                     "package_id, size, created_at) VALUES (?, ?, ?, ?, ?)"));
  for (const ArtifactRecord& a : artifacts) {
    st->Reset();
    st->Bind(1, job_id).Bind(2, a.path).Bind(3, a.package_id).Bind(4, a.size);
    st->Bind(5, a.created_at);
    KILN_RETURN_IF_ERROR(st->Run());
  }
  return txn.Commit();
}

absl::StatusOr<std::vector<ArtifactRecord>> SqliteStore::ListArtifacts(int64_t job_id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("SELECT path, package_id, size, created_at FROM "
                                     "job_artifacts WHERE job_id = ? ORDER BY path"));
  st->Bind(1, job_id);
  std::vector<ArtifactRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out.push_back(
        {job_id, st->ColumnText(0), st->ColumnText(1), st->ColumnInt(2), st->ColumnInt(3)});
  }
  return out;
}

// ---- models ----

absl::StatusOr<ModelRecord> SqliteStore::CreateModel(ModelRecord m) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("INSERT INTO models (name, user_id, description, "
                                     "created_at) VALUES (?, ?, ?, ?)"));
  st->Bind(1, m.name).Bind(2, m.user_id).Bind(3, m.description).Bind(4, m.created_at);
  absl::Status s = st->Run();
  if (absl::IsAlreadyExists(s)) {
    return absl::AlreadyExistsError(
        absl::StrCat("a model named \"", m.name, "\" already exists; choose another name"));
  }
  KILN_RETURN_IF_ERROR(s);
  m.id = db_->LastInsertRowId();
  return m;
}

absl::StatusOr<ModelRecord> SqliteStore::GetModel(int64_t id) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare(absl::StrCat("SELECT ", kModelColumns,
                                " FROM models m JOIN users u ON u.id = m.user_id WHERE m.id = ?")));
  st->Bind(1, id);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no model with id ", id));
  ModelRecord m = ReadModel(*st);
  st->Reset();
  return m;
}

absl::StatusOr<ModelRecord> SqliteStore::GetModelByName(const std::string& name) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("SELECT ", kModelColumns,
                                                  " FROM models m JOIN users u ON u.id = "
                                                  "m.user_id WHERE m.name = ?")));
  st->Bind(1, name);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no model named \"", name, "\""));
  ModelRecord m = ReadModel(*st);
  st->Reset();
  return m;
}

absl::StatusOr<std::vector<ModelRecord>> SqliteStore::ListModels(std::optional<int64_t> user_id) {
  std::string sql =
      absl::StrCat("SELECT ", kModelColumns, " FROM models m JOIN users u ON u.id = m.user_id");
  if (user_id) sql += " WHERE m.user_id = ?";
  sql += " ORDER BY m.id DESC";
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare(sql));
  if (user_id) st->Bind(1, *user_id);
  std::vector<ModelRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out.push_back(ReadModel(*st));
  }
  return out;
}

absl::StatusOr<std::optional<std::string>> SqliteStore::DeploymentUsing(
    int64_t model_id, std::optional<int64_t> version) {
  // A deployment serves a version as its current one or, during a rollout, on replicas
  // still running the previous one.
  std::string sql =
      "SELECT d.name FROM deployments d WHERE d.model_id = ?1 AND d.state != 'STOPPED' AND "
      "(?2 IS NULL OR d.version = ?2 OR EXISTS (SELECT 1 FROM deployment_replicas r WHERE "
      "r.deployment_id = d.id AND r.version = ?2)) ORDER BY d.id LIMIT 1";
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare(sql));
  st->Bind(1, model_id).Bind(2, version);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  std::optional<std::string> name;
  if (row) name = st->ColumnText(0);
  st->Reset();
  return name;
}

absl::Status SqliteStore::DeleteModel(int64_t id) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  KILN_ASSIGN_OR_RETURN(std::optional<std::string> user, DeploymentUsing(id, std::nullopt));
  if (user) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", id, " is served by deployment \"", *user,
                     "\"; delete the deployment first (DELETE /api/v1/deployments/{id})"));
  }
  // Its versions go with it through ON DELETE CASCADE.
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare("DELETE FROM models WHERE id = ?"));
  st->Bind(1, id);
  KILN_RETURN_IF_ERROR(st->Run());
  if (db_->Changes() == 0) return absl::NotFoundError(absl::StrCat("no model with id ", id));
  return txn.Commit();
}

absl::StatusOr<ModelVersionRecord> SqliteStore::AddModelVersion(ModelVersionRecord v) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * bump,
      db_->Prepare("UPDATE models SET last_version = last_version + 1 WHERE id = ?"));
  bump->Bind(1, v.model_id);
  KILN_RETURN_IF_ERROR(bump->Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("no model with id ", v.model_id));
  }
  KILN_ASSIGN_OR_RETURN(SqliteStatement * get,
                        db_->Prepare("SELECT last_version FROM models WHERE id = ?"));
  get->Bind(1, v.model_id);
  KILN_ASSIGN_OR_RETURN(bool row, get->Step());
  if (!row) return absl::InternalError("model vanished inside its transaction");
  v.version = get->ColumnInt(0);
  get->Reset();
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("INSERT INTO model_versions (", kVersionColumns,
                                                  ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")));
  st->Bind(1, v.model_id).Bind(2, v.version).Bind(3, v.package_id).Bind(4, v.file_name);
  st->Bind(5, v.size).Bind(6, v.signature_json).Bind(7, v.metrics_json).Bind(8, v.lineage_json);
  st->Bind(9, v.created_at);
  KILN_RETURN_IF_ERROR(st->Run());
  KILN_RETURN_IF_ERROR(txn.Commit());
  return v;
}

absl::StatusOr<ModelVersionRecord> SqliteStore::GetModelVersion(int64_t model_id, int64_t version) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("SELECT ", kVersionColumns,
                                                  " FROM model_versions WHERE model_id = ? AND "
                                                  "version = ?")));
  st->Bind(1, model_id).Bind(2, version);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) {
    return absl::NotFoundError(absl::StrCat("model ", model_id, " has no version ", version));
  }
  ModelVersionRecord v = ReadModelVersion(*st);
  st->Reset();
  return v;
}

absl::StatusOr<std::vector<ModelVersionRecord>> SqliteStore::ListModelVersions(int64_t model_id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("SELECT ", kVersionColumns,
                                                  " FROM model_versions WHERE model_id = ? "
                                                  "ORDER BY version")));
  st->Bind(1, model_id);
  std::vector<ModelVersionRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out.push_back(ReadModelVersion(*st));
  }
  return out;
}

absl::Status SqliteStore::DeleteModelVersion(int64_t model_id, int64_t version) {
  KILN_ASSIGN_OR_RETURN(SqliteTransaction txn, SqliteTransaction::Begin(*db_));
  KILN_ASSIGN_OR_RETURN(std::optional<std::string> user, DeploymentUsing(model_id, version));
  if (user) {
    return absl::FailedPreconditionError(
        absl::StrCat("version ", version, " of model ", model_id, " is served by deployment \"",
                     *user, "\"; update the deployment to another version or delete it first"));
  }
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("DELETE FROM model_versions WHERE model_id = ? AND version = ?"));
  st->Bind(1, model_id).Bind(2, version);
  KILN_RETURN_IF_ERROR(st->Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("model ", model_id, " has no version ", version));
  }
  return txn.Commit();
}

// ---- deployments ----

absl::StatusOr<DeploymentRecord> SqliteStore::CreateDeployment(DeploymentRecord d) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("INSERT INTO deployments (name, user_id, model_id, version, state, spec, "
                   "reason, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  st->Bind(1, d.name).Bind(2, d.user_id).Bind(3, d.model_id).Bind(4, d.version);
  st->Bind(5, DeploymentStateName(d.state)).Bind(6, d.spec_json).Bind(7, d.reason);
  st->Bind(8, d.created_at).Bind(9, d.updated_at);
  absl::Status s = st->Run();
  if (absl::IsAlreadyExists(s)) {
    return absl::AlreadyExistsError(
        absl::StrCat("a deployment named \"", d.name, "\" already exists; choose another name"));
  }
  KILN_RETURN_IF_ERROR(s);
  d.id = db_->LastInsertRowId();
  return d;
}

absl::StatusOr<DeploymentRecord> SqliteStore::GetDeployment(int64_t id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("SELECT ", kDeploymentColumns,
                                                  " FROM deployments d JOIN users u ON u.id = "
                                                  "d.user_id WHERE d.id = ?")));
  st->Bind(1, id);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no deployment with id ", id));
  auto d = ReadDeployment(*st);
  st->Reset();
  return d;
}

absl::StatusOr<DeploymentRecord> SqliteStore::GetDeploymentByName(const std::string& name) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare(absl::StrCat("SELECT ", kDeploymentColumns,
                                                  " FROM deployments d JOIN users u ON u.id = "
                                                  "d.user_id WHERE d.name = ?")));
  st->Bind(1, name);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no deployment named \"", name, "\""));
  auto d = ReadDeployment(*st);
  st->Reset();
  return d;
}

absl::StatusOr<std::vector<DeploymentRecord>> SqliteStore::ListDeployments(
    std::optional<int64_t> user_id) {
  std::string sql = absl::StrCat("SELECT ", kDeploymentColumns,
                                 " FROM deployments d JOIN users u ON u.id = d.user_id");
  if (user_id) sql += " WHERE d.user_id = ?";
  sql += " ORDER BY d.id DESC";
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare(sql));
  if (user_id) st->Bind(1, *user_id);
  std::vector<DeploymentRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    KILN_ASSIGN_OR_RETURN(DeploymentRecord d, ReadDeployment(*st));
    out.push_back(std::move(d));
  }
  return out;
}

absl::Status SqliteStore::UpdateDeployment(const DeploymentRecord& d) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("UPDATE deployments SET state = ?, version = ?, spec = ?, "
                                     "reason = ?, updated_at = ? WHERE id = ?"));
  st->Bind(1, DeploymentStateName(d.state)).Bind(2, d.version).Bind(3, d.spec_json);
  st->Bind(4, d.reason).Bind(5, d.updated_at).Bind(6, d.id);
  KILN_RETURN_IF_ERROR(st->Run());
  if (db_->Changes() == 0) return absl::NotFoundError(absl::StrCat("no deployment with id ", d.id));
  return absl::OkStatus();
}

absl::Status SqliteStore::DeleteDeployment(int64_t id) {
  // Its replica rows go with it through ON DELETE CASCADE; the replica jobs stay.
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare("DELETE FROM deployments WHERE id = ?"));
  st->Bind(1, id);
  KILN_RETURN_IF_ERROR(st->Run());
  if (db_->Changes() == 0) return absl::NotFoundError(absl::StrCat("no deployment with id ", id));
  return absl::OkStatus();
}

absl::Status SqliteStore::PutReplica(const ReplicaRecord& r) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("INSERT OR REPLACE INTO deployment_replicas (deployment_id, job_id, version, "
                   "address, ready_at) VALUES (?, ?, ?, ?, ?)"));
  st->Bind(1, r.deployment_id).Bind(2, r.job_id).Bind(3, r.version).Bind(4, r.address);
  st->Bind(5, r.ready_at);
  absl::Status s = st->Run();
  // The only constraint a well-formed row can break is the deployment's foreign key.
  if (absl::IsFailedPrecondition(s)) {
    return absl::NotFoundError(absl::StrCat("no deployment with id ", r.deployment_id));
  }
  return s;
}

absl::StatusOr<std::vector<ReplicaRecord>> SqliteStore::ListReplicas(int64_t deployment_id) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("SELECT job_id, version, address, ready_at FROM "
                   "deployment_replicas WHERE deployment_id = ? ORDER BY job_id"));
  st->Bind(1, deployment_id);
  std::vector<ReplicaRecord> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out.push_back(
        {deployment_id, st->ColumnInt(0), st->ColumnInt(1), st->ColumnText(2), st->ColumnInt(3)});
  }
  return out;
}

absl::Status SqliteStore::DeleteReplica(int64_t deployment_id, int64_t job_id) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare("DELETE FROM deployment_replicas WHERE deployment_id = ? AND job_id = ?"));
  st->Bind(1, deployment_id).Bind(2, job_id);
  return st->Run();
}

// ---- dialect objects ----

absl::Status SqliteStore::PutDialectObject(const DialectObject& o) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare(absl::StrCat("INSERT OR REPLACE INTO dialect_objects (", kDialectColumns,
                                ") VALUES (?, ?, ?, ?, ?, ?, ?)")));
  st->Bind(1, o.kind).Bind(2, o.id).Bind(3, o.user_id).Bind(4, o.space_id).Bind(5, o.body_json);
  st->Bind(6, o.created_at).Bind(7, o.updated_at);
  return st->Run();
}

absl::StatusOr<DialectObject> SqliteStore::GetDialectObject(const std::string& kind,
                                                            const std::string& id) {
  KILN_ASSIGN_OR_RETURN(
      SqliteStatement * st,
      db_->Prepare(absl::StrCat("SELECT ", kDialectColumns,
                                " FROM dialect_objects WHERE kind = ? AND id = ?")));
  st->Bind(1, kind).Bind(2, id);
  KILN_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no ", kind, " with id \"", id, "\""));
  DialectObject o = ReadDialectObject(*st);
  st->Reset();
  return o;
}

absl::StatusOr<std::vector<DialectObject>> SqliteStore::ListDialectObjects(
    const std::string& kind, std::optional<int64_t> user_id, std::optional<std::string> space_id) {
  std::string sql =
      absl::StrCat("SELECT ", kDialectColumns, " FROM dialect_objects WHERE kind = ?1");
  if (user_id) sql += " AND user_id = ?2";
  if (space_id) sql += " AND space_id = ?3";
  sql += " ORDER BY created_at, id";
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st, db_->Prepare(sql));
  st->Bind(1, kind);
  if (user_id) st->Bind(2, *user_id);
  if (space_id) st->Bind(3, *space_id);
  std::vector<DialectObject> out;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    out.push_back(ReadDialectObject(*st));
  }
  return out;
}

absl::Status SqliteStore::DeleteDialectObject(const std::string& kind, const std::string& id) {
  KILN_ASSIGN_OR_RETURN(SqliteStatement * st,
                        db_->Prepare("DELETE FROM dialect_objects WHERE kind = ? AND id = ?"));
  st->Bind(1, kind).Bind(2, id);
  KILN_RETURN_IF_ERROR(st->Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("no ", kind, " with id \"", id, "\""));
  }
  return absl::OkStatus();
}

}  // namespace kiln::store
