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
///    connections (another server of its group was tried);
///  * `error`: a reload that failed, a fatal error.
///
/// Not filtered: the startup line ("listening on ..."), which names the bound
/// ports and is written once, and the access log (stdout, `log.access_log`).
///
/// Thread-safety: any thread. Each line is one write, so lines from several
/// workers do not interleave.

#include <atomic>
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

}  // namespace tollgate
