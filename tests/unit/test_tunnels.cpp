#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tollgate/limit/tunnels.hpp"

using tollgate::limit::tunnel_limiter;

TEST_CASE("tunnels: the per-key cap refuses the next tunnel, a close frees one", "[tunnels]") {
    tunnel_limiter tunnels;
    auto a = tunnels.try_open("ip:1", 2, 100);
    auto b = tunnels.try_open("ip:1", 2, 100);
    REQUIRE(a);
    REQUIRE(b);
    CHECK_FALSE(tunnels.try_open("ip:1", 2, 100));
    CHECK(tunnels.try_open("ip:2", 2, 100));  // another key has its own cap (and closes at once)
    CHECK(tunnels.open("ip:1") == 2);
    a->release();
    a->release();  // idempotent
    CHECK(tunnels.open("ip:1") == 1);
    CHECK(tunnels.try_open("ip:1", 2, 100));
}

TEST_CASE("tunnels: the global cap counts all keys", "[tunnels]") {
    tunnel_limiter tunnels;
    std::vector<tunnel_limiter::ticket> held;
    for (int i = 0; i < 3; ++i) {
        auto t = tunnels.try_open("k" + std::to_string(i), 10, 3);
        REQUIRE(t);
        held.push_back(std::move(*t));
    }
    CHECK_FALSE(tunnels.try_open("k9", 10, 3));
    CHECK(tunnels.open() == 3);
    held.pop_back();
    CHECK(tunnels.open() == 2);
    CHECK(tunnels.try_open("k9", 10, 3));
}

TEST_CASE("tunnels: max_per_key 0 allows none and keeps no entry", "[tunnels]") {
    tunnel_limiter tunnels;
    CHECK_FALSE(tunnels.try_open("ip:1", 0, 100));
    CHECK(tunnels.open() == 0);
    CHECK(tunnels.open("ip:1") == 0);
}

TEST_CASE("tunnels: a moved ticket releases once", "[tunnels]") {
    tunnel_limiter tunnels;
    auto t = tunnels.try_open("ip:1", 5, 5);
    REQUIRE(t);
    tunnel_limiter::ticket moved = std::move(*t);
    tunnel_limiter::ticket assigned;
    assigned = std::move(moved);
    CHECK(tunnels.open() == 1);
    assigned.release();
    CHECK(tunnels.open() == 0);
    CHECK(tunnels.open("ip:1") == 0);
}

TEST_CASE("tunnels: threads opening and closing never pass the caps", "[tunnels]") {
    tunnel_limiter tunnels;
    std::atomic<int> over{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 20000; ++i) {
                auto ticket = tunnels.try_open(t % 2 == 0 ? "a" : "b", 3, 5);
                if (ticket && (tunnels.open() > 5 || tunnels.open("a") > 3)) {
                    over++;
                }
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    CHECK(over.load() == 0);
    CHECK(tunnels.open() == 0);
}
