#pragma once
/// @file rate_store.hpp
/// Where rate buckets live. `memory` (one process) decides at once from the
/// shared in-process limiter; `redis` (many processes, one limit) decides in
/// Redis and completes later on the worker's io_context. Each worker thread
/// owns one store object, so a store never needs to be thread-safe itself
/// (what it shares, like the in-process limiter, is).

#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "tollgate/limit/algorithms.hpp"
#include "tollgate/limit/rate_limiter.hpp"

namespace tollgate::store {

struct store_result {
    limit::decision decision{};
    /// The store could not decide (Redis unreachable with failure_mode
    /// closed): the proxy answers 503 with Retry-After: decision.retry_after.
    bool unavailable = false;
};

class rate_store {
public:
    using completion = std::function<void(store_result)>;

    /// Makes the completion of a decision that will come later. A store
    /// calls it at most once, during check(), when it is about to go
    /// asynchronous (a completion made and then not needed is destroyed
    /// unused): a decision made at once costs the caller no allocation and
    /// no reference count (the completion of a session holds the session).
    /// It refers to the caller's `make`, so it must not outlive the check()
    /// call it is passed to.
    class completion_source {
    public:
        template <class Make>
        explicit completion_source(const Make& make) noexcept
            : make_{&make}, call_{[](const void* m) {
                  return completion{(*static_cast<const Make*>(m))()};
              }} {}

        /// A temporary `make` would be gone before the store calls it.
        template <class Make>
        completion_source(const Make&&) = delete;

        completion operator()() const { return call_(make_); }

    private:
        const void* make_;
        completion (*call_)(const void*);
    };

    virtual ~rate_store() = default;

    /// The worker is stopping (its sessions are gone): let go of
    /// connections and timers now, so that they do not keep its io_context
    /// running. Called on the worker's thread.
    virtual void stop() {}

    /// Decides one request for `key` under `policy` (buckets are separate
    /// per `scope`). Returns the result at once when it has it; otherwise
    /// returns nullopt and calls the completion made by `done` exactly once
    /// later, on the worker's io_context.
    virtual std::optional<store_result> check(std::string_view scope, std::string_view key,
                                              const limit::bucket_policy& policy,
                                              const completion_source& done) = 0;
};

/// The in-process store over the gateway's shared limiter.
class memory_store final : public rate_store {
public:
    explicit memory_store(limit::rate_limiter& limiter) : limiter_(limiter) {}

    std::optional<store_result> check(std::string_view scope, std::string_view key,
                                      const limit::bucket_policy& policy,
                                      const completion_source&) override {
        return store_result{limiter_.check(scope, key, policy), false};
    }

private:
    limit::rate_limiter& limiter_;
};

}  // namespace tollgate::store
