#include "tollgate/limit/rate_policy.hpp"

namespace tollgate::limit {

rate_policy::rate_policy(const rate_limit_config& config)
    : global_{config.algorithm, config.limit, config.window, config.burst} {
    overrides_.reserve(config.overrides.size());
    for (const rate_override& o : config.overrides) {
        const bucket_policy p{config.algorithm, o.limit, o.window.value_or(config.window),
                              o.burst.value_or(0)};
        overrides_.emplace(o.key, p);
    }
}

std::optional<bucket_selection> rate_policy::select(std::string_view key,
                                                    const route_config* route) const noexcept {
    if (route != nullptr && route->exempt) {
        return std::nullopt;
    }
    if (!overrides_.empty()) {
        if (const auto it = overrides_.find(key); it != overrides_.end()) {
            return bucket_selection{it->second, {}};
        }
    }
    if (route == nullptr || !route->rate_limit) {
        return bucket_selection{global_, {}};
    }
    const route_rate_limit& r = *route->rate_limit;
    const bucket_policy p{r.algorithm.value_or(global_.algorithm), r.limit.value_or(global_.limit),
                          r.window ? std::chrono::nanoseconds{*r.window} : global_.window,
                          r.effective_burst(global_.burst)};
    const std::string_view scope = route->name.empty() ? route->path_prefix : route->name;
    return bucket_selection{p, scope};
}

}  // namespace tollgate::limit
