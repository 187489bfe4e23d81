#pragma once
/// @file rate_policy.hpp
/// Which bucket, under which policy, charges a request: the middle layer
/// between the config and the rate_limiter.
///
/// Precedence: an `exempt` route is never limited; otherwise a per-key
/// override (`rate_limit.overrides[].key`, exact match on the whole key such
/// as `org:acme`) wins; otherwise a route's own `rate_limit` fields (unset
/// fields inherit `rate_limit`); otherwise the global `rate_limit`.
///
/// Bucket identity (the `scope` handed to rate_limiter::check):
///  * global policy and per-key overrides: empty scope, one bucket per key
///    shared by every route without its own limit. An override is the key's
///    budget everywhere, including routes that set their own limit.
///  * a route with its own `rate_limit`: scope = the route's name (its
///    `path_prefix` if unnamed), so the same caller has separate buckets under
///    route A and route B and the global bucket is not charged.
///
/// An override inherits `algorithm` and `window` (unless it sets one) from
/// `rate_limit`; its `burst` defaults to 0 (= its own limit), because the
/// global burst is sized for the global limit.
/// With duplicate override keys the first one counts.
///
/// Thread-safety: immutable after construction; `select` may be called from
/// any number of threads. Built once per config load; `select` never allocates.

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "tollgate/config/config.hpp"
#include "tollgate/limit/algorithms.hpp"

namespace tollgate::limit {

/// The bucket a request is charged to.
struct bucket_selection {
    bucket_policy policy;
    /// Empty = the key's global bucket; else the route's scope. Points into
    /// the route_config passed to `select`, so it lives as long as the config.
    std::string_view scope;
};

class rate_policy {
public:
    explicit rate_policy(const rate_limit_config& config);

    /// The bucket for `key` on `route` (nullptr = no route matched), or
    /// nullopt when the route is exempt.
    std::optional<bucket_selection> select(std::string_view key,
                                           const route_config* route) const noexcept;

    /// The `rate_limit` policy with no override or route applied.
    const bucket_policy& global() const noexcept { return global_; }

private:
    struct string_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };

    bucket_policy global_;
    std::unordered_map<std::string, bucket_policy, string_hash, std::equal_to<>> overrides_;
};

}  // namespace tollgate::limit
