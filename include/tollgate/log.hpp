#pragma once
/// @file log.hpp
/// tollgate's diagnostic lines on stderr, filtered by `log.level`.
///
/// A line is written when its level is at least the configured one
/// (`debug < info < warn < error`). main sets the level from the config at
/// startup and again on each SIGHUP reload that loads; until then it is
/// `info`, the default. What each level carries:
///  * `info`: configuration reloaded, draining, stopped, Redis reachable again;
///  * `warn`: settings changed that apply only on restart, Redis unreachable
///    or misbehaving (the store falls back), an upstream server refusing
///    connections (another server of its group was tried), a listener that
///    cannot accept (out of descriptors) or is at client.max_connections;
///  * `error`: a reload that failed, a fatal error.
///
/// Not filtered: the startup line ("listening on ..."), which names the bound
/// ports and is written once, and the access log (stdout, `log.access_log`).
///
/// Thread-safety: any thread. Each line is one write, so lines from several
/// workers do not interleave.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <string_view>

#include "tollgate/config/config.hpp"

namespace tollgate {

namespace detail {
inline std::atomic<log_level> current_log_level{log_level::info};
}  // namespace detail

/// Lines below `level` are dropped from now on.
inline void set_log_level(log_level level) noexcept {
    detail::current_log_level.store(level, std::memory_order_relaxed);
}

/// True when a line at `level` would be written.
inline bool log_enabled(log_level level) noexcept {
    return level >= detail::current_log_level.load(std::memory_order_relaxed);
}

/// Writes "tollgate: <text>\n" to stderr when `level` is enabled.
inline void log_line(log_level level, std::string_view text) {
    if (!log_enabled(level)) {
        return;
    }
    std::string line;
    line.reserve(text.size() + 11);
    line.append("tollgate: ").append(text).push_back('\n');
    std::cerr << line;
}

/// A warning about a condition that may repeat at network speed (a failing
/// accept, a full connection table): one line per `interval`, the next
/// naming how many it kept quiet. One thread's, like the loop it watches.
class throttled_warning {
public:
    explicit throttled_warning(std::chrono::steady_clock::duration interval)
        : interval_(interval) {}

    void warn(std::string_view text) {
        const auto now = std::chrono::steady_clock::now();
        if (logged_ && now - last_ < interval_) {
            ++quiet_;
            return;
        }
        std::string line(text);
        if (quiet_ > 0) {
            line += " (" + std::to_string(quiet_) + " more since the last such line)";
        }
        log_line(log_level::warn, line);
        logged_ = true;
        last_ = now;
        quiet_ = 0;
    }

private:
    std::chrono::steady_clock::duration interval_;
    std::chrono::steady_clock::time_point last_{};
    bool logged_ = false;
    std::uint64_t quiet_ = 0;
};

}  // namespace tollgate
