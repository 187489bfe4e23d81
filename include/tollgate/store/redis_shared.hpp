#pragma once
/// @file redis_shared.hpp
/// What the per-worker Redis stores of one process share: their metrics and
/// whether Redis was last found unreachable. Held by server::gateway
/// (member `redis`); inert until a Redis store attaches, so memory mode
/// registers nothing.
///
/// Metrics (registered once, in the gateway's prometheus registry):
///  * `tollgate_store_errors_total{kind}`: `connect` (a connection attempt or
///    its AUTH/SELECT/SCRIPT LOAD failed), `connection` (an established
///    connection was lost, or dropped because Redis stopped answering),
///    `timeout` (a decision took longer than `store.redis.timeout`),
///    `reply` (Redis answered a decision with an error), `noscript` (a script
///    was missing and was loaded again).
///  * `tollgate_store_duration_seconds`: round trip of each decision script,
///    late answers included.
///  * `tollgate_store_fallback` (0/1) is read from `fallback()` by the
///    gateway's gauge snapshot (admin::gauge_values::store_fallback).
///
/// Fallback is the last outcome any worker saw, not a count of workers
/// deciding locally: a worker only looks at Redis when it has a request, so
/// an idle worker's view goes stale. One worker deciding in Redis again
/// proves Redis is back for all of them (the gauge drops to 0 and "reachable
/// again" is logged at once, even if the other workers see no traffic); one
/// worker failing again proves it is gone. A connection or an answered PING
/// proves nothing: a replica (READONLY) or a full Redis (OOM) takes both.
/// An idle worker still waiting out its back-off (or, after flapping, its
/// hold) may decide its next requests locally for up to `backoff_max` (or
/// `flap_hold_max`) after the gauge went to 0.
///
/// Changes are logged on stderr ("redis unreachable; ...", "redis reachable
/// again; ..."), at most one "unreachable" line per `log_interval` (each
/// followed by its "reachable again" line): a Redis flapping between the
/// two (latency around the timeout, several workers disagreeing) cannot
/// flood the log. The next line says how many changes went unlogged. A
/// change back to "unreachable" left unlogged is written by the first report
/// after the interval, so the last line matches the gauge again as long as
/// workers keep reporting (they do while they see requests).
///
/// Thread-safety: every member may be called from any thread.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace tollgate::store {

enum class redis_error_kind : std::uint8_t {
    connect,
    connection,
    timeout,
    reply,
    noscript,
    count_
};

std::string_view to_string(redis_error_kind kind);

class redis_shared {
public:
    redis_shared() = default;
    redis_shared(const redis_shared&) = delete;
    redis_shared& operator=(const redis_shared&) = delete;

    /// Registers the metric families in `registry`; only the first call does.
    void attach(prometheus::Registry& registry);

    /// Counts one error (no-op before attach).
    void error(redis_error_kind kind);
    /// Records one script round trip (no-op before attach).
    void observe_duration(double seconds);
    /// Errors counted so far (tests).
    double errors(redis_error_kind kind) const;

    /// A worker found Redis unusable (`true`: an attempt failed, a decision
    /// timed out or the node refused it; reported again on each new failure)
    /// or deciding for it again (`false`: a decision answered in time).
    /// The latest report of any worker wins; a change is logged on stderr
    /// (at most one pair of lines per `log_interval`, see above).
    /// Cheap when nothing changes (two atomic loads).
    void report_fallback(bool fallback);
    /// The same, at `now` (tests drive the log interval with it).
    void report_fallback(bool fallback, std::chrono::steady_clock::time_point now);
    /// True while the latest report says Redis is unusable.
    bool fallback() const noexcept { return fallback_.load(); }

    static constexpr std::chrono::seconds log_interval{10};

private:
    std::once_flag attached_;
    std::array<prometheus::Counter*, static_cast<std::size_t>(redis_error_kind::count_)> errors_{};
    prometheus::Histogram* duration_ = nullptr;
    /// Guards the change of `fallback_` together with the log state.
    std::mutex fallback_mutex_;
    std::atomic<bool> fallback_{false};
    /// `fallback_` differs from what the last line said: a line is due.
    std::atomic<bool> unlogged_{false};
    bool logged_ = false;  ///< what the last line said (false: none yet, or reachable)
    bool any_unreachable_line_ = false;
    std::chrono::steady_clock::time_point last_unreachable_line_{};
    std::uint64_t unlogged_changes_ = 0;
};

}  // namespace tollgate::store
