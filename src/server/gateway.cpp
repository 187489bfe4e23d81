#include "tollgate/server/gateway.hpp"

#include <algorithm>
#include <iterator>
#include <set>
#include <string>
#include <unordered_map>

#include "tollgate/config/loader.hpp"
#include "tollgate/proxy/tls.hpp"

namespace tollgate::server {
namespace {

/// A capacity a kept limiter takes once the whole runtime is built (a
/// reload that fails half way must leave the running limiters as they are).
using capacity_change = std::pair<std::shared_ptr<limit::concurrency_limiter>, std::size_t>;

using named_limiters =
    std::vector<std::pair<std::string, std::shared_ptr<limit::concurrency_limiter>>>;

/// The pool matches idle connections to their server by target identity: a
/// reload that keeps an http:// server (same URL, same addresses now) keeps
/// its target, so the connections pooled before the reload go on serving
/// instead of idling out while new ones are opened. An https:// server gets
/// a new target: its connections were verified against the CA of their
/// time, and `upstream.ca_file` may have changed, in name or on disk.
void keep_targets(proxy::upstream_group& group, const runtime& previous) {
    for (auto& target : group.targets) {
        if (target->server.scheme != "http") {
            continue;
        }
        // The URL fixes scheme, host and port.
        auto same = [&](const std::shared_ptr<const proxy::upstream_target>& old) {
            return old->server.url == target->server.url && old->endpoints == target->endpoints;
        };
        auto look_in = [&](const proxy::upstream_group& old) {
            const auto it = std::find_if(old.targets.begin(), old.targets.end(), same);
            return it == old.targets.end() ? nullptr : *it;
        };
        auto kept = look_in(*previous.default_upstream);
        for (std::size_t i = 0; !kept && i < previous.route_upstreams.size(); ++i) {
            kept = look_in(*previous.route_upstreams[i]);
        }
        if (kept) {
            target = std::move(kept);
        }
    }
}

/// Every limiter of `previous`, in use or parked, with its name ("" = the
/// global one, "route:" + the route's name).
named_limiters limiters_of(const runtime* previous) {
    named_limiters out;
    if (previous == nullptr) {
        return out;
    }
    if (previous->slots) {
        out.emplace_back("", previous->slots);
    }
    for (std::size_t i = 0; i < previous->cfg->routes.size(); ++i) {
        if (previous->cfg->routes[i].concurrency && previous->route_slots[i]) {
            out.emplace_back("route:" + previous->cfg->routes[i].name, previous->route_slots[i]);
        }
    }
    out.insert(out.end(), previous->parked_slots.begin(), previous->parked_slots.end());
    return out;
}

/// Takes the limiter named `name` out of `from` (null when there is none).
std::shared_ptr<limit::concurrency_limiter> take(named_limiters& from, std::string_view name) {
    for (auto it = from.begin(); it != from.end(); ++it) {
        if (it->first == name) {
            auto found = std::move(it->second);
            from.erase(it);
            return found;
        }
    }
    return nullptr;
}

std::shared_ptr<limit::concurrency_limiter> reuse_or_create(
    std::size_t capacity, const std::shared_ptr<limit::concurrency_limiter>& previous,
    std::vector<capacity_change>& changes) {
    if (capacity == 0) {
        return nullptr;
    }
    if (previous) {
        // Kept, not replaced: the slots held now must count against the new
        // capacity, or a reload would let in a whole capacity more.
        if (previous->capacity() != capacity) {
            changes.emplace_back(previous, capacity);
        }
        return previous;
    }
    return limit::concurrency_limiter::create(capacity);
}

/// Every limiter of `rt`, each once (a route without a `concurrency` of
/// its own shares the global one): first the `in_use` ones, then the parked.
struct limiter_list {
    std::vector<const limit::concurrency_limiter*> all;
    std::size_t in_use = 0;
};

limiter_list distinct_limiters(const runtime& rt) {
    limiter_list out;
    const auto add = [&](const std::shared_ptr<limit::concurrency_limiter>& limiter) {
        if (limiter && std::find(out.all.begin(), out.all.end(), limiter.get()) == out.all.end()) {
            out.all.push_back(limiter.get());
        }
    };
    add(rt.slots);
    for (const auto& limiter : rt.route_slots) {
        add(limiter);
    }
    out.in_use = out.all.size();
    for (const auto& [name, limiter] : rt.parked_slots) {
        add(limiter);
    }
    return out;
}

/// Slots held per key, added up over `limiters`.
std::vector<std::pair<std::string, std::size_t>> merged_in_flight(
    const std::vector<const limit::concurrency_limiter*>& limiters) {
    std::unordered_map<std::string, std::size_t> by_key;
    for (const auto* limiter : limiters) {
        for (auto& [key, count] : limiter->keys_in_flight()) {
            by_key[std::move(key)] += count;
        }
    }
    return {std::make_move_iterator(by_key.begin()), std::make_move_iterator(by_key.end())};
}

bool prefix_matches(std::string_view prefix, std::string_view path) {
    if (!path.starts_with(prefix)) {
        return false;
    }
    return path.size() == prefix.size() || prefix.ends_with('/') || path[prefix.size()] == '/';
}

}  // namespace

runtime::runtime(std::shared_ptr<const config> c)
    : cfg(std::move(c)), keys(cfg->keying), rates(cfg->rate_limit) {}

runtime::slot_totals runtime::slots_held() const {
    const auto limiters = distinct_limiters(*this);
    slot_totals totals;
    std::vector<const limit::concurrency_limiter*> busy;
    for (std::size_t i = 0; i < limiters.all.size(); ++i) {
        const std::size_t held = limiters.all[i]->in_flight();
        totals.in_flight += held;
        totals.queued += limiters.all[i]->queued();
        if (held > 0) {
            busy.push_back(limiters.all[i]);
        }
        if (i < limiters.in_use) {
            const std::size_t capacity = limiters.all[i]->capacity();
            totals.capacity += capacity;
            if (capacity > 0) {
                totals.saturation = std::max(
                    totals.saturation, static_cast<double>(held) / static_cast<double>(capacity));
            }
        }
    }
    // A key may hold slots of two limiters (a route's own and the global
    // ones) and is still one key; with one limiter busy, the usual case, no
    // key list is copied for a scrape.
    if (busy.size() == 1) {
        totals.active_keys = busy.front()->active_keys();
    } else if (busy.size() > 1) {
        totals.active_keys = merged_in_flight(busy).size();
    }
    return totals;
}

std::vector<std::pair<std::string, std::size_t>> runtime::top_in_flight(std::size_t n) const {
    const auto limiters = distinct_limiters(*this);
    if (limiters.all.size() == 1) {
        return limiters.all.front()->top_in_flight(n);
    }
    auto out = merged_in_flight(limiters.all);
    const std::size_t keep = std::min(n, out.size());
    std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(keep), out.end(),
                      [](const auto& a, const auto& b) { return a.second > b.second; });
    out.resize(keep);
    return out;
}

int runtime::match_route(std::string_view host, std::string_view path) const {
    if (auto colon = host.rfind(':');
        colon != std::string_view::npos && host.find(']', colon) == std::string_view::npos) {
        host = host.substr(0, colon);
    }
    // A fully qualified name (`api.example.com.`) is the same host to DNS
    // and to nginx's server_name.
    if (host.size() > 1 && host.back() == '.') {
        host.remove_suffix(1);
    }
    int best = -1;
    std::size_t best_len = 0;
    bool best_host = false;
    for (std::size_t i = 0; i < cfg->routes.size(); ++i) {
        const auto& r = cfg->routes[i];
        const bool host_specific = !r.host.empty();
        if (host_specific && !beast::iequals(r.host, host)) {
            continue;
        }
        if (!prefix_matches(r.path_prefix, path)) {
            continue;
        }
        const std::size_t len = r.path_prefix.size();
        if (best < 0 || len > best_len || (len == best_len && host_specific && !best_host)) {
            best = static_cast<int>(i);
            best_len = len;
            best_host = host_specific;
        }
    }
    return best;
}

std::vector<std::string> startup_problems(const config& cfg) {
    std::vector<std::string> problems;
    if (cfg.tls.listen) {
        try {
            proxy::make_server_context(cfg.tls);
        } catch (const std::exception& e) {
            problems.push_back(located(cfg, e.what()));
        }
    }
    // Every upstream with the key it came from, each host:port resolved once.
    std::vector<std::pair<std::string, const upstream_server*>> servers;
    for (std::size_t i = 0; i < cfg.upstream.servers.size(); ++i) {
        servers.emplace_back("upstream.servers[" + std::to_string(i) + "]",
                             &cfg.upstream.servers[i]);
    }
    for (std::size_t r = 0; r < cfg.routes.size(); ++r) {
        for (std::size_t i = 0; i < cfg.routes[r].upstream.size(); ++i) {
            servers.emplace_back(
                "routes[" + std::to_string(r) + "].upstream[" + std::to_string(i) + "]",
                &cfg.routes[r].upstream[i]);
        }
    }
    const bool any_tls = std::any_of(servers.begin(), servers.end(),
                                     [](const auto& s) { return s.second->scheme == "https"; });
    if (any_tls) {
        try {
            proxy::make_upstream_context(cfg.upstream);
        } catch (const std::exception& e) {
            problems.push_back(located(cfg, e.what()));
        }
    }
    std::set<std::pair<std::string, std::uint16_t>> resolved;
    for (const auto& [key, server] : servers) {
        if (!resolved.emplace(server->host, server->port).second) {
            continue;
        }
        try {
            proxy::resolve_server(*server);
        } catch (const std::exception& e) {
            problems.push_back(located(cfg, key + ": " + e.what()));
        }
    }
    return problems;
}

std::shared_ptr<const runtime> build_runtime(std::shared_ptr<const config> cfg,
                                             const runtime* previous) {
    auto rt = std::make_shared<runtime>(cfg);
    const auto group_of = [&](const std::vector<upstream_server>& servers, const std::string& key) {
        auto group = proxy::resolve_group(servers, cfg->upstream, key);
        if (previous) {
            keep_targets(*group, *previous);
        }
        return group;
    };
    rt->default_upstream = group_of(cfg->upstream.servers, "upstream.servers");
    if (cfg->tls.listen) {
        rt->tls_server = proxy::make_server_context(cfg->tls);
    } else if (previous) {
        // Listeners change only on restart: a TLS listener opened at startup
        // keeps its certificate when a reload drops `tls:`.
        rt->tls_server = previous->tls_server;
    }
    std::vector<capacity_change> changes;
    named_limiters before = limiters_of(previous);
    // Taken only when used: a limiter left in `before` is parked below.
    const auto reuse = [&](std::size_t capacity, std::string_view name) {
        return reuse_or_create(capacity, capacity == 0 ? nullptr : take(before, name), changes);
    };
    rt->slots = reuse(cfg->concurrency.capacity, "");
    for (std::size_t i = 0; i < cfg->routes.size(); ++i) {
        const auto& route = cfg->routes[i];
        rt->route_upstreams.push_back(
            route.upstream.empty()
                ? rt->default_upstream
                : group_of(route.upstream, "routes[" + std::to_string(i) + "].upstream"));
        // Counters follow the route's name across reloads.
        std::shared_ptr<admin::route_counters> counters;
        if (previous) {
            for (const auto& c : previous->route_counters) {
                if (c->name == route.name) {
                    counters = c;
                }
            }
        }
        rt->route_counters.push_back(
            counters ? counters : std::make_shared<admin::route_counters>(route.name));
        if (!route.concurrency) {
            rt->route_slots.push_back(rt->slots);
            continue;
        }
        // A route keeps its limiter across reloads while its name stays.
        rt->route_slots.push_back(reuse(*route.concurrency, "route:" + route.name));
    }
    // Every limiter not taken over is kept, also one with no slot held now:
    // a session that read its head under an older runtime may still take a
    // slot from it. Except one the previous runtime had parked already that
    // holds no slot and that nothing else refers to (only `before` and that
    // parked list: no older runtime is left to hand it out, no slot to
    // return to it): it can never be used again, and keeping every limiter
    // of every route name ever configured would grow with each rename.
    const auto parked_before = [&](const std::shared_ptr<limit::concurrency_limiter>& limiter) {
        return previous && std::any_of(previous->parked_slots.begin(), previous->parked_slots.end(),
                                       [&](const auto& p) { return p.second == limiter; });
    };
    for (auto& [name, limiter] : before) {
        if (!limiter) {
            continue;
        }
        if (parked_before(limiter) && limiter.use_count() == 2 && limiter->in_flight() == 0) {
            continue;
        }
        rt->parked_slots.emplace_back(name, std::move(limiter));
    }
    for (const auto& [slots, capacity] : changes) {
        slots->set_capacity(capacity);
    }
    return rt;
}

gateway::gateway(std::shared_ptr<const runtime> initial, std::size_t workers,
                 const limit::clock* time)
    : clock(time ? *time : steady_clock_),
      limiter(clock, initial->cfg->rate_limit.max_keys),
      metrics(workers),
      runtime_(std::move(initial)) {}

admin::gauge_values gateway::gauges() const {
    admin::gauge_values g;
    auto rt = current();
    const auto slots = rt->slots_held();
    g.inflight_slots = static_cast<double>(slots.in_flight);
    g.concurrency_capacity = static_cast<double>(slots.capacity);
    g.active_keys = static_cast<double>(slots.active_keys);
    g.slots_queued = static_cast<double>(slots.queued);
    g.slots_saturation = slots.saturation;
    g.ratelimit_keys = static_cast<double>(limiter.size());
    g.ratelimit_evictions = limiter.evictions();
    g.client_connections = static_cast<double>(client_connections.load());
    g.upstream_connections = static_cast<double>(upstream_connections.load());
    g.draining = draining() ? 1 : 0;
    g.tunnels_open = static_cast<double>(tunnels.open());
    g.store_fallback = redis.fallback() ? 1 : 0;
    g.routes.assign(rt->route_counters.begin(), rt->route_counters.end());
    for (std::size_t i = 0; i < rt->route_slots.size(); ++i) {
        const auto& own = rt->route_slots[i];
        if (own && rt->cfg->routes[i].concurrency) {
            g.route_slots.push_back({rt->cfg->routes[i].name, static_cast<double>(own->in_flight()),
                                     static_cast<double>(own->capacity())});
        }
    }
    return g;
}

}  // namespace tollgate::server
