#include "tollgate/server/gateway.hpp"

namespace tollgate::server {

std::shared_ptr<const runtime> build_runtime(std::shared_ptr<const config> cfg) {
    auto rt = std::make_shared<runtime>();
    rt->default_upstream = proxy::resolve_group(cfg->upstream.servers);
    for (const auto& route : cfg->routes) {
        rt->route_upstreams.push_back(
            route.upstream.empty() ? rt->default_upstream : proxy::resolve_group(route.upstream));
    }
    rt->cfg = std::move(cfg);
    return rt;
}

gateway::gateway(std::shared_ptr<const runtime> initial) : runtime_(std::move(initial)) {}

}  // namespace tollgate::server
