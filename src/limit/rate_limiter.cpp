#include "tollgate/limit/rate_limiter.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <vector>

namespace tollgate::limit {
namespace {

using std::chrono::nanoseconds;

// ---- hashing -------------------------------------------------------------------
// wyhash (final version 4, public domain) with its default secret: fast on the
// 10-80 byte keys we see, well mixed in every bit, and seeded so that a caller
// cannot precompute colliding keys.

__extension__ using u128 = unsigned __int128;

constexpr std::uint64_t wyp[4] = {0xa0761d6478bd642full, 0xe7037ed1a0b428dbull,
                                  0x8ebc6af09c88c6e3ull, 0x589965cc75374cc3ull};

std::uint64_t wymix(std::uint64_t a, std::uint64_t b) {
    const u128 r = static_cast<u128>(a) * b;
    return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

std::uint64_t read8(const unsigned char* p) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

std::uint64_t read4(const unsigned char* p) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

std::uint64_t read3(const unsigned char* p, std::size_t n) {
    return (std::uint64_t{p[0]} << 16) | (std::uint64_t{p[n >> 1]} << 8) | p[n - 1];
}

std::uint64_t wyhash(std::string_view text, std::uint64_t seed) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t len = text.size();
    seed ^= wymix(seed ^ wyp[0], wyp[1]);
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    if (len <= 16) {
        if (len >= 4) {
            a = (read4(p) << 32) | read4(p + ((len >> 3) << 2));
            b = (read4(p + len - 4) << 32) | read4(p + len - 4 - ((len >> 3) << 2));
        } else if (len > 0) {
            a = read3(p, len);
        }
    } else {
        std::size_t i = len;
        if (i > 48) {
            std::uint64_t see1 = seed;
            std::uint64_t see2 = seed;
            do {
                seed = wymix(read8(p) ^ wyp[1], read8(p + 8) ^ seed);
                see1 = wymix(read8(p + 16) ^ wyp[2], read8(p + 24) ^ see1);
                see2 = wymix(read8(p + 32) ^ wyp[3], read8(p + 40) ^ see2);
                p += 48;
                i -= 48;
            } while (i > 48);
            seed ^= see1 ^ see2;
        }
        while (i > 16) {
            seed = wymix(read8(p) ^ wyp[1], read8(p + 8) ^ seed);
            i -= 16;
            p += 16;
        }
        a = read8(p + i - 16);
        b = read8(p + i - 8);
    }
    a ^= wyp[1];
    b ^= seed;
    const u128 r = static_cast<u128>(a) * b;
    a = static_cast<std::uint64_t>(r);
    b = static_cast<std::uint64_t>(r >> 64);
    return wymix(a ^ wyp[0] ^ len, b ^ wyp[1]);
}

// ---- shard layout ------------------------------------------------------------------

constexpr std::uint32_t npos = std::numeric_limits<std::uint32_t>::max();
/// `entry::prev` of a slot on the free list.
constexpr std::uint32_t free_mark = npos - 1;
constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();
constexpr std::size_t max_shards = 64;
/// Sweep budget earned per call, in entry visits.
constexpr std::uint64_t credit_per_call = 8;

struct entry {
    std::uint64_t hash;
    bucket_state state;
    /// When `state` becomes fresh, so sweeps need not know the policy.
    std::int64_t fresh_at;
    std::uint32_t prev;  ///< towards MRU; `free_mark` when the slot is free
    std::uint32_t next;  ///< towards LRU; free-list link when free
};
static_assert(sizeof(entry) == 40);

/// Index cell. `tag` is the low 32 bits of the hash: it both filters probes
/// and gives the home cell back (tag & mask) without touching the entry.
struct index_cell {
    std::uint32_t tag;
    std::uint32_t slot;  ///< `npos` = empty
};

struct candidate {
    std::int64_t fresh_at;
    std::uint32_t slot;
};

std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    return __builtin_add_overflow(a, b, &r) ? never : r;
}

}  // namespace

struct alignas(64) rate_limiter::shard {
    std::mutex mutex;
    /// Slab; its size is the high-water mark, freed slots are reused first.
    std::vector<entry> entries;
    std::vector<index_cell> index;  ///< power-of-two size, or empty
    /// Soonest-fresh entries found by the last sweep, ascending.
    std::vector<candidate> candidates;
    std::size_t candidate_pos = 0;
    std::uint32_t capacity = 0;
    std::uint32_t live = 0;
    std::uint32_t head = npos;  ///< most recently used
    std::uint32_t tail = npos;  ///< least recently used
    std::uint32_t free_head = npos;
    /// Lower bound of `fresh_at` over entries not in `candidates[candidate_pos..]`.
    std::int64_t bound = never;
    std::uint64_t credit = 0;
    std::atomic<std::size_t> size{0};
    std::atomic<std::uint64_t> evictions{0};

    std::uint32_t find(std::uint64_t h) const {
        if (index.empty()) {
            return npos;
        }
        const std::size_t mask = index.size() - 1;
        const auto tag = static_cast<std::uint32_t>(h);
        for (std::size_t pos = tag & mask;; pos = (pos + 1) & mask) {
            const index_cell c = index[pos];
            if (c.slot == npos) {
                return npos;
            }
            if (c.tag == tag && entries[c.slot].hash == h) {
                return c.slot;
            }
        }
    }

    void index_put(std::uint32_t tag, std::uint32_t slot) {
        const std::size_t mask = index.size() - 1;
        std::size_t pos = tag & mask;
        while (index[pos].slot != npos) {
            pos = (pos + 1) & mask;
        }
        index[pos] = {tag, slot};
    }

    void index_reserve(std::size_t n) {
        // Load factor at most 3/4 keeps linear-probe runs short.
        if (n * 4 <= index.size() * 3) {
            return;
        }
        std::vector<index_cell> old(std::max<std::size_t>(16, index.size() * 2),
                                    index_cell{0, npos});
        old.swap(index);
        for (const index_cell& c : old) {
            if (c.slot != npos) {
                index_put(c.tag, c.slot);
            }
        }
    }

    /// Backward-shift deletion: no tombstones, so probe lengths never decay.
    void index_erase(std::uint64_t h, std::uint32_t slot) {
        const std::size_t mask = index.size() - 1;
        std::size_t hole = static_cast<std::uint32_t>(h) & mask;
        while (index[hole].slot != slot) {
            hole = (hole + 1) & mask;
        }
        for (std::size_t j = (hole + 1) & mask; index[j].slot != npos; j = (j + 1) & mask) {
            const std::size_t home = index[j].tag & mask;
            const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
            if (!stays) {
                index[hole] = index[j];
                hole = j;
            }
        }
        index[hole].slot = npos;
    }

    void unlink(std::uint32_t slot) {
        entry& e = entries[slot];
        (e.prev == npos ? head : entries[e.prev].next) = e.next;
        (e.next == npos ? tail : entries[e.next].prev) = e.prev;
    }

    void push_front(std::uint32_t slot) {
        entry& e = entries[slot];
        e.prev = npos;
        e.next = head;
        (head == npos ? tail : entries[head].prev) = slot;
        head = slot;
    }

    void touch(std::uint32_t slot) {
        if (head != slot) {
            unlink(slot);
            push_front(slot);
        }
    }

    void erase(std::uint32_t slot) {
        index_erase(entries[slot].hash, slot);
        unlink(slot);
        entries[slot].prev = free_mark;
        entries[slot].next = free_head;
        free_head = slot;
        --live;
    }

    std::uint32_t allocate_slot() {
        if (free_head != npos) {
            const std::uint32_t slot = free_head;
            free_head = entries[slot].next;
            return slot;
        }
        if (entries.size() == entries.capacity()) {
            // Grow to at most the shard's share, so a full shard holds no slack.
            entries.reserve(
                std::min<std::size_t>(std::max<std::size_t>(16, entries.size() * 2), capacity));
        }
        entries.push_back(entry{});
        return static_cast<std::uint32_t>(entries.size() - 1);
    }

    void insert(std::uint64_t h, const bucket_state& state, std::int64_t fresh_at) {
        index_reserve(live + 1);
        const std::uint32_t slot = allocate_slot();
        entries[slot] = entry{h, state, fresh_at, npos, npos};
        index_put(static_cast<std::uint32_t>(h), slot);
        push_front(slot);
        ++live;
        bound = std::min(bound, fresh_at);
    }

    /// Frees one slot in a full shard; see the header for the order.
    void make_room(std::int64_t now) {
        if (entries[tail].fresh_at <= now) {
            erase(tail);
            return;
        }
        while (candidate_pos < candidates.size() && candidates[candidate_pos].fresh_at <= now) {
            const std::uint32_t slot = candidates[candidate_pos++].slot;
            const entry& e = entries[slot];
            if (e.prev == free_mark) {
                continue;
            }
            if (e.fresh_at <= now) {
                erase(slot);
                return;
            }
            // Used again since the sweep (or the slot was reused): it leaves
            // the list, so the bound must cover it.
            bound = std::min(bound, e.fresh_at);
        }
        if (now >= bound && credit >= entries.size()) {
            sweep(now);
            if (live < capacity) {
                return;
            }
        }
        erase(tail);
        evictions.store(evictions.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }

    /// Drops every fresh entry and lists the soonest-fresh survivors, so the
    /// next few rounds of make_room() cost O(1) each.
    void sweep(std::int64_t now) {
        credit -= entries.size();
        const std::size_t wanted = std::max<std::size_t>(16, capacity / 8);
        candidates.clear();
        candidates.reserve(wanted);
        candidate_pos = 0;
        const auto later = [](const candidate& a, const candidate& b) {
            return a.fresh_at < b.fresh_at;
        };
        bool left_out = false;
        for (std::uint32_t slot = 0; slot < entries.size(); ++slot) {
            const entry& e = entries[slot];
            if (e.prev == free_mark) {
                continue;
            }
            if (e.fresh_at <= now) {
                erase(slot);
                continue;
            }
            if (candidates.size() < wanted) {
                candidates.push_back({e.fresh_at, slot});
                std::push_heap(candidates.begin(), candidates.end(), later);
            } else {
                left_out = true;
                if (e.fresh_at < candidates.front().fresh_at) {
                    std::pop_heap(candidates.begin(), candidates.end(), later);
                    candidates.back() = {e.fresh_at, slot};
                    std::push_heap(candidates.begin(), candidates.end(), later);
                }
            }
        }
        // Everything left out is at least as late as the latest listed entry.
        bound = left_out ? candidates.front().fresh_at : never;
        std::sort_heap(candidates.begin(), candidates.end(), later);
    }

    void reset() {
        std::vector<entry>().swap(entries);
        std::vector<index_cell>().swap(index);
        std::vector<candidate>().swap(candidates);
        candidate_pos = 0;
        live = 0;
        head = tail = free_head = npos;
        bound = never;
        credit = capacity;
        size.store(0, std::memory_order_relaxed);
    }
};

rate_limiter::rate_limiter(const clock& time, std::size_t max_keys, std::size_t shards)
    : clock_{time}, max_keys_{std::max<std::size_t>(max_keys, 1)} {
    std::size_t n = 1;
    if (shards == 0) {
        // Below ~1024 keys per shard the LRU order is worth more than less contention.
        while (n < max_shards && max_keys_ / (2 * n) >= 1024) {
            n *= 2;
        }
    } else {
        while (n * 2 <= std::min(shards, max_shards)) {
            n *= 2;
        }
        n = std::min(n, max_keys_);
        while ((n & (n - 1)) != 0) {
            n &= n - 1;
        }
    }
    shard_count_ = n;
    shard_shift_ = 0;
    while ((std::size_t{1} << shard_shift_) < n) {
        ++shard_shift_;
    }
    std::random_device entropy;
    seed_ = (std::uint64_t{entropy()} << 32) ^ entropy();
    shards_ = std::make_unique<shard[]>(n);
    const std::size_t cap_limit = std::numeric_limits<std::uint32_t>::max() - 2;
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t share = max_keys_ / n + (i < max_keys_ % n ? 1 : 0);
        shards_[i].capacity = static_cast<std::uint32_t>(std::min(share, cap_limit));
        shards_[i].reset();
    }
}

rate_limiter::~rate_limiter() = default;

std::uint64_t rate_limiter::hash(std::string_view scope, std::string_view key,
                                 const bucket_policy& policy) const noexcept {
    // The whole policy is part of the bucket's identity: a reload that
    // changes a key's limit, window, burst or algorithm starts it on a fresh
    // bucket (old state means something else under the new policy), while
    // keys whose policy stayed keep their state.
    std::uint64_t seed = seed_ + static_cast<std::uint64_t>(policy.algorithm) * wyp[2];
    seed = wymix(seed ^ policy.limit, wyp[1] ^ static_cast<std::uint64_t>(policy.window.count()));
    seed = wymix(seed ^ policy.burst, wyp[0]);
    if (!scope.empty()) {
        seed = wyhash(scope, seed ^ wyp[3]);
    }
    return wyhash(key, seed);
}

decision rate_limiter::check(std::string_view key, const bucket_policy& policy) {
    return check(std::string_view{}, key, policy);
}

decision rate_limiter::check(std::string_view scope, std::string_view key,
                             const bucket_policy& policy) {
    const std::uint64_t h = hash(scope, key, policy);
    // Read outside the lock; the algorithms treat a slightly older `now`
    // than the stored state as "no time passed".
    const nanoseconds now = clock_.now();
    shard& s = shards_[shard_shift_ == 0 ? 0 : h >> (64 - shard_shift_)];

    std::lock_guard lock{s.mutex};
    s.credit = std::min<std::uint64_t>(s.credit + credit_per_call, 2 * std::uint64_t{s.capacity});
    const std::uint32_t slot = s.find(h);
    if (slot != npos) {
        entry& e = s.entries[slot];
        const decision d = limit::check(e.state, policy, now);
        if (d.reset.count() <= 0) {
            s.erase(slot);
            s.size.store(s.live, std::memory_order_relaxed);
        } else {
            e.fresh_at = saturating_add(now.count(), d.reset.count());
            s.touch(slot);
        }
        return d;
    }

    bucket_state state{};
    const decision d = limit::check(state, policy, now);
    // A request that left the state fresh (refused by a zero limit) needs no entry.
    if (d.reset.count() > 0) {
        if (s.live >= s.capacity) {
            s.make_room(now.count());
        }
        s.insert(h, state, saturating_add(now.count(), d.reset.count()));
        s.size.store(s.live, std::memory_order_relaxed);
    }
    return d;
}

std::size_t rate_limiter::size() const noexcept {
    std::size_t total = 0;
    for (std::size_t i = 0; i < shard_count_; ++i) {
        total += shards_[i].size.load(std::memory_order_relaxed);
    }
    return total;
}

std::uint64_t rate_limiter::evictions() const noexcept {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < shard_count_; ++i) {
        total += shards_[i].evictions.load(std::memory_order_relaxed);
    }
    return total;
}

std::size_t rate_limiter::memory_bytes() const {
    std::size_t total = sizeof(shard) * shard_count_;
    for (std::size_t i = 0; i < shard_count_; ++i) {
        shard& s = shards_[i];
        std::lock_guard lock{s.mutex};
        total += s.entries.capacity() * sizeof(entry) + s.index.capacity() * sizeof(index_cell) +
                 s.candidates.capacity() * sizeof(candidate);
    }
    return total;
}

void rate_limiter::clear() {
    for (std::size_t i = 0; i < shard_count_; ++i) {
        std::lock_guard lock{shards_[i].mutex};
        shards_[i].reset();
    }
}

}  // namespace tollgate::limit
