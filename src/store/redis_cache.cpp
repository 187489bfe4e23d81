#include "tollgate/store/redis_cache.hpp"

#include <algorithm>

namespace tollgate::store {

void over_limit_cache::link_newest(entry& e) {
    e.older = newest_;
    e.newer = nullptr;
    (newest_ ? newest_->newer : oldest_) = &e;
    newest_ = &e;
}

void over_limit_cache::unlink(entry& e) {
    (e.older ? e.older->newer : oldest_) = e.newer;
    (e.newer ? e.newer->older : newest_) = e.older;
    e.older = e.newer = nullptr;
}

void over_limit_cache::erase(map::iterator it) {
    unlink(it->second);
    entries_.erase(it);
}

void over_limit_cache::drop_oldest() {
    erase(entries_.find(*oldest_->key));
}

void over_limit_cache::remember(std::string_view key, const limit::decision& d,
                                std::chrono::nanoseconds at) {
    if (d.allowed || d.retry_after <= std::chrono::nanoseconds{0}) {
        return;
    }
    // A few of the oldest entries that ran out meanwhile go now, so a cache
    // that keeps taking refusals holds mostly live ones.
    for (int i = 0; i < 2 && oldest_ && expired(*oldest_, at); ++i) {
        drop_oldest();
    }
    if (auto it = entries_.find(key); it != entries_.end()) {
        it->second.refusal = d;
        it->second.decided_at = at;
        unlink(it->second);
        link_newest(it->second);
        return;
    }
    while (entries_.size() >= capacity_ && oldest_) {
        drop_oldest();
    }
    const auto it = entries_.emplace(std::string(key), entry{d, at}).first;
    it->second.key = &it->first;
    link_newest(it->second);
}

std::optional<limit::decision> over_limit_cache::lookup(std::string_view key,
                                                        std::chrono::nanoseconds now,
                                                        bool* expired_now) {
    if (expired_now != nullptr) {
        *expired_now = false;
    }
    auto it = entries_.find(key);
    if (it == entries_.end()) {
        return std::nullopt;
    }
    const entry& e = it->second;
    if (expired(e, now)) {
        erase(it);
        if (expired_now != nullptr) {
            *expired_now = true;
        }
        return std::nullopt;
    }
    const auto elapsed = std::max(now - e.decided_at, std::chrono::nanoseconds{0});
    limit::decision d = e.refusal;
    d.retry_after -= elapsed;
    d.reset = std::max(d.reset - elapsed, d.retry_after);
    d.remaining = 0;
    return d;
}

}  // namespace tollgate::store
