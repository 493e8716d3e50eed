#include "daemon/logging.hpp"

#include <unistd.h>

#include <cstdlib>
#include <memory>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "systemd/sd_notify.hpp"

namespace fieldsync::daemon {

namespace {
// "%*" -> sd-daemon priority prefix, so journald records the right level.
class JournalPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    int prio = 6;
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: prio = 7; break;
      case spdlog::level::info: prio = 6; break;
      case spdlog::level::warn: prio = 4; break;
      case spdlog::level::err: prio = 3; break;
      case spdlog::level::critical: prio = 2; break;
      default: break;
    }
    const char text[] = {'<', static_cast<char>('0' + prio), '>'};
    dest.append(text, text + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JournalPriority>();
  }
};
}  // namespace

Status setup_logging(const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    return make_error(Errc::invalid_argument, "daemon.log_level: unknown level '" + level +
                                                  "' (trace, debug, info, warn, error)");
  std::shared_ptr<spdlog::logger> logger;
  if (systemd::stderr_is_journal() ||
      (std::getenv("JOURNAL_STREAM") && *std::getenv("JOURNAL_STREAM"))) {
    logger = std::make_shared<spdlog::logger>("fieldsyncd",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<JournalPriority>('*').set_pattern("%*%v");
    logger->set_formatter(std::move(f));
  } else {
    if (::isatty(2))
      logger = std::make_shared<spdlog::logger>(
          "fieldsyncd", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    else
      logger = std::make_shared<spdlog::logger>("fieldsyncd",
                                                std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  return {};
}

}  // namespace fieldsync::daemon
