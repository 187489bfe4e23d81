#include "tollgate/store/redis_cache.hpp"

namespace tollgate::store {

void over_limit_cache::remember(std::string_view key, const limit::decision& d,
                                std::chrono::nanoseconds at) {
    if (d.allowed || d.retry_after <= std::chrono::nanoseconds{0}) {
        return;
    }
    if (auto it = entries_.find(key); it != entries_.end()) {
        it->second = {d, at, next_seq_};
        order_.emplace_back(std::string(key), next_seq_++);
    } else {
        while (entries_.size() >= capacity_ && !order_.empty()) {
            auto& [old_key, seq] = order_.front();
            if (auto old = entries_.find(old_key);
                old != entries_.end() && old->second.seq == seq) {
                entries_.erase(old);
            }
            order_.pop_front();
        }
        entries_.emplace(std::string(key), entry{d, at, next_seq_});
        order_.emplace_back(std::string(key), next_seq_++);
    }
    // Re-inserted keys leave stale pairs behind; drop them before they pile up.
    if (order_.size() > 2 * capacity_ + 16) {
        std::deque<std::pair<std::string, std::uint64_t>> live;
        for (auto& item : order_) {
            auto it = entries_.find(item.first);
            if (it != entries_.end() && it->second.seq == item.second) {
                live.push_back(std::move(item));
            }
        }
        order_.swap(live);
    }
}

std::optional<limit::decision> over_limit_cache::lookup(std::string_view key,
                                                        std::chrono::nanoseconds now,
                                                        bool* expired) {
    if (expired != nullptr) {
        *expired = false;
    }
    auto it = entries_.find(key);
    if (it == entries_.end()) {
        return std::nullopt;
    }
    const entry& e = it->second;
    const auto elapsed = std::max(now - e.decided_at, std::chrono::nanoseconds{0});
    if (elapsed >= e.refusal.retry_after) {
        entries_.erase(it);  // its pair in order_ goes stale and is skipped later
        if (expired != nullptr) {
            *expired = true;
        }
        return std::nullopt;
    }
    limit::decision d = e.refusal;
    d.retry_after -= elapsed;
    d.reset = std::max(d.reset - elapsed, d.retry_after);
    d.remaining = 0;
    return d;
}

}  // namespace tollgate::store
