#pragma once
/// @file descriptor_limit.hpp
/// The open-file limit (`RLIMIT_NOFILE`, `ulimit -n`) against what a
/// configuration may hold open. Debian's shells and systemd's services start
/// with a soft limit of 1024, which a proxy reaches at about 500 proxied
/// clients (each holds a client and an upstream socket); the hard limit is
/// usually far higher. So tollgate raises its soft limit to the hard one at
/// startup, as Go programs do, and warns when even that is below what its
/// configuration allows. Past the limit, accepting fails (and retries every
/// 50 ms) and upstream connects fail with 502.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "tollgate/config/config.hpp"

namespace tollgate::server {

/// What a configuration may hold open at once, by part.
struct descriptor_budget {
    std::size_t clients = 0;   ///< client.max_connections
    std::size_t upstream = 0;  ///< upstream.max_connections (the pools' connections)
    std::size_t tunnels = 0;   ///< websocket.max_tunnels (their upstream side leaves the pool)
    std::size_t overhead = 0;  ///< listeners, admin connections, Redis, each thread's event loop

    std::size_t total() const { return clients + upstream + tunnels + overhead; }
};

/// The budget of `cfg` run by `threads` worker threads. `upstream_max`
/// overrides `cfg.upstream.max_connections` (a reload keeps the running
/// pools' size).
descriptor_budget descriptors_needed(const config& cfg, std::size_t threads,
                                     std::optional<std::size_t> upstream_max = std::nullopt);

/// The soft open-file limit before and after raise_descriptor_limit().
struct descriptor_limit {
    std::uint64_t before = 0;
    std::uint64_t now = 0;
};

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (at most
/// `fs.nr_open`, which an unlimited hard limit stands for). Never lowers
/// it; when the kernel refuses, the limit stays as it was.
descriptor_limit raise_descriptor_limit();

/// The soft open-file limit now.
std::uint64_t current_descriptor_limit();

/// "warning: ..." naming the limit, the budget and the keys it comes from,
/// when `limit` is below `budget.total()`; nothing otherwise.
std::optional<std::string> descriptor_limit_warning(const descriptor_budget& budget,
                                                    std::uint64_t limit);

}  // namespace tollgate::server
