#include "hub/pg_mirror.hpp"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/clock.hpp"
#include "config/config_loader.hpp"
#include "storage/hybrid_clock.hpp"
#include "storage/store.hpp"

namespace fieldsync::hub {

namespace {

// The layout of the tables; a database holding a later version is not written to.
constexpr int kSchemaVersion = 1;
// A mirror with nothing to do looks again this often (new projects, a dropped connection).
constexpr std::chrono::milliseconds kIdleRecheck{30000};

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
struct CancelDeleter {
  void operator()(PGcancel* c) const { PQfreeCancel(c); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;
using CancelPtr = std::unique_ptr<PGcancel, CancelDeleter>;

// A failed statement: the server's message and SQLSTATE (empty when the connection failed).
struct PgError {
  std::string message;
  std::string sqlstate;
  // Class 22 (data exception) and 54 (program limit exceeded): the input, not the server.
  bool about_data() const { return sqlstate.rfind("22", 0) == 0 || sqlstate.rfind("54", 0) == 0; }
};

std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

std::string json_string(std::string_view s) {
  return boost::json::serialize(boost::json::string(s));
}

Result<std::string> read_password(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in)
    return make_error(Errc::invalid_argument, "mirror.password_file: cannot read " + file.string());
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

}  // namespace

std::string redacted_conninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (err) PQfreemem(err);
  if (!opts) return "(unparsable connection string)";
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (!o->val || std::string_view(o->keyword) == "password") continue;
    if (!out.empty()) out += ' ';
    std::string v = o->val;
    bool quote = v.empty() || v.find_first_of(" '\\") != std::string::npos;
    out += o->keyword;
    out += '=';
    if (quote) {
      out += '\'';
      for (char c : v) {
        if (c == '\'' || c == '\\') out += '\\';
        out += c;
      }
      out += '\'';
    } else {
      out += v;
    }
  }
  PQconninfoFree(opts);
  return out;
}

struct PgMirror::Impl {
  storage::Store& store;
  config::MirrorOptions opt;
  std::string schema;  // quoted identifier
  std::string database;
  std::vector<std::string> only;  // project ids to mirror; empty = all
  DeviceId me;

  // Worker state (worker thread only).
  ConnPtr conn;
  struct Claim {
    bool claimed = false;
    std::uint64_t seq = 0;
  };
  std::map<std::string, Claim> claims;  // by project id, reset on every connection

  // Shared state.
  mutable std::mutex mu;
  std::condition_variable cv;
  bool dirty = true;
  bool stopping = false;
  CancelPtr cancel;  // of the running connection
  MirrorStatus st;
  std::map<std::string, MirrorProjectStatus> projects;
  int wake_fd = -1;  // eventfd: interrupts a connect in progress
  std::thread worker;

  Impl(storage::Store& s, config::MirrorOptions o) : store(s), opt(std::move(o)) {}

  // --- status ---
  void set_state(const std::string& state, const std::string& message) {
    std::lock_guard lk(mu);
    st.state = state;
    st.message = message;
  }
  void failed(const std::string& what, std::int64_t retry_at) {
    std::lock_guard lk(mu);
    st.state = "retrying";
    st.message = "PostgreSQL is unreachable or refused a statement; retrying";
    st.last_error = what;
    st.last_error_ms = unix_ms();
    st.next_retry_ms = retry_at;
    ++st.failures;
  }
  MirrorProjectStatus& project_status(const std::string& id) {
    auto& p = projects[id];
    p.project = id;
    return p;
  }

  // --- libpq ---
  Result<ResultPtr> run(const char* sql, const std::vector<std::string>& params, PgError* err) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p.c_str());
    ResultPtr r(PQexecParams(conn.get(), sql, static_cast<int>(values.size()), nullptr,
                             values.data(), nullptr, nullptr, 0));
    auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return r;
    PgError e;
    e.message = one_line(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn.get()));
    if (e.message.empty()) e.message = one_line(PQerrorMessage(conn.get()));
    const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
    if (state) e.sqlstate = state;
    if (err) *err = e;
    return make_error(Errc::unavailable, "PostgreSQL: " + e.message);
  }
  Status exec(const std::string& sql, const std::vector<std::string>& params = {},
              PgError* err = nullptr) {
    auto r = run(sql.c_str(), params, err);
    if (!r) return r.error();
    return {};
  }
  Result<ResultPtr> query(const std::string& sql, const std::vector<std::string>& params) {
    return run(sql.c_str(), params, nullptr);
  }

  // Connects without blocking stop(): polls the socket and the wake-up descriptor.
  Status connect() {
    std::string password;
    if (!opt.password_file.empty()) {
      auto pw = read_password(opt.password_file);
      if (!pw) return pw.error();
      password = std::move(*pw);
    }
    std::vector<const char*> keys{"dbname", "application_name", "keepalives_idle",
                                  "keepalives_interval", "keepalives_count"};
    std::vector<const char*> vals{opt.postgres.c_str(), "fieldsyncd", "60", "10", "6"};
    if (!opt.password_file.empty()) {
      keys.push_back("password");
      vals.push_back(password.c_str());
    }
    keys.push_back(nullptr);
    vals.push_back(nullptr);
    ConnPtr c(PQconnectStartParams(keys.data(), vals.data(), 1));
    if (!c) return make_error(Errc::resource_exhausted, "PostgreSQL: out of memory");
    auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(opt.connect_timeout_ms);
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    while (PQstatus(c.get()) != CONNECTION_BAD) {
      if (ps == PGRES_POLLING_OK) break;
      if (ps == PGRES_POLLING_FAILED) break;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0)
        return make_error(Errc::unavailable,
                          "PostgreSQL: no connection within mirror.connect_timeout_ms (" +
                              std::to_string(opt.connect_timeout_ms) + " ms)");
      pollfd fds[2] = {{PQsocket(c.get()),
                        static_cast<short>(ps == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0},
                       {wake_fd, POLLIN, 0}};
      int n = ::poll(fds, 2, static_cast<int>(std::min<long long>(left, 1000)));
      {
        std::lock_guard lk(mu);
        if (stopping) return make_error(Errc::unavailable, "stopping");
      }
      if (n <= 0 || !(fds[0].revents)) continue;
      ps = PQconnectPoll(c.get());
    }
    if (PQstatus(c.get()) != CONNECTION_OK)
      return make_error(Errc::unavailable, "PostgreSQL: " + one_line(PQerrorMessage(c.get())));
    conn = std::move(c);
    {
      std::lock_guard lk(mu);
      cancel.reset(PQgetCancel(conn.get()));
    }
    claims.clear();
    FS_TRY(exec("SET statement_timeout = " + std::to_string(opt.statement_timeout_ms)));
    FS_TRY(exec("SET client_encoding = 'UTF8'"));
    return create_tables();
  }

  void disconnect() {
    {
      std::lock_guard lk(mu);
      cancel.reset();
    }
    conn.reset();
    claims.clear();
  }

  // The tables, created when missing; several daemons may do this at once (advisory lock).
  Status create_tables() {
    const std::string& s = schema;
    std::string ddl =
        "BEGIN;"
        "SELECT pg_advisory_xact_lock(hashtext('fieldsync mirror tables'));"
        "CREATE SCHEMA IF NOT EXISTS " +
        s +
        ";"
        "CREATE TABLE IF NOT EXISTS " +
        s +
        ".meta (key text PRIMARY KEY, value text NOT NULL);"
        "INSERT INTO " +
        s + ".meta VALUES ('schema_version', '" + std::to_string(kSchemaVersion) +
        "') ON CONFLICT (key) DO NOTHING;"
        "CREATE TABLE IF NOT EXISTS " +
        s +
        ".projects ("
        " project text PRIMARY KEY, name text NOT NULL, device text NOT NULL,"
        " seq bigint NOT NULL DEFAULT 0, mirrored_at timestamptz NOT NULL DEFAULT now());"
        "CREATE TABLE IF NOT EXISTS " +
        s +
        ".documents ("
        " project text NOT NULL, collection text NOT NULL, id text NOT NULL, body jsonb,"
        " deleted boolean NOT NULL, conflict boolean NOT NULL, version text NOT NULL,"
        " heads text[] NOT NULL, author text NOT NULL, updated_at timestamptz NOT NULL,"
        " seq bigint NOT NULL, body_error text,"
        " mirrored_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (project, collection, id));"
        "CREATE INDEX IF NOT EXISTS documents_updated_at ON " +
        s +
        ".documents (project, collection, updated_at);"
        "CREATE OR REPLACE VIEW " +
        s +
        ".current_documents AS"
        " SELECT d.project, p.name AS project_name, d.collection, d.id, d.body, d.conflict,"
        " d.updated_at, d.author FROM " +
        s + ".documents d JOIN " + s +
        ".projects p USING (project) WHERE NOT d.deleted;"
        "COMMIT;";
    ResultPtr r(PQexec(conn.get(), ddl.c_str()));
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      std::string msg = one_line(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn.get()));
      ResultPtr rb(PQexec(conn.get(), "ROLLBACK"));
      return make_error(Errc::unavailable, "PostgreSQL: creating the mirror tables: " + msg);
    }
    auto v = query("SELECT value FROM " + s + ".meta WHERE key = 'schema_version'", {});
    if (!v) return v.error();
    int found = PQntuples(v->get()) == 1 ? std::atoi(PQgetvalue(v->get(), 0, 0)) : 0;
    if (found != kSchemaVersion)
      return make_error(Errc::unsupported, "PostgreSQL: the tables in schema " + opt.schema +
                                               " are version " + std::to_string(found) +
                                               "; this fieldsyncd writes version " +
                                               std::to_string(kSchemaVersion));
    return {};
  }

  // --- mirroring ---
  Result<std::vector<storage::ProjectInfo>> selected_projects() {
    auto all = store.list_projects();
    if (!all) return all.error();
    if (only.empty()) return all;
    std::vector<storage::ProjectInfo> out;
    for (const auto& id : only) {
      auto it = std::find_if(all->begin(), all->end(),
                             [&](const storage::ProjectInfo& p) { return p.id.str() == id; });
      if (it != all->end()) {
        out.push_back(*it);
      } else {
        std::lock_guard lk(mu);
        project_status(id).problem = "not on this device";
      }
    }
    return out;
  }

  // Takes the project's row (or finds it is another device's). False: not ours to mirror.
  Result<bool> claim(const storage::ProjectInfo& p, Claim& c) {
    const std::string id = p.id.str();
    FS_TRY(exec("INSERT INTO " + schema +
                    ".projects (project, name, device) VALUES ($1, $2, $3)"
                    " ON CONFLICT (project) DO NOTHING",
                {id, p.name, me.str()}));
    auto r = query("SELECT device, seq FROM " + schema + ".projects WHERE project = $1", {id});
    if (!r) return r.error();
    if (PQntuples(r->get()) != 1)
      return make_error(Errc::unavailable, "PostgreSQL: the project row vanished");
    std::string device = PQgetvalue(r->get(), 0, 0);
    std::uint64_t seq = std::strtoull(PQgetvalue(r->get(), 0, 1), nullptr, 10);
    std::uint64_t start = seq;
    if (device != me.str()) {
      auto change = store.last_identity_change();
      if (!change || change->previous.str() != device) {
        std::string problem = "mirrored into this database by device " + device +
                              "; one device mirrors a project (delete its row in " + opt.schema +
                              ".projects to move the mirror here)";
        std::lock_guard lk(mu);
        project_status(id).problem = problem;
        return false;
      }
      spdlog::info(
          "mirror: project {} was mirrored by this device's previous identity; "
          "mirroring it again from the start",
          id);
      start = 0;
    }
    auto feed = store.last_change_seq(p.id);
    if (!feed) return feed.error();
    if (start > *feed) {
      spdlog::warn(
          "mirror: project {} is mirrored up to change {} but this device's changes end at {} "
          "(its data was restored from an older copy); mirroring it again from the start",
          id, start, *feed);
      start = 0;
    }
    if (start != seq || device != me.str()) {
      auto u = query("UPDATE " + schema +
                         ".projects SET device = $2, seq = $3, mirrored_at = now()"
                         " WHERE project = $1 AND device = $4 AND seq = $5",
                     {id, me.str(), std::to_string(start), device, std::to_string(seq)});
      if (!u) return u.error();
      if (std::string_view(PQcmdTuples(u->get())) != "1")
        return make_error(Errc::unavailable, "PostgreSQL: the project row changed meanwhile");
    }
    FS_TRY(exec("UPDATE " + schema +
                    ".projects SET name = $2 WHERE project = $1 AND name IS DISTINCT FROM $2",
                {id, p.name}));
    c.claimed = true;
    c.seq = start;
    std::lock_guard lk(mu);
    auto& ps = project_status(id);
    ps.problem.clear();
    ps.mirrored_seq = start;
    return true;
  }

  // One row of the batch as JSON (jsonb_to_recordset's input); `with_body` false writes a
  // null body (used for a body PostgreSQL refused).
  static void append_row(std::string& out, const storage::DocumentState& d, bool with_body) {
    out += "{\"collection\":" + json_string(d.collection) + ",\"id\":" + json_string(d.doc_id);
    out += ",\"body\":";
    if (with_body && d.body && !d.deleted)
      out += *d.body;
    else
      out += "null";
    out += d.deleted ? ",\"deleted\":true" : ",\"deleted\":false";
    out += d.in_conflict() ? ",\"conflict\":true" : ",\"conflict\":false";
    out += ",\"version\":\"" + d.winner.str() + "\",\"heads\":[";
    for (std::size_t i = 0; i < d.heads.size(); ++i) {
      if (i) out += ',';
      out += '"' + d.heads[i].str() + '"';
    }
    out += "],\"author\":\"" + d.author.str() +
           "\",\"time_ms\":" + std::to_string(storage::HybridClock::physical_ms(d.hlc)) +
           ",\"seq\":" + std::to_string(d.local_seq) + "}";
  }

  std::string upsert_sql() const {
    return "INSERT INTO " + schema +
           ".documents AS d (project, collection, id, body, deleted, conflict, version, heads,"
           " author, updated_at, seq, body_error)"
           " SELECT $1, r.collection, r.id, r.body, r.deleted, r.conflict, r.version, r.heads,"
           " r.author, to_timestamp(r.time_ms / 1000.0), r.seq, NULLIF($3, '')"
           " FROM jsonb_to_recordset($2::jsonb) AS r(collection text, id text, body jsonb,"
           " deleted boolean, conflict boolean, version text, heads text[], author text,"
           " time_ms bigint, seq bigint)"
           " ON CONFLICT (project, collection, id) DO UPDATE SET body = EXCLUDED.body,"
           " deleted = EXCLUDED.deleted, conflict = EXCLUDED.conflict,"
           " version = EXCLUDED.version, heads = EXCLUDED.heads, author = EXCLUDED.author,"
           " updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq,"
           " body_error = EXCLUDED.body_error, mirrored_at = now()";
  }

  // Writes the rows and moves the position from c.seq to `to`, in one transaction.
  // Returns how many bodies PostgreSQL refused (those rows are written without a body).
  // Rows of `gone` (documents no longer held here: erased) are deleted in the same transaction.
  Result<std::uint64_t> write(const std::string& id, Claim& c,
                              const std::vector<storage::DocumentState>& docs,
                              const std::vector<std::pair<std::string, std::string>>& gone,
                              std::uint64_t to) {
    std::string batch = "[";
    for (std::size_t i = 0; i < docs.size(); ++i) {
      if (i) batch += ',';
      append_row(batch, docs[i], true);
    }
    batch += ']';
    const std::string upsert = upsert_sql();
    std::uint64_t refused = 0;
    FS_TRY(exec("BEGIN"));
    PgError err;
    auto whole = exec(upsert, {id, batch, {}}, &err);
    if (!whole) {
      (void)exec("ROLLBACK");
      if (!err.about_data()) return whole.error();
      // One body PostgreSQL cannot hold (jsonb refuses \u0000, for one) must not hold up the
      // rest: row by row, a refused body is written as null with the reason.
      FS_TRY(exec("BEGIN"));
      for (const auto& d : docs) {
        std::string one = "[";
        append_row(one, d, true);
        one += ']';
        FS_TRY(exec("SAVEPOINT row"));
        PgError row_err;
        auto r = exec(upsert, {id, one, {}}, &row_err);
        if (!r) {
          if (!row_err.about_data()) {
            (void)exec("ROLLBACK");
            return r.error();
          }
          FS_TRY(exec("ROLLBACK TO SAVEPOINT row"));
          std::string bare = "[";
          append_row(bare, d, false);
          bare += ']';
          auto b = exec(upsert, {id, bare, row_err.message});
          if (!b) {
            (void)exec("ROLLBACK");
            return b.error();
          }
          ++refused;
          spdlog::warn("mirror: PostgreSQL refused the body of {}/{} in project {}: {}",
                       d.collection, d.doc_id, id, row_err.message);
        }
        FS_TRY(exec("RELEASE SAVEPOINT row"));
      }
    }
    if (!gone.empty()) {
      std::string keys = "[";
      for (std::size_t i = 0; i < gone.size(); ++i) {
        if (i) keys += ',';
        keys += "{\"collection\":" + json_string(gone[i].first) +
                ",\"id\":" + json_string(gone[i].second) + "}";
      }
      keys += ']';
      auto del = exec("DELETE FROM " + schema +
                          ".documents AS d USING jsonb_to_recordset($2::jsonb) AS r(collection"
                          " text, id text) WHERE d.project = $1 AND d.collection = r.collection"
                          " AND d.id = r.id",
                      {id, keys});
      if (!del) {
        (void)exec("ROLLBACK");
        return del.error();
      }
    }
    auto u = query("UPDATE " + schema +
                       ".projects SET seq = $3, mirrored_at = now()"
                       " WHERE project = $1 AND device = $2 AND seq = $4",
                   {id, me.str(), std::to_string(to), std::to_string(c.seq)});
    if (!u || std::string_view(PQcmdTuples(u->get())) != "1") {
      (void)exec("ROLLBACK");
      c.claimed = false;
      if (!u) return u.error();
      return make_error(Errc::unavailable,
                        "PostgreSQL: project " + id + "'s row was changed by someone else");
    }
    FS_TRY(exec("COMMIT"));
    c.seq = to;
    return refused;
  }

  // One batch of every selected project. True: more is waiting.
  Result<bool> round() {
    {
      std::lock_guard lk(mu);
      dirty = false;
    }
    auto list = selected_projects();
    if (!list) return list.error();
    bool more = false;
    bool behind = false;
    for (const auto& p : *list) {
      const std::string id = p.id.str();
      Claim& c = claims[id];
      if (!c.claimed) {
        auto ok = claim(p, c);
        if (!ok) return ok.error();
        if (!*ok) continue;
      }
      auto changes = store.changes_since(p.id, c.seq, opt.batch_changes);
      if (!changes) return changes.error();
      auto feed = store.last_change_seq(p.id);
      if (!feed) return feed.error();
      if (!changes->empty()) {
        std::set<std::pair<std::string, std::string>> seen;
        std::vector<storage::DocumentState> docs;
        std::vector<std::pair<std::string, std::string>> gone;
        for (const auto& ch : *changes) {
          if (!ch.collection.empty() && ch.collection[0] == '_') continue;  // reserved
          if (!seen.emplace(ch.collection, ch.doc_id).second) continue;
          auto d = store.get_document(p.id, ch.collection, ch.doc_id);
          if (!d) {
            // In the feed but no longer held here: erased (a mirror holds all, so nothing
            // else takes a document away). Its row goes too.
            if (d.error().code == Errc::not_found) {
              gone.emplace_back(ch.collection, ch.doc_id);
              continue;
            }
            return d.error();
          }
          docs.push_back(std::move(*d));
        }
        std::uint64_t to = changes->back().seq;
        auto refused = write(id, c, docs, gone, to);  // no rows (reserved only): the position moves
        if (!refused) return refused.error();
        std::lock_guard lk(mu);
        auto& ps = project_status(id);
        ps.mirrored_seq = to;
        ps.rows_written += docs.size();
        ps.rows_deleted += gone.size();
        ps.last_commit_ms = unix_ms();
        st.rows_written += docs.size();
        st.rows_deleted += gone.size();
        st.bodies_refused += *refused;
        ++st.transactions;
      }
      {
        std::lock_guard lk(mu);
        project_status(id).feed_seq = *feed;
      }
      if (c.seq < *feed) {
        behind = true;
        more = more || !changes->empty();
      }
    }
    set_state(behind ? "catching_up" : "current",
              behind ? "writing changes into PostgreSQL" : "PostgreSQL has every change");
    return more;
  }

  // Waits for a change, stop(), or `ms`. False when stopping.
  bool wait(std::chrono::milliseconds ms, bool for_change) {
    std::unique_lock lk(mu);
    cv.wait_for(lk, ms, [&] { return stopping || (for_change && dirty); });
    return !stopping;
  }

  void run() {
    auto backoff = std::chrono::milliseconds(opt.retry_min_ms);
    while (true) {
      {
        std::lock_guard lk(mu);
        if (stopping) break;
      }
      Status step = {};
      if (!conn) {
        set_state("connecting", "connecting to " + database);
        step = connect();
        if (step) spdlog::info("mirror: connected to PostgreSQL ({})", database);
      }
      Result<bool> more = false;
      if (step) {
        more = round();
        if (!more) step = more.error();
      }
      if (!step) {
        {
          std::lock_guard lk(mu);
          if (stopping) break;
        }
        auto retry_at = unix_ms() + backoff.count();
        failed(step.error().message, retry_at);
        spdlog::warn("mirror: {}; retrying in {} ms", step.error().message, backoff.count());
        disconnect();
        if (!wait(backoff, false)) break;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(opt.retry_max_ms));
        continue;
      }
      backoff = std::chrono::milliseconds(opt.retry_min_ms);
      {
        std::lock_guard lk(mu);
        st.next_retry_ms = 0;
      }
      if (*more) continue;
      if (!wait(kIdleRecheck, true)) break;
    }
    disconnect();
  }
};

Result<std::unique_ptr<PgMirror>> PgMirror::create(storage::Store& store,
                                                   const config::MirrorOptions& options) {
  auto impl = std::make_unique<Impl>(store, options);
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(options.postgres.c_str(), &err);
  if (!opts) {
    std::string msg = err ? one_line(err) : "out of memory";
    if (err) PQfreemem(err);
    return make_error(Errc::invalid_argument, "mirror.postgres: " + msg);
  }
  PQconninfoFree(opts);
  if (!options.password_file.empty()) {
    auto pw = read_password(options.password_file);
    if (!pw) return pw.error();
  }
  impl->schema = "\"" + options.schema + "\"";  // config checked: [a-z_][a-z0-9_]*
  impl->database = redacted_conninfo(options.postgres);
  if (options.projects != "all") impl->only = config::split_project_list(options.projects);
  impl->me = store.device_id();
  impl->st.database = impl->database;
  impl->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl->wake_fd < 0) return make_error(Errc::internal, "mirror: eventfd failed");
  return std::unique_ptr<PgMirror>(new PgMirror(std::move(impl)));
}

PgMirror::PgMirror(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PgMirror::~PgMirror() {
  stop();
  if (impl_->wake_fd >= 0) ::close(impl_->wake_fd);
}

void PgMirror::start() {
  if (impl_->worker.joinable()) return;
  impl_->set_state("connecting", "starting");
  impl_->worker = std::thread([im = impl_.get()] { im->run(); });
}

void PgMirror::notify() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->dirty = true;
  }
  impl_->cv.notify_one();
}

MirrorStatus PgMirror::status() const {
  MirrorStatus out;
  {
    std::lock_guard lk(impl_->mu);
    out = impl_->st;
    for (const auto& [id, p] : impl_->projects) out.projects.push_back(p);
  }
  // The feed's end as of now, also while PostgreSQL is away.
  for (auto& p : out.projects) {
    auto id = ProjectId::parse(p.project);
    if (!id) continue;
    if (auto feed = impl_->store.last_change_seq(*id)) p.feed_seq = *feed;
  }
  return out;
}

void PgMirror::stop() {
  if (!impl_->worker.joinable()) return;
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
    if (impl_->cancel) {
      char err[256];
      PQcancel(impl_->cancel.get(), err, sizeof err);  // a statement in progress ends now
    }
  }
  std::uint64_t one = 1;
  if (::write(impl_->wake_fd, &one, sizeof one) < 0) {
    // The connect loop also re-checks `stopping` every second.
  }
  impl_->cv.notify_all();
  impl_->worker.join();
  std::lock_guard lk(impl_->mu);
  impl_->st.state = "off";
  impl_->st.message = "stopped";
}

}  // namespace fieldsync::hub
