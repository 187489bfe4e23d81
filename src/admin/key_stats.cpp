#include "tollgate/admin/key_stats.hpp"

#include <algorithm>
#include <functional>

namespace tollgate::admin {

std::string display_key(std::string_view key) {
    if (key.starts_with("tok:")) {
        return std::string(key.substr(0, 4 + 12));
    }
    return std::string(key);
}

key_stats::key_stats(const limit::clock& clock, std::chrono::nanoseconds window,
                     std::size_t max_keys)
    : clock_(clock),
      window_(window),
      created_(clock.now()),
      max_per_shard_(std::max<std::size_t>(1, max_keys / 16)) {}

std::uint64_t key_stats::recent(const counts& c, std::int64_t now_index) {
    if (c.window_index == now_index) {
        return c.current + c.previous;
    }
    if (c.window_index + 1 == now_index) {
        return c.current;  // its current window is now the previous one
    }
    return 0;
}

void key_stats::refused(std::string_view key) {
    std::string shown = display_key(key);
    const std::int64_t now_index = clock_.now() / window_;
    const std::size_t hash = std::hash<std::string>{}(shown);
    shard& s = shards_[hash % shards_.size()];
    const std::lock_guard lock(s.mutex);
    auto it = s.keys.find(shown);
    if (it == s.keys.end()) {
        if (s.keys.size() >= max_per_shard_) {
            make_room(s, hash / shards_.size(), now_index);
        }
        it = s.keys.emplace(std::move(shown), counts{now_index, 0, 0}).first;
    }
    counts& c = it->second;
    if (c.window_index != now_index) {
        c.previous = c.window_index + 1 == now_index ? c.current : 0;
        c.current = 0;
        c.window_index = now_index;
    }
    c.current++;
}

// Of a few entries taken from the spot `start` picks, the one with the fewest
// recent refusals goes. Not the fewest of the whole shard: that scan (a
// thousand entries with the defaults, under the shard's lock, for every new
// key refused once the table is full) cost a flood of new keys a third of
// its throughput. A key refused often outlives the one-off keys of a flood
// all the same: it goes only when every entry sampled with it counts as
// many refusals.
void key_stats::make_room(shard& s, std::size_t start, std::int64_t now_index) {
    constexpr std::size_t sample = 8;
    const std::size_t buckets = s.keys.bucket_count();
    const std::string* victim = nullptr;
    std::uint64_t fewest = 0;
    std::size_t seen = 0;
    for (std::size_t i = 0; i < buckets && seen < sample; ++i) {
        const std::size_t b = (start + i) % buckets;
        for (auto e = s.keys.begin(b); e != s.keys.end(b) && seen < sample; ++e, ++seen) {
            const std::uint64_t r = recent(e->second, now_index);
            if (victim == nullptr || r < fewest) {
                victim = &e->first;
                fewest = r;
            }
        }
    }
    if (victim != nullptr) {
        s.keys.erase(s.keys.find(*victim));
    }
}

key_stats::report key_stats::top_refused(std::size_t n) const {
    const std::chrono::nanoseconds now = clock_.now();
    const std::int64_t now_index = now / window_;
    // recent() counts from the start of the previous window: the span is
    // read from the same clock reading, so the two agree at every moment.
    const std::chrono::nanoseconds since = std::max((now_index - 1) * window_, created_);
    std::vector<entry> out;
    for (const shard& s : shards_) {
        const std::lock_guard lock(s.mutex);
        for (const auto& [key, c] : s.keys) {
            if (auto r = recent(c, now_index); r > 0) {
                out.push_back({key, r});
            }
        }
    }
    const std::size_t keep = std::min(n, out.size());
    std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(keep), out.end(),
                      [](const entry& a, const entry& b) {
                          return a.refused != b.refused ? a.refused > b.refused : a.key < b.key;
                      });
    out.resize(keep);
    // A manual clock set back before construction gives no span, not a negative one.
    return {std::move(out), std::max(now - since, std::chrono::nanoseconds{0})};
}

}  // namespace tollgate::admin
