#pragma once
/// @file redis_cache.hpp
/// Buckets Redis has just refused, remembered until capacity comes back, so
/// refused traffic does not cost a round trip per request.
///
/// Why a cached refusal is the truth: a refused request changes nothing, and
/// other gateways can only take capacity, never give it back early. So the
/// refusal Redis answered at time t stays valid until t + retry_after, and
/// the answer at t + e is the same decision with `retry_after` and `reset`
/// shorter by e (remaining is 0 in every refusal). `t` is taken as the time
/// the request was *sent*, which is no later than when Redis decided: an
/// entry expires early rather than late, by at most one round trip.
///
/// Bounded: at most `capacity` entries; when full, the oldest insertion goes
/// first. Expired entries are dropped when looked up, and the oldest ones
/// as new refusals come in. One allocation per entry (its map node, plus
/// the key's characters when they do not fit the string itself): about 230
/// bytes for a `tok:` key (unit test `[redis][cache][memory]`). Times are
/// the caller's (a steady clock in nanoseconds), so tests drive it exactly.
///
/// Thread-safety: none; one cache per worker thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "tollgate/limit/algorithms.hpp"

namespace tollgate::store {

class over_limit_cache {
public:
    explicit over_limit_cache(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}
    // Its entries point at each other.
    over_limit_cache(const over_limit_cache&) = delete;
    over_limit_cache& operator=(const over_limit_cache&) = delete;

    /// Remembers refusal `d` of bucket `key`, decided no earlier than `at`.
    /// Allowed decisions and zero retry_after are ignored.
    void remember(std::string_view key, const limit::decision& d, std::chrono::nanoseconds at);

    /// The refusal `key` gets at `now`, if one is known; nullopt otherwise.
    /// `expired_now` (optional) is set when a refusal was known until now and
    /// has just run out, i.e. capacity is coming back to a key that is busy.
    std::optional<limit::decision> lookup(std::string_view key, std::chrono::nanoseconds now,
                                          bool* expired_now = nullptr);

    std::size_t size() const noexcept { return entries_.size(); }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    /// Entries form a list in insertion order through their map nodes
    /// (which never move), oldest first: the key is stored once.
    struct entry {
        limit::decision refusal;
        std::chrono::nanoseconds decided_at;
        const std::string* key = nullptr;  ///< the map's own copy
        entry* older = nullptr;
        entry* newer = nullptr;
    };
    struct string_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };

    using map = std::unordered_map<std::string, entry, string_hash, std::equal_to<>>;

    void link_newest(entry& e);
    void unlink(entry& e);
    void erase(map::iterator it);
    void drop_oldest();  ///< there must be one
    static bool expired(const entry& e, std::chrono::nanoseconds now) {
        return now - e.decided_at >= e.refusal.retry_after;
    }

    std::size_t capacity_;
    map entries_;
    entry* oldest_ = nullptr;
    entry* newest_ = nullptr;
};

}  // namespace tollgate::store
