#pragma once
/// @file algorithms.hpp
/// The four rate-limit algorithms of DESIGN.md section 3, as pure functions
/// over a 16-byte state. No locking, no clock, no allocation: the caller
/// passes `now` and owns the state (see rate_limiter.hpp for the shared map).
///
/// Arithmetic is exact: integers in nanoseconds, scaled by `limit` where an
/// emission interval (window / limit) is not a whole number of nanoseconds,
/// with 128-bit intermediates. There is no floating point, so nothing drifts
/// however long a bucket lives.
///
/// Boundary rule for gcra, token_bucket and fixed_window: capacity comes
/// back at the exact nanosecond it is due. With `limit = 1, window = 1s`,
/// after a request at t = 0 a request at 999 ms is refused (`retry_after` =
/// 1 ms) and one at 1000 ms is allowed. sliding_window weighs the previous
/// window's count by the share of it the sliding window still covers, so
/// there a request at exactly 1000 ms is still refused (the weight is 1) and
/// capacity comes back as that weight decays.
///
/// Header contract (all algorithms agree):
///  * `decision::limit` is the configured `limit`, never the burst. With
///    `burst > limit` (gcra, token_bucket) `remaining` may therefore exceed
///    `limit`; it is the truth about what would pass right now.
///  * `remaining` counts requests that would still pass at `now` after this
///    one; never negative.
///  * `reset` is the time until the state is back to fresh (as if the key had
///    never been seen). For gcra/token_bucket that is the time for the bucket
///    to refill completely (100 ms after one request at 600/60s); for the
///    window algorithms it is the end of the window(s) holding requests.
///  * `retry_after` is 0 when allowed, else the time until the next request
///    would be allowed.
///  * A refused request changes nothing (it consumes no capacity).
///
/// Thread-safety: all functions are reentrant; a `bucket_state` must not be
/// used from two threads at once without external locking.

#include <chrono>
#include <cstdint>

#include "tollgate/config/config.hpp"

namespace tollgate::limit {

/// Which algorithm and how much: `limit` requests per `window`.
struct bucket_policy {
    algorithm_kind algorithm = algorithm_kind::gcra;
    std::uint64_t limit = 600;
    std::chrono::nanoseconds window = std::chrono::seconds{60};
    /// Largest instantaneous burst for gcra/token_bucket; 0 = `limit`.
    /// The window algorithms ignore it (their burst is `limit` per window).
    std::uint64_t burst = 0;
};

/// `burst` with its default applied: `limit` when 0. Two policies that
/// differ only in an unset burst and one equal to the limit are the same
/// bucket, so everything that names a bucket by its policy (rate_limiter's
/// hash, the Redis key) uses this, not `burst`.
constexpr std::uint64_t effective_burst(const bucket_policy& p) noexcept {
    return p.burst == 0 ? p.limit : p.burst;
}

/// Outcome of one request against one bucket.
struct decision {
    bool allowed = false;
    /// The policy's configured `limit` (`X-RateLimit-Limit`).
    std::uint64_t limit = 0;
    /// Requests that would still pass right now, after this one.
    std::uint64_t remaining = 0;
    /// Time until the bucket is fully back to its fresh state.
    std::chrono::nanoseconds reset{0};
    /// Time until the next request would pass; 0 when `allowed`.
    std::chrono::nanoseconds retry_after{0};
    /// The policy's window, for `RateLimit-Policy: ...;w=`.
    std::chrono::nanoseconds window{0};
};

/// Per-key state. Its meaning depends on the algorithm:
///  * gcra: `time` = theoretical arrival time (whole ns), `value` = its
///    fraction in 1/limit ns;
///  * token_bucket: `time` = last refill, `value` = tokens missing, in units
///    of 1/window token;
///  * fixed_window: `time` = window start, `value` = requests in it;
///  * sliding_window: `time` = current window start (a multiple of the
///    window since the clock's epoch), `value` = previous count << 32 | current.
///
/// A value-initialised state is fresh for every algorithm at any `now >= 0`.
struct bucket_state {
    std::int64_t time = 0;
    std::uint64_t value = 0;
};
static_assert(sizeof(bucket_state) == 16);

/// Charges one request at `now` if the policy allows it and says so.
/// On refusal `state` keeps its meaning (it may be normalised, e.g. a window
/// rolled forward, but no capacity is taken). A policy with `limit == 0`
/// refuses everything with `retry_after = window`.
///
/// Degenerate inputs are clamped rather than rejected (the config loader
/// rejects them first, config/loader.cpp check_bucket_range): `window <= 0`
/// counts as 1 ns; for token_bucket, `burst * window` is capped at 2^64-1
/// ns; sliding_window caps `limit` at 2^32-1. A `now` earlier than the
/// state's (rate_limiter reads the clock before it takes the lock, so two
/// threads can pass times a few microseconds out of order) is no error:
/// token_bucket treats it as no time passed; the others compute with it as
/// given, which counts the request as that much earlier (its retry_after
/// grows by the step).
decision check(bucket_state& state, const bucket_policy& policy,
               std::chrono::nanoseconds now) noexcept;

/// True when `state` carries no information at `now`: a fresh state would
/// make exactly the same decisions, so the entry can be dropped.
/// Equivalent to `now >= now_at_check + check(...).reset`.
bool is_fresh(const bucket_state& state, const bucket_policy& policy,
              std::chrono::nanoseconds now) noexcept;

}  // namespace tollgate::limit
