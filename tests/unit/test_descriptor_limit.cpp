#include <sys/resource.h>

#include <catch2/catch.hpp>

#include "tollgate/server/descriptor_limit.hpp"

using namespace tollgate;
using namespace tollgate::server;

TEST_CASE("descriptor budget: what a configuration may hold open, by key", "[descriptors]") {
    config cfg;  // the defaults: 10000 clients, 1024 upstream, 4096 tunnels
    const auto budget = descriptors_needed(cfg, 2);
    CHECK(budget.clients == 10000);
    CHECK(budget.upstream == 1024);
    CHECK(budget.tunnels == 4096);
    CHECK(budget.overhead == 16 + 2 * 8 + 64);
    CHECK(budget.total() == 10000 + 1024 + 4096 + 96);

    cfg.client.max_connections = 100;
    cfg.websocket.max_tunnels = 10;
    // A reload keeps the running pools' size; each thread's pool holds one at least.
    CHECK(descriptors_needed(cfg, 2, 16).upstream == 16);
    CHECK(descriptors_needed(cfg, 4, 2).upstream == 4);
    CHECK(descriptors_needed(cfg, 1, 16).total() == 100 + 16 + 10 + 16 + 8 + 64);
}

TEST_CASE("descriptor limit: a warning only below the budget, naming each part", "[descriptors]") {
    descriptor_budget budget{100, 16, 10, 88};
    CHECK_FALSE(descriptor_limit_warning(budget, 214));
    CHECK_FALSE(descriptor_limit_warning(budget, 1 << 20));
    CHECK_FALSE(descriptor_limit_warning(budget, 0));  // unknown: nothing to say
    const auto warning = descriptor_limit_warning(budget, 213);
    REQUIRE(warning);
    CHECK(*warning ==
          "warning: the open-file limit (ulimit -n, LimitNOFILE= under systemd) is 213, below "
          "the 214 descriptors this configuration may hold open: client.max_connections 100 + "
          "upstream.max_connections 16 + websocket.max_tunnels 10 + 88 for listeners, admin "
          "and threads; past it new connections wait (accept retries every 50 ms) and upstream "
          "connects fail with 502. Raise the hard limit or lower those settings");
}

TEST_CASE("descriptor limit: the soft limit is raised to the hard one, never lowered",
          "[descriptors]") {
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    if (saved.rlim_max == RLIM_INFINITY || saved.rlim_max < 128) {
        SUCCEED("the hard limit leaves nothing to show here");
        return;
    }
    rlimit low = saved;
    low.rlim_cur = 64;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    const auto raised = raise_descriptor_limit();
    CHECK(raised.before == 64);
    CHECK(raised.now == saved.rlim_max);
    CHECK(current_descriptor_limit() == saved.rlim_max);
    // At the hard limit already: nothing changes.
    const auto again = raise_descriptor_limit();
    CHECK(again.before == saved.rlim_max);
    CHECK(again.now == saved.rlim_max);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
}
