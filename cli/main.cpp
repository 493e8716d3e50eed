// syncctl: the command-line client of fieldsyncd's local API (Unix socket).
//   syncctl [--socket PATH | --data-dir DIR] [--json] COMMAND [ARGS...]
// The socket: --socket, else $FIELDSYNC_SOCKET, else the daemon's default for --data-dir
// (/run/fieldsync/api.sock as root, <data_dir>/api.sock otherwise).
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

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

// `syncctl COMMAND --help`: every form of that command and what it does.
void print_command_help(std::ostream& out, const std::string& name) {
  for (const auto& c : fieldsync::cli::command_registry())
    if (c.name == name) out << "usage: syncctl " << c.usage << "\n\n" << c.summary << "\n";
  out << "\nglobal options: [--socket PATH | --data-dir DIR] [--json]; exit codes: 0 ok, 1 "
         "error from fieldsyncd, 2 usage error, 3 fieldsyncd unreachable\n";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fieldsync;
  std::vector<std::string> rest;
  std::string socket, data_dir;
  bool json = false, help = false, version = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto take = [&](std::string& out) {
      if (auto eq = a.find('='); eq != std::string::npos) {
        out = a.substr(eq + 1);
        return true;
      }
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    if (a == "--json") {
      json = true;
    } else if (a == "--help" || a == "-h" || (rest.empty() && a == "help")) {
      help = true;
    } else if (a == "--version" && rest.empty()) {
      version = true;
    } else if (a == "--socket" || a.rfind("--socket=", 0) == 0) {
      if (!take(socket)) {
        std::cerr << "syncctl: --socket needs a path\n";
        return cli::kUsage;
      }
    } else if (a == "--data-dir" || a.rfind("--data-dir=", 0) == 0) {
      if (!take(data_dir)) {
        std::cerr << "syncctl: --data-dir needs a directory\n";
        return cli::kUsage;
      }
    } else {
      rest.push_back(a);
    }
  }
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
    print_command_help(std::cout, rest.front());
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
