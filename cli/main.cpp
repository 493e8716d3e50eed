// syncctl: the command-line client of fieldsyncd's local API (Unix socket).
//   syncctl [--socket PATH | --data-dir DIR] [--json] COMMAND [ARGS...]
// The socket: --socket, else $FIELDSYNC_SOCKET, else the daemon's default for --data-dir
// (/run/fieldsync/api.sock as root, <data_dir>/api.sock otherwise).
#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "cli/command.hpp"
#include "ipc/api_paths.hpp"

namespace {

void print_help(std::ostream& out) {
  out << "usage: syncctl [--socket PATH | --data-dir DIR] [--json] COMMAND [ARGS...]\n"
         "   or: syncctl COMMAND --help | help [COMMAND] | --version\n\n"
         "commands:\n";
  for (const auto& c : fieldsync::cli::command_registry())
    out << "  " << c.usage << "\n      " << c.summary << "\n";
  out << "\nexit codes: 0 ok, 1 error from fieldsyncd, 2 usage error, 3 fieldsyncd unreachable\n"
         "PROJECT is a project id or a unique project name.\n";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fieldsync;
  namespace po = boost::program_options;
  // The global options, wherever they stand (before or after the command); everything else
  // (the command, its arguments and options) is passed on in order, and so is all from "--" on.
  po::options_description global("global options");
  global.add_options()
      // clang-format off
      ("socket", po::value<std::string>()->value_name("PATH"), "the daemon's API socket")
      ("data-dir", po::value<std::string>()->value_name("DIR"),
       "the daemon's data directory (its default socket)")
      ("json", "print the daemon's JSON instead of tables")
      ("help", "help (also -h)")
      ("version", "print the version");
  // clang-format on
  std::vector<std::string> words(argv + 1, argv + argc), tail;
  if (auto dd = std::find(words.begin(), words.end(), "--"); dd != words.end()) {
    tail.assign(dd, words.end());
    words.erase(dd, words.end());
  }
  std::replace(words.begin(), words.end(), std::string("-h"), std::string("--help"));
  std::vector<std::string> rest;
  std::string socket, data_dir;
  bool json = false, help = false, version = false;
  try {
    auto parsed = po::command_line_parser(words)
                      .options(global)
                      .style(po::command_line_style::allow_long |
                             po::command_line_style::long_allow_adjacent |
                             po::command_line_style::long_allow_next)
                      .allow_unregistered()
                      .run();
    for (const auto& o : parsed.options) {
      if (o.unregistered || o.position_key != -1) {
        rest.insert(rest.end(), o.original_tokens.begin(), o.original_tokens.end());
      } else if (o.string_key == "socket") {
        socket = o.value.front();
      } else if (o.string_key == "data-dir") {
        data_dir = o.value.front();
      } else if (o.string_key == "json") {
        json = true;
      } else if (o.string_key == "help") {
        help = true;
      } else if (o.string_key == "version") {
        // After a command, --version is that command's (unknown) option.
        if (rest.empty())
          version = true;
        else
          rest.insert(rest.end(), o.original_tokens.begin(), o.original_tokens.end());
      }
    }
  } catch (const po::error& e) {
    std::cerr << "syncctl: " << e.what() << "\n";
    return cli::kUsage;
  }
  if (!rest.empty() && rest.front() == "help") {
    help = true;
    rest.erase(rest.begin());
  }
  rest.insert(rest.end(), tail.begin(), tail.end());
  if (version) {
    std::cout << "syncctl " << FIELDSYNC_VERSION << "\n";
    return cli::kOk;
  }
  if (help && !rest.empty()) {
    if (!cli::find_command(rest.front()).run) {
      std::cerr << "syncctl: unknown command '" << rest.front() << "'\n";
      print_help(std::cerr);
      return cli::kUsage;
    }
    cli::print_command_help(std::cout, cli::find_command(rest.front()));
    return cli::kOk;
  }
  if (help || rest.empty()) {
    print_help(help ? std::cout : std::cerr);
    return help ? cli::kOk : cli::kUsage;
  }
  if (socket.empty()) {
    if (const char* env = std::getenv("FIELDSYNC_SOCKET"); env && *env && data_dir.empty()) {
      socket = env;
    } else {
      socket = ipc::default_socket_path(data_dir.empty() ? ipc::default_data_dir()
                                                         : std::filesystem::path(data_dir))
                   .string();
    }
  }
  const cli::Command& cmd = cli::find_command(rest.front());
  if (!cmd.run) {
    std::cerr << "syncctl: unknown command '" << rest.front() << "'\n";
    print_help(std::cerr);
    return cli::kUsage;
  }
  cli::CliContext ctx{cli::UnixHttpClient(socket), json, std::cout, std::cerr, {}, {}};
  try {
    return cmd.run(ctx, std::vector<std::string>(rest.begin() + 1, rest.end()));
  } catch (const std::exception& e) {
    // A reply without the expected members (e.g. a daemon of another version).
    std::cerr << "syncctl: unexpected reply from fieldsyncd: " << e.what() << "\n";
    return cli::kDaemonError;
  }
}
