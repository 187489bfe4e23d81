#pragma once
/// @file rate_limiter.hpp
/// The shared, bounded map from bucket key to bucket state.
///
/// Layout: keys are never stored. A key (plus an optional scope, see
/// rate_policy.hpp) is reduced to a seeded 64-bit hash (wyhash-style
/// multiply-mix, random seed per limiter). Two distinct keys that collide
/// share one bucket; at 1,000,000 live keys the chance that any pair does is
/// about n^2 / 2^65 = 3e-8, and the random seed keeps an outsider from
/// aiming for a collision. The hash picks one of up to 64 shards (top bits);
/// each shard has its own mutex and one open-addressing table of 40-byte
/// entries held in place (hash, state, time it becomes fresh, intrusive LRU
/// links as 32-bit cell numbers): linear probing from a home cell picked by
/// the low 32 bits (multiply-shift, so the table size need not be a power of
/// two), hash 0 marks an empty cell, deletion shifts entries back instead of
/// leaving tombstones (moving an entry re-points its LRU neighbours). A
/// decision on a known key therefore loads one cell; the LRU update then
/// writes two neighbour cells, prefetched before the algorithm runs. Tables
/// grow by doubling from 16 cells to ceil(share * 4/3) cells, so load stays
/// <= 3/4 and a nearly empty limiter holds little. Measured: about 53.5
/// bytes per key at 1,000,000 keys (see test_rate_limiter.cpp).
///
/// Bounds: each shard holds at most its share of `max_keys`, so the total
/// never exceeds `max_keys` (a shard can fill a little before the others).
/// Limiters for fewer than 2048 keys use one shard, which makes LRU order
/// exact. When a shard is full, room is made in this order:
///  1. the LRU entry, if it is fresh (carries no information): dropped;
///  2. the next entry from a list of soonest-fresh entries that the last
///     sweep prepared, if it is now fresh: dropped;
///  3. a sweep over the shard dropping every fresh entry, when some entry
///     may have become fresh since the last sweep; sweeps are paid for by
///     earlier calls (about 8 entries per call, amortised, plus the empty
///     quarter of the table);
///  4. otherwise the LRU entry is evicted and counted in `evictions()`.
/// Dropping fresh entries is never counted: the next request for that key
/// gets exactly the decision it would have got anyway. Only if churn of
/// short-lived keys outruns the sweep budget can step 4 evict a live entry
/// while a fresh one exists elsewhere in the shard.
///
/// Thread-safety: every member function may be called concurrently.
/// Decisions on one key are serialised by its shard's mutex, so N threads
/// hammering one key get exactly the configured number of passes.
/// `size()` and `evictions()` are relaxed snapshots.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "tollgate/limit/algorithms.hpp"
#include "tollgate/limit/clock.hpp"

namespace tollgate::limit {

class rate_limiter {
public:
    /// @param time      read once per `check`; must outlive the limiter.
    /// @param max_keys  most entries held at once (0 is treated as 1).
    /// @param shards    0 = automatic (1 below 2048 keys, up to 64); other
    ///                  values are rounded down to a power of two <= 64.
    /// @param seed      hash seed; 0 = random (production: keeps outsiders
    ///                  from aiming keys at one cell). Tests fix it so that
    ///                  shard choice and table layout repeat from run to run.
    rate_limiter(const clock& time, std::size_t max_keys, std::size_t shards = 0,
                 std::uint64_t seed = 0);
    ~rate_limiter();

    rate_limiter(const rate_limiter&) = delete;
    rate_limiter& operator=(const rate_limiter&) = delete;

    /// Charges one request of `key` against `policy` in the key's global
    /// bucket. Allocates only when a shard grows or sweeps for the first
    /// time since construction or clear() (and may then throw
    /// std::bad_alloc); steady state is one hash, one lock, no allocation.
    decision check(std::string_view key, const bucket_policy& policy);

    /// Same, in the bucket of (`scope`, `key`). An empty scope is the global
    /// bucket. The algorithm is part of the bucket identity, so a reload that
    /// switches algorithm starts fresh buckets instead of misreading old state.
    decision check(std::string_view scope, std::string_view key, const bucket_policy& policy);

    /// Entries currently held.
    std::size_t size() const noexcept;

    /// Live entries evicted to make room (never counts dropped fresh ones).
    std::uint64_t evictions() const noexcept;

    /// Entries the limiter holds at most: `max_keys` as constructed, unless a
    /// shard's share had to be capped below 3 * 2^30.
    std::size_t max_keys() const noexcept { return max_keys_; }
    std::size_t shard_count() const noexcept { return shard_count_; }

    /// Bytes of heap the limiter holds for its entries and indexes.
    std::size_t memory_bytes() const;

    /// Forgets every entry and releases their memory (evictions stay counted).
    void clear();

    /// For tests: walks every shard's table, LRU list and sweep bookkeeping
    /// under its lock; returns the first inconsistency found, or "".
    std::string debug_check() const;

private:
    struct shard;  // rate_limiter.cpp

    std::uint64_t hash(std::string_view scope, std::string_view key,
                       const bucket_policy& policy) const noexcept;

    const clock& clock_;
    std::size_t max_keys_;
    std::size_t shard_count_;
    unsigned shard_shift_;
    std::uint64_t seed_;
    std::unique_ptr<shard[]> shards_;
};

}  // namespace tollgate::limit
