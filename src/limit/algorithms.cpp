#include "tollgate/limit/algorithms.hpp"

#include <algorithm>
#include <limits>

namespace tollgate::limit {
namespace {

// 128 bits hold limit * window * burst-sized products without overflow
// (the pedantic-clean way to name GCC's __int128).
__extension__ using i128 = __int128;

using std::chrono::nanoseconds;

constexpr i128 int64_max = std::numeric_limits<std::int64_t>::max();
constexpr i128 int64_min = std::numeric_limits<std::int64_t>::min();
constexpr i128 uint64_max = std::numeric_limits<std::uint64_t>::max();
constexpr i128 uint32_max = std::numeric_limits<std::uint32_t>::max();

i128 clamp_int64(i128 v) {
    return std::clamp(v, int64_min, int64_max);
}

nanoseconds to_ns(i128 v) {
    return nanoseconds{static_cast<std::int64_t>(clamp_int64(v))};
}

std::uint64_t to_u64(i128 v) {
    return static_cast<std::uint64_t>(std::clamp(v, i128{0}, uint64_max));
}

bool fits_int64(i128 v) {
    return v >= int64_min && v <= int64_max;
}

/// Truncating division, b > 0. The operands nearly always fit 64 bits, and a
/// 64-bit divide is several times cheaper than the 128-bit library call.
i128 div(i128 a, i128 b) {
    if (fits_int64(a) && fits_int64(b)) {
        return static_cast<std::int64_t>(a) / static_cast<std::int64_t>(b);
    }
    return a / b;
}

/// Floor division, b > 0, for a possibly negative numerator (times before the
/// epoch only occur with a manual clock set below zero, but stay correct there).
i128 floor_div(i128 a, i128 b) {
    const i128 q = div(a, b);
    return q * b > a ? q - 1 : q;
}

/// Ceiling division for b > 0; durations round up so that "reset" and
/// "retry_after" never promise capacity a nanosecond early.
i128 ceil_div(i128 a, i128 b) {
    return a <= 0 ? 0 : div(a + b - 1, b);
}

/// The policy with defaults applied and degenerate values clamped.
struct params {
    i128 limit;
    i128 window;  // ns, >= 1
    i128 burst;   // requests, >= limit's default
};

params normalise(const bucket_policy& p) {
    const i128 window = std::max<i128>(p.window.count(), 1);
    const i128 burst = p.burst == 0 ? i128{p.limit} : i128{p.burst};
    return {i128{p.limit}, window, burst};
}

decision refuse_all(const params& p) {
    decision d;
    d.allowed = false;
    d.retry_after = to_ns(p.window);
    d.window = to_ns(p.window);
    return d;
}

// ---- gcra / token_bucket ---------------------------------------------------
// Both keep "backlog": capacity currently in use, in units where one request
// is `window` and the bucket drains `limit` units per nanosecond. The bucket
// holds `burst * window` units. GCRA stores it as a theoretical arrival time,
// the token bucket as (last refill, missing tokens); the decisions are the same.

decision decide_backlog(i128 backlog, const params& p, bool& allowed_out) {
    const i128 capacity = p.burst * p.window;
    decision d;
    d.window = to_ns(p.window);
    if (backlog + p.window <= capacity) {
        const i128 after = backlog + p.window;
        d.allowed = true;
        d.remaining = to_u64(div(capacity - after, p.window));
        d.reset = to_ns(ceil_div(after, p.limit));
    } else {
        d.allowed = false;
        d.remaining = to_u64(div(capacity - backlog, p.window));
        d.reset = to_ns(ceil_div(backlog, p.limit));
        d.retry_after = to_ns(ceil_div(backlog + p.window - capacity, p.limit));
    }
    allowed_out = d.allowed;
    return d;
}

i128 gcra_tat(const bucket_state& s, const params& p) {
    // A fraction >= limit can only come from a state written under a larger
    // limit (config reload); clamping keeps the error below 1 ns.
    const i128 frac = std::min<i128>(s.value, p.limit - 1);
    return i128{s.time} * p.limit + frac;
}

decision check_gcra(bucket_state& s, const params& p, i128 now) {
    const i128 now_scaled = now * p.limit;
    const i128 base = std::max(gcra_tat(s, p), now_scaled);
    bool allowed = false;
    decision d = decide_backlog(base - now_scaled, p, allowed);
    if (allowed) {
        // Clamp so a huge burst/limit ratio cannot push the stored time past int64.
        const i128 tat = std::min(base + p.window, int64_max * p.limit);
        const i128 whole = floor_div(tat, p.limit);
        s.time = static_cast<std::int64_t>(whole);
        s.value = static_cast<std::uint64_t>(tat - whole * p.limit);
    }
    return d;
}

bool fresh_gcra(const bucket_state& s, const params& p, i128 now) {
    return gcra_tat(s, p) <= now * p.limit;
}

i128 token_capacity(const params& p) {
    return std::min(p.burst * p.window, uint64_max);
}

i128 token_backlog(const bucket_state& s, const params& p, i128 now) {
    const i128 elapsed = std::max<i128>(now - s.time, 0);
    const i128 missing = std::min<i128>(s.value, token_capacity(p));
    return std::max<i128>(missing - elapsed * p.limit, 0);
}

decision check_token_bucket(bucket_state& s, const params& p, i128 now) {
    params capped = p;
    // Keep burst * window within the 64-bit state.
    capped.burst = std::min(p.burst, div(token_capacity(p), p.window));
    const i128 backlog = token_backlog(s, capped, now);
    bool allowed = false;
    decision d = decide_backlog(backlog, capped, allowed);
    if (allowed) {
        // The refill point never moves backwards, or a stepped-back clock
        // would refill the same interval twice.
        s.time = static_cast<std::int64_t>(std::max<i128>(s.time, now));
        s.value = static_cast<std::uint64_t>(backlog + capped.window);
    }
    return d;
}

bool fresh_token_bucket(const bucket_state& s, const params& p, i128 now) {
    return token_backlog(s, p, now) == 0;
}

// ---- fixed_window ------------------------------------------------------------
// A window opens at the first request after the previous one has ended (so
// it is aligned to the key's first request, and dropping a fresh entry
// changes nothing). Requests at start + window belong to the next window.

bool fixed_expired(const bucket_state& s, const params& p, i128 now) {
    return s.value == 0 || now >= i128{s.time} + p.window;
}

decision check_fixed_window(bucket_state& s, const params& p, i128 now) {
    if (fixed_expired(s, p, now)) {
        s.time = static_cast<std::int64_t>(clamp_int64(now));
        s.value = 0;
    }
    const i128 until_end = i128{s.time} + p.window - now;
    decision d;
    d.window = to_ns(p.window);
    d.reset = to_ns(until_end);
    if (i128{s.value} < p.limit) {
        ++s.value;
        d.allowed = true;
        d.remaining = to_u64(p.limit - s.value);
    } else {
        d.allowed = false;
        d.retry_after = to_ns(until_end);
    }
    return d;
}

// ---- sliding_window ----------------------------------------------------------
// Two counters over windows aligned to multiples of `window`; the estimate is
// previous * (window - elapsed) / window + current. Kept multiplied by
// `window`, so the comparison with `limit` is exact.

struct sliding {
    i128 start;
    i128 prev;
    i128 curr;
};

sliding sliding_at(const bucket_state& s, const params& p, i128 now) {
    const i128 aligned = floor_div(now, p.window) * p.window;
    if (s.value == 0 || aligned >= i128{s.time} + 2 * p.window) {
        return {aligned, 0, 0};
    }
    const i128 prev = s.value >> 32;
    const i128 curr = s.value & 0xffffffffu;
    if (aligned >= i128{s.time} + p.window) {
        return {aligned, curr, 0};
    }
    // Same window, or the clock stepped back: keep the stored window.
    return {s.time, prev, curr};
}

i128 sliding_reset(const sliding& w, const params& p, i128 now) {
    if (w.curr > 0) {
        return w.start + 2 * p.window - now;
    }
    if (w.prev > 0) {
        return w.start + p.window - now;
    }
    return 0;
}

decision check_sliding_window(bucket_state& s, const params& p, i128 now) {
    const i128 limit = std::min(p.limit, uint32_max);
    const i128 W = p.window;
    sliding w = sliding_at(s, p, now);
    const i128 elapsed = std::clamp<i128>(now - w.start, 0, W - 1);
    const i128 weighted = w.prev * (W - elapsed) + w.curr * W;

    decision d;
    d.window = to_ns(W);
    if (weighted + W <= limit * W) {
        ++w.curr;
        d.allowed = true;
        d.remaining = to_u64(div(limit * W - weighted - W, W));
    } else {
        d.allowed = false;
        d.remaining = to_u64(div(limit * W - weighted, W));
        // Earliest elapsed time in this window at which prev's weight has
        // faded enough: prev * (W - e) <= (limit - curr - 1) * W.
        i128 at = 0;
        const i128 budget_now = (limit - w.curr - 1) * W;
        if (budget_now >= 0 && w.prev > 0 && div(budget_now, w.prev) > 0) {
            at = w.start + W - div(budget_now, w.prev);
        } else {
            // Next window: curr becomes prev; curr * (W - e) <= (limit - 1) * W.
            const i128 fade = w.curr == 0 ? W : std::min(W, div((limit - 1) * W, w.curr));
            at = w.start + W + (W - fade);
        }
        d.retry_after = to_ns(std::max<i128>(at - now, 1));
    }
    d.reset = to_ns(sliding_reset(w, p, now));
    s.time = static_cast<std::int64_t>(clamp_int64(w.start));
    s.value = (static_cast<std::uint64_t>(w.prev) << 32) | static_cast<std::uint64_t>(w.curr);
    return d;
}

bool fresh_sliding_window(const bucket_state& s, const params& p, i128 now) {
    return sliding_reset(sliding_at(s, p, now), p, now) <= 0;
}

}  // namespace

decision check(bucket_state& state, const bucket_policy& policy, nanoseconds now) noexcept {
    const params p = normalise(policy);
    if (p.limit == 0) {
        return refuse_all(p);
    }
    const i128 t = now.count();
    decision d;
    switch (policy.algorithm) {
        case algorithm_kind::gcra:
            d = check_gcra(state, p, t);
            break;
        case algorithm_kind::token_bucket:
            d = check_token_bucket(state, p, t);
            break;
        case algorithm_kind::fixed_window:
            d = check_fixed_window(state, p, t);
            break;
        case algorithm_kind::sliding_window:
            d = check_sliding_window(state, p, t);
            break;
    }
    d.limit = policy.limit;
    return d;
}

bool is_fresh(const bucket_state& state, const bucket_policy& policy, nanoseconds now) noexcept {
    const params p = normalise(policy);
    if (p.limit == 0) {
        return true;
    }
    const i128 t = now.count();
    switch (policy.algorithm) {
        case algorithm_kind::gcra:
            return fresh_gcra(state, p, t);
        case algorithm_kind::token_bucket:
            return fresh_token_bucket(state, p, t);
        case algorithm_kind::fixed_window:
            return fixed_expired(state, p, t);
        case algorithm_kind::sliding_window:
            return fresh_sliding_window(state, p, t);
    }
    return true;
}

}  // namespace tollgate::limit
