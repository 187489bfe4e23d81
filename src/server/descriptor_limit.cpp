#include "tollgate/server/descriptor_limit.hpp"

#include <sys/resource.h>

#include <fstream>

#include "tollgate/admin/admin_server.hpp"

namespace tollgate::server {

descriptor_budget descriptors_needed(const config& cfg, std::size_t threads,
                                     std::optional<std::size_t> upstream_max) {
    descriptor_budget budget;
    budget.clients = cfg.client.max_connections;
    // Each thread's pool holds at least one connection.
    budget.upstream = std::max(upstream_max.value_or(cfg.upstream.max_connections), threads);
    budget.tunnels = cfg.websocket.max_tunnels;
    // The standard streams, listeners and the control loop; per thread an
    // epoll, an eventfd and a timerfd, a listener per port and a Redis
    // connection; the admin port's connections.
    budget.overhead = 16 + 8 * threads + admin::admin_server::max_connections;
    return budget;
}

namespace {

// The kernel's ceiling on any open-file limit; an unlimited hard limit
// cannot be set as the soft one.
rlim_t nr_open() {
    std::ifstream in("/proc/sys/fs/nr_open");
    unsigned long long value = 0;
    if (in >> value && value > 0) {
        return static_cast<rlim_t>(value);
    }
    return 1048576;  // the kernel's default
}

}  // namespace

descriptor_limit raise_descriptor_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
        return {};
    }
    descriptor_limit result{limit.rlim_cur, limit.rlim_cur};
    rlim_t target = limit.rlim_max;
    if (target == RLIM_INFINITY || target > nr_open()) {
        target = nr_open();
    }
    if (limit.rlim_cur != RLIM_INFINITY && target > limit.rlim_cur) {
        limit.rlim_cur = target;
        if (::setrlimit(RLIMIT_NOFILE, &limit) == 0) {
            result.now = target;
        }
    }
    return result;
}

std::uint64_t current_descriptor_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
        return 0;
    }
    return limit.rlim_cur;
}

std::optional<std::string> descriptor_limit_warning(const descriptor_budget& budget,
                                                    std::uint64_t limit) {
    if (limit == 0 || limit >= budget.total()) {
        return std::nullopt;
    }
    return "warning: the open-file limit (ulimit -n, LimitNOFILE= under systemd) is " +
           std::to_string(limit) + ", below the " + std::to_string(budget.total()) +
           " descriptors this configuration may hold open: client.max_connections " +
           std::to_string(budget.clients) + " + upstream.max_connections " +
           std::to_string(budget.upstream) + " + websocket.max_tunnels " +
           std::to_string(budget.tunnels) + " + " + std::to_string(budget.overhead) +
           " for listeners, admin and threads; past it new connections wait (accept retries "
           "every 50 ms) and upstream connects fail with 502. Raise the hard limit or lower "
           "those settings";
}

}  // namespace tollgate::server
