#pragma once
/// @file gateway.hpp
/// State shared by every worker thread: the current config generation
/// (swapped atomically on reload) and process-wide counters.

#include <atomic>
#include <memory>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/proxy/upstream_pool.hpp"

namespace tollgate::server {

/// Everything derived from one config generation. Immutable once built, so
/// a request keeps the generation it started with for its whole exchange.
struct runtime {
    std::shared_ptr<const config> cfg;
    std::shared_ptr<const proxy::upstream_group> default_upstream;
    /// One per `routes[i]`; the default group when the route names none.
    std::vector<std::shared_ptr<const proxy::upstream_group>> route_upstreams;
};

/// Builds a runtime: resolves upstream hosts. Throws std::runtime_error.
std::shared_ptr<const runtime> build_runtime(std::shared_ptr<const config> cfg);

/// Thread-safe: every member may be used from any worker thread.
class gateway {
public:
    explicit gateway(std::shared_ptr<const runtime> initial);

    std::shared_ptr<const runtime> current() const { return runtime_.load(); }
    void swap(std::shared_ptr<const runtime> next) { runtime_.store(std::move(next)); }

    bool draining() const { return draining_.load(std::memory_order_acquire); }
    void start_draining() { draining_.store(true, std::memory_order_release); }

    /// Open client connections, all threads.
    std::atomic<std::size_t> client_connections{0};

private:
    std::atomic<std::shared_ptr<const runtime>> runtime_;
    std::atomic<bool> draining_{false};
};

}  // namespace tollgate::server
