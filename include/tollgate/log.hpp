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
///    connections (another server of its group was tried), a TLS handshake
///    with an upstream server that failed (and why), a listener that
///    cannot accept (out of descriptors) or is at client.max_connections,
///    a second SIGTERM/SIGINT that cuts the drain short, a SIGHUP ignored
///    while draining;
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
#include <limits>
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
/// accept, a full connection table, a dead upstream server): one line per
/// `interval` from all threads together, the next naming how many it kept
/// quiet.
class throttled_warning {
public:
    explicit throttled_warning(std::chrono::steady_clock::duration interval)
        : interval_(interval) {}

    /// Any thread.
    void warn(std::string_view text) {
        const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
        auto last = last_.load(std::memory_order_relaxed);
        // Of threads due at once, the one whose exchange wins writes the line.
        if ((last != never && now - last < interval_.count()) ||
            !last_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
            quiet_.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        std::string line(text);
        if (const auto quiet = quiet_.exchange(0, std::memory_order_relaxed); quiet > 0) {
            line += " (" + std::to_string(quiet) + " more since the last such line)";
        }
        log_line(log_level::warn, line);
    }

private:
    using rep = std::chrono::steady_clock::rep;
    static constexpr rep never = std::numeric_limits<rep>::min();
    std::chrono::steady_clock::duration interval_;
    std::atomic<rep> last_{never};
    std::atomic<std::uint64_t> quiet_{0};
};

}  // namespace tollgate
