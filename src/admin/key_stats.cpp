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
    shard& s = shards_[std::hash<std::string>{}(shown) % shards_.size()];
    const std::lock_guard lock(s.mutex);
    auto it = s.keys.find(shown);
    if (it == s.keys.end()) {
        if (s.keys.size() >= max_per_shard_) {
            // Make room: the entry with the fewest recent refusals goes.
            auto victim = std::min_element(s.keys.begin(), s.keys.end(), [&](auto& a, auto& b) {
                return recent(a.second, now_index) < recent(b.second, now_index);
            });
            s.keys.erase(victim);
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
