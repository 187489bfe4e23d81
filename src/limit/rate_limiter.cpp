#include "tollgate/limit/rate_limiter.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <string>
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
constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();
constexpr std::size_t max_shards = 64;
/// Sweep budget earned per call, in entries visited. A sweep is charged the
/// entries of the (full) shard; the empty cells it skips come for free.
constexpr std::uint64_t credit_per_call = 8;
/// Cells of a shard's first table.
constexpr std::uint32_t first_cells = 16;
/// Largest shard share: its table (capacity * 4/3 cells) must stay below `npos`.
constexpr std::size_t max_shard_capacity = 0xbfff'fff0;

/// A table cell, holding one key's bucket in place.
struct entry {
    std::uint64_t hash;  ///< 0 = empty cell (hash() never returns 0)
    bucket_state state;
    /// When `state` becomes fresh, so sweeps need not know the policy.
    std::int64_t fresh_at;
    std::uint32_t prev;  ///< cell of the next more recently used entry, or `npos`
    std::uint32_t next;  ///< cell of the next less recently used entry, or `npos`
};
static_assert(sizeof(entry) == 40);

struct candidate {
    std::int64_t fresh_at;
    std::uint32_t cell;
};

std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    return __builtin_add_overflow(a, b, &r) ? never : r;
}

/// Home cell of `h` in a table of `cells`: the low 32 bits scaled to the
/// table (multiply-shift), so the table need not be a power of two. The top
/// bits chose the shard.
std::uint32_t home_of(std::uint64_t h, std::uint32_t cells) {
    return static_cast<std::uint32_t>((std::uint64_t{static_cast<std::uint32_t>(h)} * cells) >> 32);
}

}  // namespace

struct alignas(64) rate_limiter::shard {
    std::mutex mutex;
    /// Open addressing, linear probing, no tombstones; grows by doubling up
    /// to `final_cells` (load <= 3/4 throughout).
    std::vector<entry> table;
    /// Soonest-fresh entries found by the last sweep, ascending. An entry
    /// that moves (backward shift) takes its record along; still, a listed
    /// cell may since hold another entry, which is harmless: a listed
    /// cell's entry is dropped only if it is fresh.
    std::vector<candidate> candidates;
    std::size_t candidate_pos = 0;
    std::uint32_t capacity = 0;
    std::uint32_t final_cells = 0;
    std::uint32_t live = 0;
    std::uint32_t head = npos;  ///< most recently used
    std::uint32_t tail = npos;  ///< least recently used
    /// Lower bound of `fresh_at` over live entries other than those still
    /// sitting in a cell listed in `candidates[candidate_pos..]` with a
    /// listed `fresh_at` no later than their own.
    std::int64_t bound = never;
    std::uint64_t credit = 0;
    std::atomic<std::size_t> size{0};
    std::atomic<std::uint64_t> evictions{0};
    /// `table`'s data and size, published for the unlocked prefetch in
    /// check(); the pair may be torn while the table grows, which costs a
    /// useless prefetch and nothing else (nothing is dereferenced).
    std::atomic<std::uintptr_t> prefetch_base{0};
    std::atomic<std::uint32_t> prefetch_cells{0};

    std::uint32_t cells() const { return static_cast<std::uint32_t>(table.size()); }

    std::uint32_t next_cell(std::uint32_t pos) const { return pos + 1 == cells() ? 0 : pos + 1; }

    /// Cell holding `h`, or `npos`.
    std::uint32_t find(std::uint64_t h) const {
        const std::uint32_t n = cells();
        if (n == 0) {
            return npos;
        }
        for (std::uint32_t pos = home_of(h, n);; pos = next_cell(pos)) {
            const std::uint64_t c = table[pos].hash;
            if (c == h) {
                return pos;
            }
            if (c == 0) {
                return npos;
            }
        }
    }

    /// First empty cell on `h`'s probe path (the table always has one).
    std::uint32_t free_cell(std::uint64_t h) const {
        std::uint32_t pos = home_of(h, cells());
        while (table[pos].hash != 0) {
            pos = next_cell(pos);
        }
        return pos;
    }

    void unlink(std::uint32_t pos) {
        const entry& e = table[pos];
        (e.prev == npos ? head : table[e.prev].next) = e.next;
        (e.next == npos ? tail : table[e.next].prev) = e.prev;
    }

    void push_front(std::uint32_t pos) {
        entry& e = table[pos];
        e.prev = npos;
        e.next = head;
        (head == npos ? tail : table[head].prev) = pos;
        head = pos;
    }

    void touch(std::uint32_t pos) {
        if (head != pos) {
            unlink(pos);
            push_front(pos);
        }
    }

    /// Moves the entry in `from` to the empty cell `to`, keeping its LRU
    /// neighbours and its candidate record (if any) pointing at it.
    void move(std::uint32_t from, std::uint32_t to) {
        const entry& e = table[to] = table[from];
        (e.prev == npos ? head : table[e.prev].next) = to;
        (e.next == npos ? tail : table[e.next].prev) = to;
        // A listed entry not used since the sweep has a record with its own
        // fresh_at; the list is sorted by it.
        const auto listed = std::lower_bound(
            candidates.begin() + static_cast<std::ptrdiff_t>(candidate_pos), candidates.end(),
            e.fresh_at, [](const candidate& c, std::int64_t t) { return c.fresh_at < t; });
        // Ties (a frozen clock) are searched only so far: the bound below is
        // always a correct fallback.
        const auto stop = listed + std::min<std::ptrdiff_t>(candidates.end() - listed, 8);
        for (auto it = listed; it != stop && it->fresh_at == e.fresh_at; ++it) {
            if (it->cell == from) {
                it->cell = to;
                return;
            }
        }
        // Not listed (then the bound covers it already), or listed under an
        // earlier fresh_at and now unreachable through its record.
        bound = std::min(bound, e.fresh_at);
    }

    /// Backward-shift deletion: no tombstones, so probe lengths never decay.
    /// Entries move only towards `pos` within its cluster.
    void erase(std::uint32_t pos) {
        unlink(pos);
        --live;
        std::uint32_t hole = pos;
        for (std::uint32_t j = next_cell(pos); table[j].hash != 0; j = next_cell(j)) {
            const std::uint32_t home = home_of(table[j].hash, cells());
            const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
            if (!stays) {
                move(j, hole);
                hole = j;
            }
        }
        table[hole].hash = 0;
    }

    /// Makes room for `n` entries at load <= 3/4, growing by doubling.
    void reserve(std::uint32_t n) {
        if (std::uint64_t{n} * 4 <= std::uint64_t{cells()} * 3) {
            return;
        }
        const std::uint64_t doubled = cells() == 0 ? first_cells : std::uint64_t{cells()} * 2;
        rehash(static_cast<std::uint32_t>(std::min<std::uint64_t>(doubled, final_cells)));
    }

    /// Moves every entry into a table of `n` cells, in LRU order so that the
    /// links are rebuilt on the way.
    void rehash(std::uint32_t n) {
        std::vector<entry> old(n);
        old.swap(table);
        std::uint32_t prev = npos;
        std::int64_t earliest = never;
        for (std::uint32_t at = head; at != npos; at = old[at].next) {
            const entry& e = old[at];
            const std::uint32_t pos = free_cell(e.hash);
            table[pos] = entry{e.hash, e.state, e.fresh_at, prev, npos};
            (prev == npos ? head : table[prev].next) = pos;
            prev = pos;
            earliest = std::min(earliest, e.fresh_at);
        }
        tail = prev;
        // Listed cells mean nothing in the new table: every entry is now
        // covered by the bound alone.
        candidates.clear();
        candidate_pos = 0;
        bound = earliest;
        publish();
    }

    void publish() {
        prefetch_base.store(reinterpret_cast<std::uintptr_t>(table.data()),
                            std::memory_order_relaxed);
        prefetch_cells.store(cells(), std::memory_order_relaxed);
    }

    /// Starts loading the home cell of `h`; safe without the lock.
    void prefetch(std::uint64_t h) const {
        const std::uint32_t n = prefetch_cells.load(std::memory_order_relaxed);
        const std::uintptr_t base = prefetch_base.load(std::memory_order_relaxed);
        if (n != 0) {
            // Integer arithmetic: the address may lie outside a table torn
            // by a concurrent growth, and a prefetch never faults.
            const std::uintptr_t at = base + std::uintptr_t{home_of(h, n)} * sizeof(entry);
            __builtin_prefetch(reinterpret_cast<const void*>(at));
            __builtin_prefetch(reinterpret_cast<const void*>(at + sizeof(entry) - 1));
        }
    }

    void prefetch_cell(std::uint32_t pos) const {
        if (pos != npos) {
            __builtin_prefetch(&table[pos].prev, 1);  // the links, what touch() writes
        }
    }

    void insert(std::uint64_t h, const bucket_state& state, std::int64_t fresh_at) {
        reserve(live + 1);
        const std::uint32_t pos = free_cell(h);
        table[pos] = entry{h, state, fresh_at, npos, npos};
        push_front(pos);
        ++live;
        bound = std::min(bound, fresh_at);
    }

    /// Frees one cell in a full shard; see the header for the order.
    void make_room(std::int64_t now) {
        if (table[tail].fresh_at <= now) {
            erase(tail);
            return;
        }
        while (candidate_pos < candidates.size() && candidates[candidate_pos].fresh_at <= now) {
            const std::uint32_t pos = candidates[candidate_pos++].cell;
            const entry& e = table[pos];
            if (e.hash == 0) {
                continue;
            }
            if (e.fresh_at <= now) {
                erase(pos);
                return;
            }
            // Used again since the sweep, or another entry moved in: it is
            // no longer listed, so the bound must cover it.
            bound = std::min(bound, e.fresh_at);
        }
        if (now >= bound && credit >= live) {
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
        credit -= live;
        const std::size_t wanted = std::max<std::size_t>(16, capacity / 8);
        // The list is built aside (as a heap, not sorted): the erases below
        // move entries, and move() must not search it meanwhile.
        std::vector<candidate> list;
        list.swap(candidates);
        list.clear();
        list.reserve(wanted);
        candidate_pos = 0;
        const auto later = [](const candidate& a, const candidate& b) {
            return a.fresh_at < b.fresh_at;
        };
        bool left_out = false;
        // Start right after an empty cell: no cluster then wraps past the end
        // of the walk, so an erase only pulls entries not yet visited into
        // the current cell or beyond it, and every entry is visited once.
        std::uint32_t pos = 0;
        while (table[pos].hash != 0) {
            ++pos;
        }
        for (std::uint32_t k = 0; k < cells(); ++k) {
            pos = next_cell(pos);
            while (table[pos].hash != 0 && table[pos].fresh_at <= now) {
                erase(pos);
            }
            const entry& e = table[pos];
            if (e.hash == 0) {
                continue;
            }
            if (list.size() < wanted) {
                list.push_back({e.fresh_at, pos});
                std::push_heap(list.begin(), list.end(), later);
            } else {
                left_out = true;
                if (e.fresh_at < list.front().fresh_at) {
                    std::pop_heap(list.begin(), list.end(), later);
                    list.back() = {e.fresh_at, pos};
                    std::push_heap(list.begin(), list.end(), later);
                }
            }
        }
        // Everything left out is at least as late as the latest listed entry.
        bound = left_out ? list.front().fresh_at : never;
        std::sort_heap(list.begin(), list.end(), later);
        candidates.swap(list);
    }

    void reset() {
        std::vector<entry>().swap(table);
        std::vector<candidate>().swap(candidates);
        candidate_pos = 0;
        live = 0;
        head = tail = npos;
        bound = never;
        credit = capacity;
        size.store(0, std::memory_order_relaxed);
        publish();
    }

    std::string check_invariants() const;
};

rate_limiter::rate_limiter(const clock& time, std::size_t max_keys, std::size_t shards,
                           std::uint64_t seed)
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
    seed_ = seed;
    if (seed_ == 0) {
        std::random_device entropy;
        seed_ = (std::uint64_t{entropy()} << 32) ^ entropy();
    }
    shards_ = std::make_unique<shard[]>(n);
    // Only past 3 billion keys per shard does a share get capped: max_keys()
    // then says what is really held.
    std::size_t held = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t share = max_keys_ / n + (i < max_keys_ % n ? 1 : 0);
        shard& s = shards_[i];
        s.capacity = static_cast<std::uint32_t>(std::min(share, max_shard_capacity));
        // ceil(capacity * 4/3): load <= 3/4 when full, and always an empty cell.
        s.final_cells = static_cast<std::uint32_t>((std::uint64_t{s.capacity} * 4 + 2) / 3);
        s.reset();
        held += s.capacity;
    }
    max_keys_ = held;
}

rate_limiter::~rate_limiter() = default;

std::uint64_t rate_limiter::hash(std::string_view scope, std::string_view key,
                                 const bucket_policy& policy) const noexcept {
    // The whole policy is part of the bucket's identity: a reload that
    // changes a key's limit, window, burst or algorithm starts it on a fresh
    // bucket (old state means something else under the new policy), while
    // keys whose policy stayed keep their state. An unset burst is the
    // limit, so `burst: 10` with `limit: 10` is not a change.
    std::uint64_t seed = seed_ + static_cast<std::uint64_t>(policy.algorithm) * wyp[2];
    seed = wymix(seed ^ policy.limit, wyp[1] ^ static_cast<std::uint64_t>(policy.window.count()));
    seed = wymix(seed ^ effective_burst(policy), wyp[0]);
    if (!scope.empty()) {
        seed = wyhash(scope, seed ^ wyp[3]);
    }
    const std::uint64_t h = wyhash(key, seed);
    return h == 0 ? 1 : h;  // 0 marks an empty cell
}

decision rate_limiter::check(std::string_view key, const bucket_policy& policy) {
    return check(std::string_view{}, key, policy);
}

decision rate_limiter::check(std::string_view scope, std::string_view key,
                             const bucket_policy& policy) {
    const std::uint64_t h = hash(scope, key, policy);
    shard& s = shards_[shard_shift_ == 0 ? 0 : h >> (64 - shard_shift_)];
    // The key's cell is most likely not in cache: start loading it while the
    // clock is read and the lock taken.
    s.prefetch(h);
    // Read outside the lock; the algorithms treat a slightly older `now`
    // than the stored state as "no time passed".
    const nanoseconds now = clock_.now();

    std::lock_guard lock{s.mutex};
    s.credit = std::min<std::uint64_t>(s.credit + credit_per_call, 2 * std::uint64_t{s.capacity});
    const std::uint32_t pos = s.find(h);
    if (pos != npos) {
        entry& e = s.table[pos];
        // touch() below rewrites the links of both LRU neighbours, most
        // likely cache misses too: start loading them before the algorithm
        // runs instead of after it.
        s.prefetch_cell(e.prev);
        s.prefetch_cell(e.next);
        const decision d = limit::check(e.state, policy, now);
        if (d.reset.count() <= 0) {
            s.erase(pos);
            s.size.store(s.live, std::memory_order_relaxed);
        } else {
            const std::int64_t fresh_at = saturating_add(now.count(), d.reset.count());
            if (fresh_at < e.fresh_at) {
                // Moved earlier (a clock that stepped back): keep the bound true.
                s.bound = std::min(s.bound, fresh_at);
            }
            e.fresh_at = fresh_at;
            s.touch(pos);
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
        total += s.table.capacity() * sizeof(entry) + s.candidates.capacity() * sizeof(candidate);
    }
    return total;
}

std::string rate_limiter::shard::check_invariants() const {
    const std::uint32_t n = cells();
    const auto fail = [](std::string what, std::uint32_t pos) {
        return what + " (cell " + std::to_string(pos) + ")";
    };
    if (n > final_cells || live > capacity || std::uint64_t{live} * 4 > std::uint64_t{n} * 3) {
        return fail("table size, live count and capacity disagree", live);
    }
    if (size.load(std::memory_order_relaxed) != live) {
        return fail("size() is stale", live);
    }
    std::uint32_t used = 0;
    for (std::uint32_t pos = 0; pos < n; ++pos) {
        const entry& e = table[pos];
        if (e.hash == 0) {
            continue;
        }
        ++used;
        // Linear probing: no empty cell and no equal hash between home and here.
        for (std::uint32_t at = home_of(e.hash, n); at != pos; at = next_cell(at)) {
            if (table[at].hash == 0) {
                return fail("entry not reachable from its home cell", pos);
            }
            if (table[at].hash == e.hash) {
                return fail("hash held twice", pos);
            }
        }
        bool listed = false;
        for (std::size_t i = candidate_pos; i < candidates.size(); ++i) {
            listed = listed || (candidates[i].cell == pos && candidates[i].fresh_at <= e.fresh_at);
        }
        if (e.fresh_at < bound && !listed) {
            return fail("entry neither listed nor covered by the bound", pos);
        }
    }
    if (used != live) {
        return fail("live count differs from occupied cells", used);
    }
    for (std::size_t i = candidate_pos; i + 1 < candidates.size(); ++i) {
        if (candidates[i].fresh_at > candidates[i + 1].fresh_at) {
            return fail("candidates out of order", candidates[i].cell);
        }
    }
    std::uint32_t steps = 0;
    std::uint32_t prev = npos;
    for (std::uint32_t at = head; at != npos; at = table[at].next) {
        if (at >= n || table[at].hash == 0 || table[at].prev != prev || ++steps > live) {
            return fail("LRU list broken", at);
        }
        prev = at;
    }
    if (prev != tail || steps != live) {
        return fail("LRU list does not end at the tail or misses entries", prev);
    }
    return {};
}

std::string rate_limiter::debug_check() const {
    for (std::size_t i = 0; i < shard_count_; ++i) {
        std::lock_guard lock{shards_[i].mutex};
        std::string problem = shards_[i].check_invariants();
        if (!problem.empty()) {
            return "shard " + std::to_string(i) + ": " + problem;
        }
    }
    return {};
}

void rate_limiter::clear() {
    for (std::size_t i = 0; i < shard_count_; ++i) {
        std::lock_guard lock{shards_[i].mutex};
        shards_[i].reset();
    }
}

}  // namespace tollgate::limit
