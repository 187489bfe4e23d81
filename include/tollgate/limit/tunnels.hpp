#pragma once
/// @file tunnels.hpp
/// Caps on open tunnels (WebSocket and other upgraded connections): a
/// per-key cap (`websocket.max_per_key`) and a global one
/// (`websocket.max_tunnels`). An open tunnel holds no completion slot (its
/// handshake does, until the upstream switches), since it may stay open for
/// hours; these caps bound what one caller, and all of them, can hold instead.
///
/// Thread-safe: one mutex, taken once when a tunnel opens and once when it
/// closes.

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace tollgate::limit {

class tunnel_limiter {
public:
    /// One open tunnel; released when destroyed (or by release()). Must not
    /// outlive its limiter.
    class ticket {
    public:
        ticket() = default;
        ticket(ticket&& other) noexcept;
        ticket& operator=(ticket&& other) noexcept;
        ticket(const ticket&) = delete;
        ticket& operator=(const ticket&) = delete;
        ~ticket() { release(); }

        explicit operator bool() const { return owner_ != nullptr; }
        /// Gives the tunnel back; idempotent.
        void release();

    private:
        friend class tunnel_limiter;
        ticket(tunnel_limiter* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
        tunnel_limiter* owner_ = nullptr;
        std::string key_;
    };

    /// A ticket for `key`, or nullopt when `key` already holds `max_per_key`
    /// tunnels or all keys together hold `max_total`.
    std::optional<ticket> try_open(std::string_view key, std::size_t max_per_key,
                                   std::size_t max_total);

    /// Open tunnels, all keys.
    std::size_t open() const;
    /// Open tunnels of `key`.
    std::size_t open(std::string_view key) const;

private:
    void close(const std::string& key);

    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::size_t> per_key_;
    std::size_t total_ = 0;
};

}  // namespace tollgate::limit
