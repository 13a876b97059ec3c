// sqlite.h
//
// A thin RAII layer over the SQLite C API: `SqliteDb` owns a connection and caches
// prepared statements; `SqliteStatement` binds, steps and reads columns. Errors come back
// as Status with SQLite's message. Used only by the SQLite implementation of `Store`.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::store {

// One prepared statement, reset and cleared on every `Reset()`. Not thread-safe.
class SqliteStatement {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~SqliteStatement();
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  // Parameters are 1-based, as in SQLite.
  SqliteStatement& Bind(int index, int64_t value);
  SqliteStatement& Bind(int index, int value) { return Bind(index, int64_t{value}); }
  SqliteStatement& Bind(int index, double value);
  SqliteStatement& Bind(int index, std::string_view value);
  SqliteStatement& Bind(int index, const char* value) {
    return Bind(index, std::string_view(value));
  }
  SqliteStatement& Bind(int index, const std::string& value) {
    return Bind(index, std::string_view(value));
  }
  SqliteStatement& BindNull(int index);
  template <typename T>
  SqliteStatement& Bind(int index, const std::optional<T>& value) {
    return value ? Bind(index, *value) : BindNull(index);
  }

  // Advances: true when a row is ready, false when done. Errors (constraint violations
  // included) are returned with SQLite's message; UNIQUE violations map to AlreadyExists.
  absl::StatusOr<bool> Step();
  // Steps to completion, for statements that return no rows.
  absl::Status Run();
  void Reset();

  int64_t ColumnInt(int col) const;
  double ColumnDouble(int col) const;
  std::string ColumnText(int col) const;
  bool ColumnIsNull(int col) const;
  std::optional<int64_t> ColumnOptionalInt(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

// A connection with WAL, foreign keys and a busy timeout. Not thread-safe: its owner
// serializes access.
class SqliteDb {
 public:
  // Opens (creating if needed) the database at `path`; ":memory:" for a private one.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path);
  ~SqliteDb();

  // Runs one or more statements without results (DDL, pragmas, BEGIN/COMMIT).
  absl::Status Exec(std::string_view sql);
  // Returns the cached prepared statement for `sql`, reset and ready to bind. The
  // reference stays valid for the life of the connection.
  absl::StatusOr<SqliteStatement*> Prepare(const std::string& sql);
  int64_t LastInsertRowId() const;
  int Changes() const;

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::unordered_map<std::string, std::unique_ptr<SqliteStatement>> statements_;
};

// RAII transaction: BEGIN IMMEDIATE on construction via `Begin`, ROLLBACK on destruction
// unless `Commit()` succeeded. Every state change in Kiln is one such transaction.
class SqliteTransaction {
 public:
  static absl::StatusOr<SqliteTransaction> Begin(SqliteDb& db);
  SqliteTransaction(SqliteTransaction&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  SqliteTransaction& operator=(SqliteTransaction&&) = delete;
  ~SqliteTransaction();
  absl::Status Commit();

 private:
  explicit SqliteTransaction(SqliteDb* db) : db_(db) {}
  SqliteDb* db_;
};

}  // namespace kiln::store
