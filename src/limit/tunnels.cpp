#include "tollgate/limit/tunnels.hpp"

namespace tollgate::limit {

tunnel_limiter::ticket::ticket(ticket&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), key_(std::move(other.key_)) {}

tunnel_limiter::ticket& tunnel_limiter::ticket::operator=(ticket&& other) noexcept {
    if (this != &other) {
        release();
        owner_ = std::exchange(other.owner_, nullptr);
        key_ = std::move(other.key_);
    }
    return *this;
}

void tunnel_limiter::ticket::release() {
    if (owner_ != nullptr) {
        std::exchange(owner_, nullptr)->close(key_);
    }
}

std::optional<tunnel_limiter::ticket> tunnel_limiter::try_open(std::string_view key,
                                                               std::size_t max_per_key,
                                                               std::size_t max_total) {
    std::string owned(key);
    std::lock_guard lock(mutex_);
    if (total_ >= max_total) {
        return std::nullopt;
    }
    auto [it, inserted] = per_key_.try_emplace(owned, 0);
    if (it->second >= max_per_key) {
        if (inserted) {
            per_key_.erase(it);  // max_per_key 0: no entry for a key with none open
        }
        return std::nullopt;
    }
    ++it->second;
    ++total_;
    return ticket(this, std::move(owned));
}

void tunnel_limiter::close(const std::string& key) {
    std::lock_guard lock(mutex_);
    auto it = per_key_.find(key);
    if (it == per_key_.end()) {
        return;
    }
    --total_;
    if (--it->second == 0) {
        per_key_.erase(it);
    }
}

std::size_t tunnel_limiter::open() const {
    std::lock_guard lock(mutex_);
    return total_;
}

std::size_t tunnel_limiter::open(std::string_view key) const {
    std::lock_guard lock(mutex_);
    auto it = per_key_.find(std::string(key));
    return it == per_key_.end() ? 0 : it->second;
}

}  // namespace tollgate::limit
