#include "cli/command.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>

#include <boost/json/serialize.hpp>
#include <boost/program_options.hpp>

#include "common/json_parse.hpp"
#include "common/text.hpp"

namespace fieldsync::cli {

namespace json = boost::json;

std::vector<Command>& command_registry() {
  static std::vector<Command> commands;
  return commands;
}

const Command& find_command(const std::string& name) {
  for (const auto& c : command_registry())
    if (c.name == name) return c;
  static const Command none;
  return none;
}

namespace {

namespace po = boost::program_options;

// The table of a command's options as Boost.Program_options sees it.
po::options_description describe(const Command& cmd) {
  po::options_description d("options", 100, 40);
  for (const auto& o : cmd.options) {
    if (o.value_name.empty())
      d.add_options()(o.name.c_str(), o.help.c_str());
    else
      d.add_options()(o.name.c_str(),
                      po::value<std::vector<std::string>>()->value_name(o.value_name),
                      o.help.c_str());
  }
  return d;
}

}  // namespace

void print_command_help(std::ostream& out, const Command& cmd) {
  out << "usage: syncctl " << cmd.usage << "\n\n" << cmd.summary << "\n";
  if (!cmd.options.empty()) out << "\n" << describe(cmd);
  out << "\nglobal options: [--socket PATH | --data-dir DIR] [--json]; exit codes: 0 ok, 1 "
         "error from fieldsyncd, 2 usage error, 3 fieldsyncd unreachable\n";
}

Result<Args> Args::parse(const std::vector<std::string>& argv, const Command& cmd) {
  // Long options only ("-" and "-5" are arguments), spelled out (no abbreviations).
  constexpr int kStyle = po::command_line_style::allow_long |
                         po::command_line_style::long_allow_adjacent |
                         po::command_line_style::long_allow_next;
  constexpr const char* kPositional = "positional arguments";
  po::options_description options = describe(cmd);
  options.add_options()(kPositional, po::value<std::vector<std::string>>());
  po::positional_options_description positional;
  positional.add(kPositional, -1);
  po::parsed_options parsed(&options);
  try {
    parsed =
        po::command_line_parser(argv).options(options).positional(positional).style(kStyle).run();
  } catch (const po::error& e) {
    return make_error(Errc::invalid_argument, e.what());
  }
  Args a;
  for (const auto& o : parsed.options) {
    if (o.string_key == kPositional) {
      a.positional_.insert(a.positional_.end(), o.value.begin(), o.value.end());
    } else if (options.find(o.string_key, false).semantic()->max_tokens() == 0) {
      a.flags_.insert(o.string_key);
    } else {
      for (const auto& v : o.value) a.values_.emplace(o.string_key, v);
    }
  }
  return a;
}

std::optional<std::string> Args::value(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Args::values(const std::string& name) const {
  std::vector<std::string> out;
  auto [b, e] = values_.equal_range(name);
  for (auto it = b; it != e; ++it) out.push_back(it->second);
  return out;
}

int CliContext::call(const std::string& method, const std::string& target, const std::string& body,
                     json::value& reply) {
  return handle_reply(http.request(method, target, body), reply);
}

int CliContext::handle_reply(const Result<HttpReply>& r, json::value& reply) {
  reply = nullptr;
  if (!r) {
    err << "syncctl: " << r.error().message << "\n";
    return r.error().code == Errc::unavailable || r.error().code == Errc::permission_denied
               ? kUnreachable
               : kDaemonError;
  }
  if (r->status < 400 && r->body.empty()) return kOk;
  boost::system::error_code ec;
  reply = parse_json(r->body, ec);
  last_body = ec ? std::string() : r->body;
  last_reply = ec ? json::value() : reply;
  if (r->status >= 400) {
    if (json) {
      out << escape_for_terminal(r->body) << "\n";
    } else if (!ec && reply.is_object() && reply.as_object().contains("message")) {
      err << "syncctl: " << str(reply.at("message")) << " (" << str(reply.at("error")) << ", HTTP "
          << r->status << ")\n";
    } else {
      err << "syncctl: fieldsyncd answered HTTP " << r->status << "\n";
    }
    return kDaemonError;
  }
  if (ec) {
    err << "syncctl: fieldsyncd sent invalid JSON: " << ec.message() << "\n";
    return kDaemonError;
  }
  return kOk;
}

void CliContext::print_json(const json::value& reply) {
  // The daemon's own text when `reply` is its last answer: numbers exactly as it sent them
  // (a big integer in a document body keeps every digit).
  if (!last_body.empty() && reply == last_reply)
    out << escape_json_for_terminal(last_body) << "\n";
  else
    out << json_text(reply) << "\n";
}

int CliContext::resolve_project(const std::string& name_or_id, std::string& id) {
  bool hex = name_or_id.size() == 32 &&
             std::all_of(name_or_id.begin(), name_or_id.end(),
                         [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  if (hex) {
    id = name_or_id;
    return kOk;
  }
  json::value reply;
  if (int rc = call("GET", "/v1/projects", {}, reply)) return rc;
  std::vector<std::string> matches;
  for (const auto& p : reply.at("projects").as_array())
    if (p.at("name").as_string() == name_or_id)
      matches.push_back(std::string(p.at("id").as_string()));
  if (matches.size() == 1) {
    id = matches.front();
    return kOk;
  }
  err << "syncctl: " << (matches.empty() ? "no project named '" : "several projects are named '")
      << name_or_id << "'" << (matches.empty() ? "" : "; use the project id") << "\n";
  return kDaemonError;
}

int CliContext::resolve_version(const std::string& doc, const std::string& given,
                                std::string& version) {
  const bool hex = std::all_of(given.begin(), given.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) &&
           !std::isupper(static_cast<unsigned char>(c));
  });
  if (hex && given.size() == 64) {
    version = given;
    return kOk;
  }
  if (!hex || given.size() < 4 || given.size() > 64) {
    err << "syncctl: '" << escape_for_terminal(given)
        << "' is not a version id (64 lowercase hex digits, or at least the first 4)\n";
    return kUsage;
  }
  std::set<std::string> found;
  json::value reply;
  if (int rc = call("GET", doc, {}, reply)) return rc;
  for (const auto& h : reply.at("heads").as_array())
    if (h.as_string().starts_with(given)) found.insert(std::string(h.as_string()));
  if (found.empty()) {
    if (int rc = call("GET", doc + "/history?limit=1000", {}, reply)) return rc;
    for (const auto& h : reply.at("versions").as_array())
      if (h.at("version").as_string().starts_with(given))
        found.insert(std::string(h.at("version").as_string()));
  }
  if (found.size() == 1) {
    version = *found.begin();
    return kOk;
  }
  err << "syncctl: "
      << (found.empty() ? "no version of this document starts with '"
                        : "several versions of this document start with '")
      << given << "'" << (found.empty() ? "" : "; give more digits") << "\n";
  return kDaemonError;
}

std::string utc_time(const boost::json::value& ms) {
  if (!ms.is_int64() && !ms.is_uint64()) return "-";
  std::time_t t = static_cast<std::time_t>(ms.to_number<std::int64_t>() / 1000);
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

void print_table(std::ostream& out, const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(headers.size());
  for (std::size_t i = 0; i < headers.size(); ++i) width[i] = headers[i].size();
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (std::size_t i = 0; i < headers.size(); ++i) {
      std::string c = i < cells.size() ? cells[i] : "";
      s += c;
      if (i + 1 < headers.size()) s += std::string(width[i] - c.size() + 2, ' ');
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out << s << "\n";
  };
  line(headers);
  for (const auto& r : rows) line(r);
}

Result<double> seconds_arg(const std::optional<std::string>& text, double fallback) {
  if (!text) return fallback;
  double s = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), s);
  if (ec != std::errc{} || end != text->data() + text->size() || !(s >= 0 && s <= 1e9))
    return make_error(Errc::invalid_argument, "--timeout needs seconds, not '" + *text + "'");
  return s;
}

int usage_error(CliContext& ctx, const Command& cmd, const std::string& message) {
  ctx.err << "syncctl: " << message << "\nusage: syncctl " << cmd.usage << "\n";
  return kUsage;
}

std::string str(const json::value& v) {
  if (v.is_string()) return escape_for_terminal(v.as_string());
  if (v.is_null()) return "-";
  return json_text(v);
}

namespace {

// JSON text with numbers in their shortest round-trip spelling (7.1, not 7.1E0).
void write_json(std::string& out, const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_: {
      double d = v.get_double();
      if (!std::isfinite(d)) {  // a number beyond a double's range: still JSON that reads so
        out += d < 0 ? "-1e999" : "1e999";
        return;
      }
      char buf[64];
      auto r = std::to_chars(buf, buf + sizeof buf, d);
      std::string_view t(buf, static_cast<std::size_t>(r.ptr - buf));
      out += t;
      // Keep it a floating-point number when read back (7.0 stays 7.0, not 7).
      if (t.find_first_of(".eEn") == std::string_view::npos) out += ".0";
      return;
    }
    case json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& kv : v.get_object()) {
        if (!first) out += ',';
        first = false;
        out += json::serialize(json::string(kv.key()));
        out += ':';
        write_json(out, kv.value());
      }
      out += '}';
      return;
    }
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& x : v.get_array()) {
        if (!first) out += ',';
        first = false;
        write_json(out, x);
      }
      out += ']';
      return;
    }
    default: out += json::serialize(v);
  }
}

}  // namespace

std::string escape_json_for_terminal(std::string_view in) {
  // JSON escapes C0 controls in strings; DEL and C1 controls (which some terminals obey) too.
  std::string out;
  out.reserve(in.size());
  static constexpr char hex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < in.size(); ++i) {
    auto c = static_cast<unsigned char>(in[i]);
    if (c == 0x7f) {
      out += "\\u007f";
    } else if (c == 0xc2 && i + 1 < in.size() && static_cast<unsigned char>(in[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(in[i + 1]) <= 0x9f) {
      auto d = static_cast<unsigned char>(in[++i]);
      out += "\\u00";
      out += hex[d >> 4];
      out += hex[d & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string json_text(const json::value& v) {
  std::string in;
  write_json(in, v);
  return escape_json_for_terminal(in);
}

std::string short_id(const std::string& id, std::size_t n) {
  return id.size() <= n ? id : id.substr(0, n);
}

std::string human_bytes(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

Result<std::string> read_json_arg(const std::string& arg) {
  std::string text;
  if (arg == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else if (!arg.empty() && arg.front() == '@') {
    std::ifstream in(arg.substr(1));
    if (!in) return make_error(Errc::invalid_argument, "cannot read " + arg.substr(1));
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    text = arg;
  }
  boost::system::error_code ec;
  auto v = parse_json(text, ec);
  if (ec || !v.is_object())
    return make_error(Errc::invalid_argument, "expected a JSON object, got: " + text.substr(0, 80));
  return text;
}

}  // namespace fieldsync::cli
