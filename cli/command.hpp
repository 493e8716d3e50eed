// syncctl's command framework. A command is one file that defines its handler and registers it
// with FIELDSYNC_CLI_COMMAND; add the file to cli/CMakeLists.txt and it appears in `syncctl help`.
//
// Exit codes (docs/api.md "syncctl"): 0 ok, 1 the daemon answered with an error,
// 2 usage error, 3 the daemon is unreachable (not running, permission denied).
// Single-threaded.
#pragma once

#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/json/value.hpp>

#include "cli/unix_http_client.hpp"

namespace fieldsync::cli {

enum ExitCode { kOk = 0, kDaemonError = 1, kUsage = 2, kUnreachable = 3 };

// Positional arguments and --options of one command.
class Args {
 public:
  // `value_options` take a value (--limit 5 / --limit=5); other --options are flags.
  // Options listed in `repeatable` may appear several times.
  static Result<Args> parse(const std::vector<std::string>& argv,
                            const std::set<std::string>& value_options,
                            const std::set<std::string>& flag_options);
  const std::vector<std::string>& positional() const { return positional_; }
  std::optional<std::string> value(const std::string& name) const;
  std::vector<std::string> values(const std::string& name) const;
  bool flag(const std::string& name) const { return flags_.count(name) > 0; }

 private:
  std::vector<std::string> positional_;
  std::multimap<std::string, std::string> values_;
  std::set<std::string> flags_;
};

struct CliContext {
  UnixHttpClient http;
  bool json = false;  // --json: print the daemon's JSON instead of tables
  std::ostream& out;
  std::ostream& err;

  // Calls the API. On success stores the parsed reply in `reply` and returns kOk; otherwise
  // prints the error and returns the exit code.
  int call(const std::string& method, const std::string& target, const std::string& body,
           boost::json::value& reply);
  // Like call(), for an answer obtained another way (upload(), download()): prints its error
  // and returns the exit code. A 2xx answer without a body (a download) leaves `reply` null.
  int handle_reply(const Result<HttpReply>& r, boost::json::value& reply);
  // Prints `reply` as JSON (for --json): the daemon's exact text when it is the last reply.
  void print_json(const boost::json::value& reply);
  // The last answer's body as the daemon sent it, and its parse (for print_json and for
  // printing members exactly: ipc::raw_member(last_body, ...)).
  std::string last_body;
  boost::json::value last_reply;
  // A project given by id or by (unique) name -> its id; prints the error otherwise.
  int resolve_project(const std::string& name_or_id, std::string& id);
  // A version of the document at `doc` (its API path) given whole (64 hex) or by a unique
  // prefix of at least 4 hex digits, as syncctl prints them (short_id): looked up among its
  // heads and its latest history page. Prints the error otherwise.
  int resolve_version(const std::string& doc, const std::string& given, std::string& version);
};

struct Command {
  std::string name;
  std::string usage;    // e.g. "docs get PROJECT COLLECTION ID"
  std::string summary;  // one line for `syncctl help`
  std::function<int(CliContext&, const std::vector<std::string>&)> run;
};

std::vector<Command>& command_registry();
struct CommandRegistrar {
  explicit CommandRegistrar(Command c) { command_registry().push_back(std::move(c)); }
};
#define FIELDSYNC_CLI_CONCAT2(a, b) a##b
#define FIELDSYNC_CLI_CONCAT(a, b) FIELDSYNC_CLI_CONCAT2(a, b)
#define FIELDSYNC_CLI_COMMAND(...)                                                         \
  static ::fieldsync::cli::CommandRegistrar FIELDSYNC_CLI_CONCAT(cli_command_, __LINE__) { \
    __VA_ARGS__                                                                            \
  }

// Prints rows as an aligned table under `headers`.
// A unix-ms time as "2026-11-30 18:04:47Z" (UTC); "-" for anything but a number.
std::string utc_time(const boost::json::value& ms);

void print_table(std::ostream& out, const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows);
// Usage error for `cmd`: prints the message and usage, returns kUsage.
int usage_error(CliContext& ctx, const Command& cmd, const std::string& message);
const Command& find_command(const std::string& name);

// Helpers for rendering JSON values in tables.
// Everything the daemon sends is shown through these two: control characters are escaped,
// never written to the terminal.
std::string str(const boost::json::value& v);        // strings unquoted (escaped), others as JSON
std::string json_text(const boost::json::value& v);  // JSON, with DEL and C1 controls as \u00XX
// JSON text (as received) made safe for a terminal: DEL and C1 controls as \u00XX.
std::string escape_json_for_terminal(std::string_view text);
std::string short_id(const std::string& id, std::size_t n = 12);
// A byte count for people: "512 B", "3.4 MiB".
std::string human_bytes(std::uint64_t n);
// Reads a JSON argument: the text itself, "-" for stdin, or "@file".
Result<std::string> read_json_arg(const std::string& arg);

}  // namespace fieldsync::cli
