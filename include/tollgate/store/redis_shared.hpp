#pragma once
/// @file redis_shared.hpp
/// What the per-worker Redis stores of one process share: their metrics and
/// whether any of them is deciding without Redis. Held by server::gateway
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
/// Thread-safety: every member may be called from any thread.

#include <array>
#include <atomic>
#include <cstddef>
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

    /// A worker starts (`true`) or stops (`false`) deciding without Redis.
    /// Logs the process-wide transitions on stderr (unless `log` is false:
    /// a store shutting down is not Redis coming back).
    void worker_fallback(bool entering, bool log = true);
    /// True while at least one worker decides without Redis.
    bool fallback() const noexcept { return fallback_workers_.load() > 0; }

private:
    std::once_flag attached_;
    std::array<prometheus::Counter*, static_cast<std::size_t>(redis_error_kind::count_)> errors_{};
    prometheus::Histogram* duration_ = nullptr;
    std::atomic<int> fallback_workers_{0};
};

}  // namespace tollgate::store
