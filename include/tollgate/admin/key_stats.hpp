#pragma once
/// @file key_stats.hpp
/// Which keys are being refused, for `/debug/keys`: an operator can see who
/// is limited without a high-cardinality metric. Keys are kept in display
/// form only (a `tok:` key shortened to 12 hex characters), counted in
/// fixed windows (the current and the previous one are reported, with the
/// span they cover), and the table is bounded; when full, a new key takes
/// the place of the entry with the fewest recent refusals among a few
/// sampled ones (constant time; a key refused often is not the one to go).
///
/// Thread-safe; sharded so that refusals of unrelated keys rarely contend.
/// Allowed requests never touch it.

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/limit/clock.hpp"

namespace tollgate::admin {

/// The form of a key that may be shown: `tok:` + 12 hex chars, or the key.
std::string display_key(std::string_view key);

class key_stats {
public:
    struct entry {
        std::string key;  ///< display form
        std::uint64_t refused = 0;
    };
    /// What `top_refused` saw, counts and span read at the same instant.
    struct report {
        std::vector<entry> keys;
        /// The time the counts cover: from the start of the previous window
        /// (or from construction, if later) to now. Between one and two
        /// windows once the table is a window old, so `refused / span` is a
        /// key's refusal rate over exactly that time; a fixed two windows
        /// would read up to 2x low just after a window boundary.
        std::chrono::nanoseconds span{0};
    };

    explicit key_stats(const limit::clock& clock,
                       std::chrono::nanoseconds window = std::chrono::seconds(60),
                       std::size_t max_keys = 16384);

    /// Counts one refusal for `key` (full key; only its display form is kept).
    void refused(std::string_view key);
    /// The `n` keys with the most refusals in the current and previous
    /// window, most first, and the span those windows cover.
    report top_refused(std::size_t n) const;
    std::chrono::nanoseconds window() const { return window_; }

private:
    struct counts {
        std::int64_t window_index = 0;
        std::uint64_t current = 0;
        std::uint64_t previous = 0;
    };
    struct shard {
        mutable std::mutex mutex;
        std::unordered_map<std::string, counts> keys;
    };
    static std::uint64_t recent(const counts& c, std::int64_t now_index);
    static void make_room(shard& s, std::size_t start, std::int64_t now_index);

    const limit::clock& clock_;
    const std::chrono::nanoseconds window_;
    const std::chrono::nanoseconds created_;  ///< nothing was counted before
    const std::size_t max_per_shard_;
    std::array<shard, 16> shards_;
};

}  // namespace tollgate::admin
