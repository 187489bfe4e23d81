// Distributed limiting (DESIGN.md section 9): several tollgate instances
// in-process, each with its own Redis connections, on one real redis-server
// that the test starts on a free port — and kills, pauses and restarts.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "process.hpp"
#include "redis_server.hpp"
#include "support.hpp"
#include "tollgate/config/values.hpp"
#include "tollgate/limit/clock.hpp"
#include "tollgate/store/redis_scripts.hpp"
#include "tollgate/store/redis_store.hpp"

using namespace tollgate;
using namespace tollgate::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

/// A config file for the tollgate binary: two threads, ports 0, no access
/// log, in front of 127.0.0.1:`upstream_port`, with `extra` YAML lines.
std::string binary_yaml(std::uint16_t upstream_port, const std::string& extra) {
    return "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nthreads: 2\n"
           "upstream: {servers: [http://127.0.0.1:" +
           std::to_string(upstream_port) + "]}\nlog: {access_log: false}\n" + extra;
}

request make_get(std::string_view target) {
    request req{http::verb::get, target, 11};
    req.set(http::field::host, "localhost");
    return req;
}

struct outcome {
    int status = 0;
    std::string limit;
    std::string remaining;
    std::string retry_after;
    std::chrono::nanoseconds took{0};
};

outcome timed_get(client& c) {
    const auto start = steady::now();
    auto res = c.send(make_get("/echo"));
    outcome o;
    o.took = steady::now() - start;
    o.status = res.result_int();
    o.limit = std::string(res["X-RateLimit-Limit"]);
    o.remaining = std::string(res["X-RateLimit-Remaining"]);
    o.retry_after = std::string(res[http::field::retry_after]);
    return o;
}

/// `threads` keep-alive clients, client i on ports[i % n], `each` requests each.
std::vector<outcome> hammer(const std::vector<std::uint16_t>& ports, int threads, int each) {
    std::mutex mutex;
    std::vector<outcome> all;
    std::vector<std::thread> clients;
    for (int t = 0; t < threads; ++t) {
        clients.emplace_back([&, t] {
            std::vector<outcome> mine;
            try {
                client c(ports[static_cast<std::size_t>(t) % ports.size()]);
                for (int i = 0; i < each; ++i) {
                    mine.push_back(timed_get(c));
                }
            } catch (const std::exception&) {
                mine.push_back(outcome{});  // status 0: counted as neither 200 nor 429
            }
            std::lock_guard lock(mutex);
            all.insert(all.end(), mine.begin(), mine.end());
        });
    }
    for (auto& c : clients) {
        c.join();
    }
    return all;
}

int count_status(const std::vector<outcome>& all, int status) {
    return static_cast<int>(std::count_if(all.begin(), all.end(),
                                          [&](const outcome& o) { return o.status == status; }));
}

std::string metrics_of(running_proxy& p) {
    return get(p.admin_port(), "/metrics").body();
}

/// One request on a fresh connection (so the kernel spreads them over workers).
outcome fresh_get(std::uint16_t port) {
    client c(port);
    return timed_get(c);
}

/// redis_test_config with one worker (one Redis connection) and `limit` per window.
config one_worker_config(std::uint16_t upstream_port, const redis_server& redis,
                         std::uint64_t limit) {
    auto cfg = redis_test_config(upstream_port, redis);
    cfg.threads = 1;
    cfg.rate_limit.limit = limit;
    return cfg;
}

/// Lines of `text` (a process's stderr) that contain `what`.
int lines_with(const std::string& text, std::string_view what) {
    int n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
        ++n;
    }
    return n;
}

/// A config file for the tollgate binary: 1000 per hour, decided in the
/// Redis at `url` by two instances (so a fallback bucket of 500).
std::string shared_limit_config(const std::string& name, std::uint16_t upstream_port,
                                const std::string& url) {
    return write_temp_file(name, binary_yaml(upstream_port,
                                             "rate_limit: {limit: 1000, window: 1h}\n"
                                             "store: {type: redis, redis: {url: \"" +
                                                 url + "\", instances: 2}}\n"));
}

/// The value of `tollgate_store_fallback` on an admin port, -1 if absent.
int fallback_gauge(std::uint16_t admin_port) {
    // The HELP line also reads "tollgate_store_fallback 1 while ...": match the sample.
    const auto body = get(admin_port, "/metrics").body();
    for (int v : {0, 1}) {
        if (body.find("\ntollgate_store_fallback " + std::to_string(v) + "\n") !=
            std::string::npos) {
            return v;
        }
    }
    return -1;
}

const char* name_of(algorithm_kind a) {
    switch (a) {
        case algorithm_kind::gcra:
            return "gcra";
        case algorithm_kind::token_bucket:
            return "token_bucket";
        case algorithm_kind::fixed_window:
            return "fixed_window";
        case algorithm_kind::sliding_window:
            return "sliding_window";
    }
    return "?";
}

}  // namespace

TEST_CASE("two and three instances on one Redis pass exactly `limit` requests in total",
          "[redis][distributed]") {
    redis_server redis;
    test_upstream up;
    for (auto algorithm : {algorithm_kind::gcra, algorithm_kind::token_bucket,
                           algorithm_kind::fixed_window, algorithm_kind::sliding_window}) {
        for (int instances : {2, 3}) {
            INFO(name_of(algorithm) << " with " << instances << " instances");
            redis.command({"FLUSHALL"});
            constexpr int limit = 40;
            auto cfg = redis_test_config(up.port(), redis);
            cfg.rate_limit.algorithm = algorithm;
            cfg.rate_limit.limit = limit;
            cfg.rate_limit.window = std::chrono::hours(1);  // nothing refills during the test
            // Generous here: this test is about exactness, not about timeouts
            // on a loaded CI machine (those are the failure tests below).
            cfg.store.redis.timeout = 2000ms;
            cfg.store.redis.instances = static_cast<std::uint32_t>(instances);
            std::vector<std::unique_ptr<running_proxy>> proxies;
            std::vector<std::uint16_t> ports;
            for (int i = 0; i < instances; ++i) {
                proxies.push_back(std::make_unique<running_proxy>(cfg));
                ports.push_back(proxies.back()->port());
            }

            // One key (ip:127.0.0.1) from 12 concurrent clients over all instances.
            auto all = hammer(ports, 12, 4 * limit / 12 + 1);
            CHECK(count_status(all, 200) == limit);
            CHECK(count_status(all, 429) == static_cast<int>(all.size()) - limit);

            // Headers agree across instances: every pass saw a different
            // remaining count, exactly limit-1 down to 0, as one bucket would.
            std::multiset<int> remaining;
            std::set<std::string> retry_after;
            for (const auto& o : all) {
                CHECK(o.limit == std::to_string(limit));
                if (o.status == 200) {
                    remaining.insert(std::stoi(o.remaining));
                } else {
                    CHECK(o.remaining == "0");
                    retry_after.insert(o.retry_after);
                }
            }
            std::multiset<int> expected;
            for (int r = 0; r < limit; ++r) {
                expected.insert(r);
            }
            CHECK(remaining == expected);
            // Refusals agree on Retry-After (allowing one rounding step).
            REQUIRE_FALSE(retry_after.empty());
            CHECK(std::stoll(*retry_after.rbegin()) - std::stoll(*retry_after.begin()) <= 1);

            for (auto& p : proxies) {
                CHECK_FALSE(p->srv().gw().redis.fallback());
                CHECK(p->srv().gw().redis.errors(store::redis_error_kind::timeout) == 0);
            }
        }
    }
}

TEST_CASE("refused traffic is answered from the over-limit cache, not by Redis", "[redis][cache]") {
    redis_server redis;
    test_upstream up;
    auto cfg = redis_test_config(up.port(), redis);
    cfg.rate_limit.limit = 5;
    cfg.rate_limit.window = std::chrono::hours(1);
    running_proxy gw(cfg);
    client c(gw.port());
    for (int i = 0; i < 5; ++i) {
        REQUIRE(c.send(make_get("/echo")).result_int() == 200);
    }
    const auto before = redis.calls("evalsha");
    auto all = hammer({gw.port()}, 4, 50);
    CHECK(count_status(all, 429) == 200);
    // Only requests already in flight when a worker learnt the refusal went
    // to Redis (at most one per client here); the rest is answered locally
    // until the retry time, 12 minutes away.
    const auto calls = redis.calls("evalsha") - before;
    CHECK(calls <= 4);
    for (const auto& o : all) {
        CHECK(o.remaining == "0");
        CHECK(o.limit == "5");
        CHECK(std::stoll(o.retry_after) > 700);
    }
    auto metrics = metrics_of(gw);
    CHECK(metrics.find("tollgate_store_duration_seconds_count") != std::string::npos);
    CHECK(metrics.find("tollgate_store_errors_total{kind=\"timeout\"} 0") != std::string::npos);
}

TEST_CASE("under load, refills pass as in one bucket while Redis sees few calls",
          "[redis][cache]") {
    redis_server redis;
    test_upstream up;
    auto cfg = redis_test_config(up.port(), redis);
    cfg.rate_limit.limit = 10;
    cfg.rate_limit.window = 1000ms;   // gcra: 10 at once, then one every 100 ms
    cfg.store.redis.timeout = 500ms;  // exactness here, not timeouts on a busy machine
    std::vector<std::unique_ptr<running_proxy>> proxies;
    proxies.push_back(std::make_unique<running_proxy>(cfg));
    proxies.push_back(std::make_unique<running_proxy>(cfg));
    const auto before = redis.calls("evalsha");
    std::atomic<int> passed{0};
    std::atomic<int> total{0};
    const auto start = steady::now();
    std::vector<std::thread> clients;
    for (int t = 0; t < 8; ++t) {
        clients.emplace_back([&, t] {
            try {
                client c(proxies[static_cast<std::size_t>(t) % 2]->port());
                while (steady::now() - start < 1500ms) {
                    passed += timed_get(c).status == 200 ? 1 : 0;
                    ++total;
                }
            } catch (const std::exception&) {
            }
        });
    }
    for (auto& c : clients) {
        c.join();
    }
    const auto elapsed = steady::now() - start;
    const auto refills = static_cast<int>(elapsed / 100ms);
    INFO(total.load() << " requests in " << elapsed / 1ms << " ms");
    // The burst plus one per 100 ms, never more; cached refusals expire early
    // rather than late, so at most a boundary's worth fewer.
    CHECK(passed <= 10 + refills + 1);
    CHECK(passed >= 10 + refills - 2);
    // Redis saw about two calls per refill and instance worker, not one per request.
    const auto calls = redis.calls("evalsha") - before;
    CHECK(calls < 10 + 4 * 4 * (refills + 1));
    CHECK(calls * 10 < total);
    for (auto& p : proxies) {
        CHECK(p->srv().gw().redis.errors(store::redis_error_kind::timeout) == 0);
    }
}

TEST_CASE("Redis killed: fail-open keeps serving within limit / instances, then recovers",
          "[redis][failure]") {
    redis_server redis;
    test_upstream up;
    auto cfg = redis_test_config(up.port(), redis);
    cfg.rate_limit.limit = 20;
    cfg.rate_limit.window = std::chrono::hours(1);
    cfg.store.redis.instances = 2;  // local bound: 10
    running_proxy gw(cfg);
    auto& shared = gw.srv().gw().redis;
    client c(gw.port());
    for (int i = 0; i < 3; ++i) {
        auto o = timed_get(c);
        CHECK(o.status == 200);
        CHECK(o.limit == "20");  // decided in Redis
    }

    redis.kill();
    std::vector<outcome> during;
    for (int i = 0; i < 30; ++i) {
        during.push_back(fresh_get(gw.port()));
    }
    // Exactly the local bucket's 10 pass, the rest is refused, nothing fails.
    CHECK(count_status(during, 200) == 10);
    CHECK(count_status(during, 429) == 20);
    auto slowest = std::max_element(during.begin(), during.end(), [](auto& a, auto& b) {
                       return a.took < b.took;
                   })->took;
    CHECK(slowest < 20ms + 300ms);  // no request waits for a dead Redis
    for (const auto& o : during) {
        CHECK(o.limit == "10");
    }
    CHECK(shared.fallback());
    // The idle connection's close is routine (see "Redis closing an idle
    // connection..."); the death shows in the reconnects that fail.
    CHECK(shared.errors(store::redis_error_kind::connect) >= 1);
    CHECK(metrics_of(gw).find("tollgate_store_errors_total{kind=\"connect\"}") !=
          std::string::npos);

    // Back in Redis within seconds of its return, on every worker.
    redis.restart();
    const auto back = steady::now();
    CHECK(eventually([&] { return fresh_get(gw.port()).limit == "20" && !shared.fallback(); }, 5s));
    CHECK(steady::now() - back < 3s);
}

TEST_CASE("Redis back: one busy worker clears the fallback gauge while the other idles",
          "[redis][failure]") {
    redis_server redis;
    test_upstream up;
    tollgate_process p(
        {"--config", shared_limit_config("redis-fallback.yaml", up.port(), redis.url())});
    REQUIRE(p.wait_listening());
    auto gauge_is = [&](int v) { return fallback_gauge(p.admin_port()) == v; };
    REQUIRE(fresh_get(p.port()).limit == "1000");

    // Fresh connections spread over both workers (SO_REUSEPORT): both fall back.
    redis.kill();
    for (int i = 0; i < 40; ++i) {
        CHECK(fresh_get(p.port()).status == 200);
    }
    REQUIRE(p.wait_for_log("redis unreachable; store.redis.failure_mode decides"));
    CHECK(gauge_is(1));

    // Only the worker holding this keep-alive connection sees traffic now.
    redis.restart();
    client c(p.port());
    REQUIRE(eventually([&] { return timed_get(c).limit == "1000"; }, 5s));
    CHECK(gauge_is(0));
    CHECK(p.wait_for_log("redis reachable again; deciding in redis"));
    p.signal(SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("Redis killed: fail-closed answers 503 with Retry-After, then recovers",
          "[redis][failure]") {
    redis_server redis;
    test_upstream up;
    auto cfg = redis_test_config(up.port(), redis);
    cfg.rate_limit.limit = 100;
    cfg.store.redis.on_failure = failure_mode::closed;
    running_proxy gw(cfg);
    CHECK(get(gw.port(), "/echo").result_int() == 200);

    redis.kill();
    for (int i = 0; i < 10; ++i) {
        const auto start = steady::now();
        auto res = get(gw.port(), "/echo");
        CHECK(steady::now() - start < 320ms);
        CHECK(res.result_int() == 503);
        CHECK(res[http::field::retry_after] == "1");
        auto body = nlohmann::json::parse(res.body());
        CHECK(body["error"] == "rate limit store unavailable");
    }
    CHECK(up.stats.requests.load() == 1);  // nothing reached the upstream

    redis.restart();
    CHECK(eventually([&] { return get(gw.port(), "/echo").result_int() == 200; }, 5s));
}

TEST_CASE("Redis down with dry_run and fail-closed: requests are forwarded, not 503",
          "[redis][failure]") {
    // dry_run never refuses, an unavailable store included.
    redis_server redis;
    test_upstream up;
    auto cfg = redis_test_config(up.port(), redis);
    cfg.rate_limit.limit = 100;
    cfg.rate_limit.dry_run = true;
    cfg.store.redis.on_failure = failure_mode::closed;
    running_proxy gw(cfg);
    redis.kill();
    for (int i = 0; i < 5; ++i) {
        auto res = get(gw.port(), "/echo");
        CHECK(res.result_int() == 200);
        CHECK(res["X-RateLimit-Limit"].empty());  // no decision was made
    }
    CHECK(up.stats.requests.load() == 5);
    CHECK(metrics_of(gw).find("tollgate_requests_total{decision=\"allowed\",reason="
                              "\"store_unavailable\",key_type=\"ip\"} 5") != std::string::npos);
}

TEST_CASE("Redis paused: decisions wait at most the timeout, then Redis decides again",
          "[redis][failure]") {
    redis_server redis;
    test_upstream up;
    auto cfg = redis_test_config(up.port(), redis);
    cfg.rate_limit.limit = 1000;
    cfg.rate_limit.window = std::chrono::hours(1);
    cfg.store.redis.instances = 2;
    cfg.store.redis.timeout = 20ms;
    running_proxy gw(cfg);
    auto& shared = gw.srv().gw().redis;
    client c(gw.port());
    REQUIRE(timed_get(c).limit == "1000");

    redis.command({"CLIENT", "PAUSE", "2000"});
    const auto paused = steady::now();
    std::vector<outcome> during;
    while (steady::now() - paused < 1500ms) {
        during.push_back(timed_get(c));
        std::this_thread::sleep_for(5ms);  // paced: at most ~300, within the local 500
    }
    REQUIRE(during.size() >= 5);
    for (const auto& o : during) {
        CHECK(o.status == 200);
        CHECK(o.limit == "500");  // the local bucket: limit / instances
        // Bounded: about the timeout (20 ms) for the first, nothing after.
        CHECK(o.took < 20ms + 300ms);
    }
    CHECK(shared.errors(store::redis_error_kind::timeout) >= 1);
    CHECK(shared.fallback());

    // The pause ends at 2 s; within seconds Redis decides again.
    CHECK(eventually([&] { return timed_get(c).limit == "1000"; }, 6s));
    CHECK(steady::now() - paused < 5s);
    CHECK(
        eventually([&] { return fresh_get(gw.port()).limit == "1000" && !shared.fallback(); }, 5s));
}

TEST_CASE("Redis closing an idle connection costs no decision: the next request reconnects",
          "[redis][failure]") {
    // A restart while idle, `timeout N` in redis.conf, CLIENT KILL: the
    // connection is found gone by the next request, which must reconnect
    // and wait for Redis rather than decide without it. Routine (Redis'
    // `timeout` closes idle clients every few minutes): no store error, no
    // warning.
    redis_server redis;
    test_upstream up;
    auto cfg = one_worker_config(up.port(), redis, 100);
    cfg.store.redis.on_failure = failure_mode::closed;
    captured_stderr err;
    running_proxy gw(cfg);
    auto& shared = gw.srv().gw().redis;
    REQUIRE(fresh_get(gw.port()).limit == "100");
    for (int round = 0; round < 3; ++round) {
        INFO("round " << round);
        // Kills every worker's connection (not the test's own).
        REQUIRE(redis.command({"CLIENT", "KILL", "TYPE", "normal"}).integer >= 1);
        for (int i = 0; i < 4; ++i) {
            auto o = fresh_get(gw.port());
            CHECK(o.status == 200);
            CHECK(o.limit == "100");
        }
    }
    CHECK_FALSE(shared.fallback());
    CHECK(up.stats.requests.load() == 13);
    CHECK(shared.errors(store::redis_error_kind::connection) == 0);
    CHECK(err.text().find("connection lost") == std::string::npos);
}

TEST_CASE("Redis lost with a decision outstanding counts as a lost connection, said once",
          "[redis][failure]") {
    // Unlike an idle close, a reply was owed. CLIENT PAUSE WRITE holds the
    // worker's script in Redis while the test's own connection can still
    // read INFO; the store's timeout is long enough that it is still owed.
    redis_server redis;
    test_upstream up;
    auto cfg = one_worker_config(up.port(), redis, 100);
    cfg.store.redis.timeout = std::chrono::milliseconds(5000);
    std::string log;
    {
        const captured_stderr err;
        {
            running_proxy gw(cfg);
            auto& shared = gw.srv().gw().redis;
            REQUIRE(fresh_get(gw.port()).limit == "100");  // connected, script loaded
            REQUIRE(redis.command({"CLIENT", "PAUSE", "10000", "WRITE"}).text == "OK");
            std::thread request([&] { fresh_get(gw.port()); });
            const auto blocked = [&] {
                return redis.command({"INFO", "clients"}).text.find("blocked_clients:1") !=
                       std::string::npos;
            };
            const bool held = eventually(blocked, 5s);
            redis.kill();
            request.join();
            REQUIRE(held);
            CHECK(eventually(
                [&] { return shared.errors(store::redis_error_kind::connection) == 1; }, 5s));
        }
        log = err.text();
    }
    CHECK(lines_with(log, "connection lost") == 1);
}

TEST_CASE("Redis answering READONLY is left and reconnected to, deciding locally meanwhile",
          "[redis][failure]") {
    // A primary demoted to a replica (a failover) refuses every write: not
    // one key's trouble. The worker drops the connection and reconnects
    // with backoff, and the fallback gauge says decisions are local.
    redis_server redis;
    test_upstream up;
    auto cfg = one_worker_config(up.port(), redis, 100);
    cfg.store.redis.instances = 2;  // local bound: 50
    running_proxy gw(cfg);
    auto& shared = gw.srv().gw().redis;
    client c(gw.port());
    REQUIRE(timed_get(c).limit == "100");
    const auto connections = [&] {
        auto info = redis.command({"INFO", "stats"}).text;
        const auto at = info.find("total_connections_received:");
        return std::stoll(info.substr(at + std::string_view("total_connections_received:").size()));
    };
    const long long before = connections();

    // A replica of a primary that is not there: read-only.
    redis.command({"REPLICAOF", "127.0.0.1", "1"});
    std::vector<outcome> during;
    for (int i = 0; i < 20; ++i) {
        during.push_back(timed_get(c));
    }
    for (const auto& o : during) {
        CHECK(o.status == 200);
        CHECK(o.limit == "50");  // decided locally
    }
    CHECK(shared.fallback());
    CHECK(shared.errors(store::redis_error_kind::reply) >= 1);
    // Reconnected (with backoff, by the requests that come).
    CHECK(eventually(
        [&] {
            CHECK(timed_get(c).limit == "50");
            return connections() > before + 1;
        },
        5s));

    redis.command({"REPLICAOF", "NO", "ONE"});
    CHECK(eventually([&] { return timed_get(c).limit == "100" && !shared.fallback(); }, 5s));
}

TEST_CASE("a Redis Cluster node is left as a whole: MOVED keys are no local decisions",
          "[redis][failure]") {
    // Cluster is not supported. Answering the keys of other shards locally
    // (MOVED was taken for one key's error) left the gauge at 0 while most
    // keys were decided per instance for good: every limit silently split.
    const std::string nodes_a = write_temp_file("cluster-a.conf", "");
    const std::string nodes_b = write_temp_file("cluster-b.conf", "");
    std::filesystem::remove(nodes_a);
    std::filesystem::remove(nodes_b);
    redis_server a({"--cluster-enabled", "yes", "--cluster-config-file", nodes_a});
    redis_server b({"--cluster-enabled", "yes", "--cluster-config-file", nodes_b});
    REQUIRE(a.command({"CLUSTER", "ADDSLOTSRANGE", "0", "8191"}).text == "OK");
    REQUIRE(b.command({"CLUSTER", "ADDSLOTSRANGE", "8192", "16383"}).text == "OK");
    REQUIRE(a.command({"CLUSTER", "MEET", "127.0.0.1", std::to_string(b.port())}).text == "OK");
    REQUIRE(eventually([&] {
        return a.command({"CLUSTER", "INFO"}).text.find("cluster_state:ok") != std::string::npos;
    }));

    test_upstream up;
    auto cfg = one_worker_config(up.port(), a, 1000);
    cfg.rate_limit.window = std::chrono::hours(1);
    cfg.store.redis.instances = 2;  // local bound: 500
    // Orgs whose buckets live on this node and on the other one.
    const limit::bucket_policy policy{algorithm_kind::gcra, 1000, std::chrono::hours(1), 0};
    std::vector<std::string> here;
    std::vector<std::string> elsewhere;
    for (int i = 0; here.empty() || elsewhere.empty(); ++i) {
        const std::string org = "org" + std::to_string(i);
        const auto slot =
            a.command({"CLUSTER", "KEYSLOT",
                       store::redis_bucket_key("tollgate:", "", "org:" + org, policy)})
                .integer;
        (slot < 8192 ? here : elsewhere).push_back(org);
    }
    running_proxy gw(cfg);
    auto& shared = gw.srv().gw().redis;
    client c(gw.port());
    auto org_get = [&](const std::string& org) {
        request req = make_get("/echo");
        req.set("X-Org-Id", org);
        return std::string(c.send(req)["X-RateLimit-Limit"]);
    };
    REQUIRE(org_get(here.front()) == "1000");  // decided by this node
    CHECK(org_get(elsewhere.front()) == "500");
    // From now on the worker is in fallback, whichever key comes.
    CHECK(shared.fallback());
    CHECK(shared.errors(store::redis_error_kind::reply) >= 1);
    // Twice a key this node decides, then one it does not: each return to
    // Redis decides once before MOVED ends it. The first such return
    // reports Redis back; after that flip the hold keeps the gauge at 1.
    const auto start = steady::now();
    int rounds = 0;
    int changes = 0;
    bool last = shared.fallback();
    auto sample = [&] {
        changes += shared.fallback() != last ? 1 : 0;
        last = shared.fallback();
    };
    while (steady::now() - start < 1500ms) {
        for (int i = 0; i < 2; ++i) {
            org_get(here[static_cast<std::size_t>(rounds) % here.size()]);
            sample();
        }
        CHECK(org_get(elsewhere.front()) == "500");
        CHECK(shared.fallback());
        sample();
        ++rounds;
        std::this_thread::sleep_for(10ms);
    }
    CHECK(rounds > 20);
    CHECK(changes <= 2);
}

TEST_CASE("Redis busy with a long script is left as a whole, and decides again after it",
          "[redis][failure]") {
    redis_server redis({"--busy-reply-threshold", "20"});
    test_upstream up;
    auto cfg = one_worker_config(up.port(), redis, 100);
    cfg.store.redis.instances = 2;  // local bound: 50
    cfg.store.redis.timeout = 200ms;
    running_proxy gw(cfg);
    auto& shared = gw.srv().gw().redis;
    client c(gw.port());
    REQUIRE(timed_get(c).limit == "100");

    // A script that never ends, on a connection of its own, until SCRIPT KILL.
    std::thread busy([port = redis.port()] {
        redisContext* ctx = redisConnect("127.0.0.1", port);
        if (ctx != nullptr && ctx->err == 0) {
            freeReplyObject(redisCommand(ctx, "EVAL %s 0", "while true do end"));
        }
        redisFree(ctx);
    });
    REQUIRE(eventually([&] { return redis.command({"PING"}).text.starts_with("BUSY"); }, 5s));
    for (int i = 0; i < 10; ++i) {
        auto o = timed_get(c);
        CHECK(o.status == 200);
        CHECK(o.limit == "50");
    }
    CHECK(shared.fallback());
    CHECK(shared.errors(store::redis_error_kind::reply) >= 1);

    redis.command({"SCRIPT", "KILL"});
    busy.join();
    CHECK(eventually([&] { return timed_get(c).limit == "100" && !shared.fallback(); }, 5s));
}

TEST_CASE("a Redis that connects but cannot decide keeps the fallback: no flapping",
          "[redis][failure]") {
    // A replica (READONLY) or a full Redis (OOM) takes AUTH, SELECT and
    // SCRIPT LOAD, then fails every decision. Redis was reported back at
    // each reconnect (about once a second per worker): the gauge flapped
    // 1/0 and the log repeated unreachable / reachable again forever.
    redis_server redis;
    test_upstream up;
    tollgate_process p(
        {"--config", shared_limit_config("redis-cannot-decide.yaml", up.port(), redis.url())});
    REQUIRE(p.wait_listening());
    REQUIRE(fresh_get(p.port()).limit == "1000");

    std::string trouble;
    std::vector<std::string> undo;
    SECTION("READONLY: a replica of a primary that is not there") {
        redis.command({"REPLICAOF", "127.0.0.1", std::to_string(free_port())});
        trouble = "decision failed: READONLY";
        undo = {"REPLICAOF", "NO", "ONE"};
    }
    SECTION("OOM: maxmemory reached") {
        redis.command({"CONFIG", "SET", "maxmemory", "1"});
        trouble = "decision failed: OOM";
        undo = {"CONFIG", "SET", "maxmemory", "0"};
    }
    // Fresh connections reach both workers; each reconnects with backoff
    // (up to 1 s) and sends the next request to the new connection.
    const auto until = steady::now() + 3s;
    int requests = 0;
    while (steady::now() < until) {
        auto o = fresh_get(p.port());
        CHECK(o.status == 200);
        CHECK(o.limit == "500");  // never decided in Redis
        if (++requests > 2) {
            CHECK(fallback_gauge(p.admin_port()) == 1);
        }
        std::this_thread::sleep_for(10ms);
    }
    const auto during = p.stderr_text();
    INFO(during);
    CHECK(lines_with(during, "redis unreachable") == 1);
    CHECK(lines_with(during, "reachable again") == 0);
    CHECK(lines_with(during, trouble) >= 1);
    CHECK(lines_with(during, trouble) <= 2);  // once per worker

    redis.command(undo);
    CHECK(eventually([&] { return fresh_get(p.port()).limit == "1000"; }, 5s));
    CHECK(eventually([&] { return fallback_gauge(p.admin_port()) == 0; }, 5s));
    CHECK(p.wait_for_log("redis reachable again"));
    CHECK(lines_with(p.stderr_text(), "reachable again") == 1);
    p.signal(SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("Redis answering around the timeout does not flap the store or its log",
          "[redis][failure]") {
    // Answers taking 10-30 ms against a 20 ms timeout: each PING answered
    // in time cleared the suspect state, the next decision answered in
    // time reported Redis back, the one after timed out again, and the
    // state (and its pair of log lines) flipped many times a second.
    redis_server redis;
    latency_relay relay(redis.port(), 10ms, 30ms);
    test_upstream up;
    auto path =
        write_temp_file("redis-flapping.yaml",
                        binary_yaml(up.port(),
                                    "rate_limit: {limit: 100000, window: 1h}\n"
                                    "store: {type: redis, redis: {url: \"" +
                                        relay.url() + "\", timeout: 20ms, instances: 2}}\n"));
    tollgate_process p({"--config", path});
    REQUIRE(p.wait_listening());

    // About 200 requests a second for 3 s, over both workers.
    std::atomic<int> local{0};
    std::atomic<int> in_redis{0};
    std::vector<std::thread> clients;
    const auto until = steady::now() + 3s;
    for (int t = 0; t < 4; ++t) {
        clients.emplace_back([&] {
            while (steady::now() < until) {
                try {
                    client c(p.port());
                    for (int i = 0; i < 10 && steady::now() < until; ++i) {
                        ++(timed_get(c).limit == "50000" ? local : in_redis);
                        std::this_thread::sleep_for(20ms);
                    }
                } catch (const std::exception&) {
                }
            }
        });
    }
    for (auto& c : clients) {
        c.join();
    }
    const auto during = p.stderr_text();
    const auto metrics = get(p.admin_port(), "/metrics").body();
    const std::string_view sample = "tollgate_store_errors_total{kind=\"timeout\"} ";
    const auto at = metrics.find(sample);
    REQUIRE(at != std::string::npos);
    const double timeouts = std::stod(metrics.substr(at + sample.size()));
    INFO(during << local << " local, " << in_redis << " in redis, " << timeouts << " timeouts");
    CHECK(local > 0);
    // At most one pair of lines per 10 s, whatever happens in between.
    CHECK(lines_with(during, "redis unreachable") <= 1);
    CHECK(lines_with(during, "reachable again") <= 1);
    // After each return to Redis that fails again, a worker waits longer
    // (0.25 s doubling) before it tries Redis again: few requests pay the
    // timeout, where every PING answered in time cost one or more.
    CHECK(timeouts <= 40);

    // Redis answering at once again: back within the longest wait.
    relay.set_delay(0ms, 0ms);
    CHECK(eventually([&] { return fresh_get(p.port()).limit == "100000"; }, 10s));
    p.signal(SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("a name with several addresses: when one refuses, the next one is tried", "[redis]") {
    // localhost may resolve to ::1 first while Redis listens on 127.0.0.1
    // only; trying the first address alone fell back for good. The store is
    // driven directly, with the name's addresses given (the test machine's
    // resolver gives localhost one address).
    redis_server redis;  // 127.0.0.1 only
    asio::io_context ioc;
    limit::steady_clock time;
    limit::rate_limiter local(time, 1000);
    store::redis_shared shared;
    prometheus::Registry registry;
    store::redis_settings settings;
    settings.endpoint = *parse_redis_url(redis.url());
    settings.endpoint.host = "localhost";
    settings.addresses = {"::1", "127.0.0.1"};
    settings.timeout = 2000ms;
    settings.instances = 2;  // a local decision would say 50
    auto st = std::make_unique<store::redis_store>(ioc, settings, local, shared, registry);

    const limit::bucket_policy policy{algorithm_kind::gcra, 100, std::chrono::hours(1), 0};
    auto decide = [&] {
        std::optional<store::store_result> got;
        auto make = [&] {
            return store::rate_store::completion([&](store::store_result r) { got = r; });
        };
        const store::rate_store::completion_source done(make);
        if (auto at_once = st->check("", "ip:10.0.0.1", policy, done)) {
            return *at_once;
        }
        const auto deadline = steady::now() + 5s;
        while (!got && steady::now() < deadline) {
            ioc.run_one_for(100ms);
        }
        REQUIRE(got);
        return *got;
    };
    for (std::uint64_t remaining : {99, 98, 97}) {
        auto r = decide();
        CHECK_FALSE(r.unavailable);
        CHECK(r.decision.limit == 100);  // decided in Redis
        CHECK(r.decision.remaining == remaining);
    }
    CHECK_FALSE(shared.fallback());
    CHECK(shared.errors(store::redis_error_kind::connect) == 0);
    st.reset();
}

TEST_CASE("a server that is not Redis counts as failed connects and falls back", "[redis]") {
    redis_server redis;  // only for the config's shape
    test_upstream up;
    test_upstream not_redis;
    auto cfg = redis_test_config(up.port(), redis);
    cfg.store.redis.url = "redis://127.0.0.1:" + std::to_string(not_redis.port());
    cfg.rate_limit.limit = 100;
    cfg.store.redis.instances = 2;
    running_proxy gw(cfg);
    auto& shared = gw.srv().gw().redis;
    for (int i = 0; i < 5; ++i) {
        auto o = fresh_get(gw.port());
        CHECK(o.status == 200);
        CHECK(o.limit == "50");
    }
    CHECK(shared.fallback());
    CHECK(shared.errors(store::redis_error_kind::connect) >= 1);
    CHECK(shared.errors(store::redis_error_kind::connection) == 0);
}

TEST_CASE("a worker shuts down promptly while Redis hangs", "[redis][failure]") {
    redis_server redis;
    test_upstream up;
    auto cfg = redis_test_config(up.port(), redis);
    // The dead-connection limit becomes 5 s (10 x timeout): longer than a
    // shutdown may take.
    cfg.store.redis.timeout = 500ms;
    auto gw = std::make_unique<running_proxy>(cfg);
    client c(gw->port());
    REQUIRE(timed_get(c).status == 200);
    redis.command({"CLIENT", "PAUSE", "8000"});
    // Decided locally after the timeout; the script call stays unanswered.
    auto o = timed_get(c);
    CHECK(o.status == 200);
    CHECK(o.took < 500ms + 300ms);
    const auto start = steady::now();
    gw.reset();  // drain: nothing of the store may keep a worker's io_context busy
    // The drain (no session is left), not the store's 5 s dead-connection limit.
    CHECK(steady::now() - start < 1500ms);
}

TEST_CASE("scripts flushed from Redis are loaded again (NOSCRIPT)", "[redis]") {
    redis_server redis;
    test_upstream up;
    auto cfg = one_worker_config(up.port(), redis, 50);
    running_proxy gw(cfg);
    client c(gw.port());
    CHECK(timed_get(c).remaining == "49");
    redis.command({"SCRIPT", "FLUSH"});
    auto o = timed_get(c);
    CHECK(o.status == 200);
    CHECK(o.limit == "50");
    CHECK(o.remaining == "48");  // still the same bucket in Redis
    CHECK(gw.srv().gw().redis.errors(store::redis_error_kind::noscript) == 1);
    CHECK(timed_get(c).remaining == "47");
}

TEST_CASE("AUTH and SELECT come from the URL, and a wrong password falls back", "[redis]") {
    redis_server redis({"--requirepass", "s3cret"});
    redis.set_password("s3cret");
    redis.command({"ACL", "SETUSER", "alice", "on", ">wonder", "~*", "&*", "+@all"});
    test_upstream up;
    auto keys_in = [&](int db) {
        redis.command({"SELECT", std::to_string(db)});
        auto keys = redis.command({"KEYS", "tollgate:*"});
        return keys.elements.size();
    };
    {
        auto cfg = redis_test_config(up.port(), redis);
        cfg.store.redis.url = redis.url(":s3cret", 3);
        running_proxy gw(cfg);
        auto res = get(gw.port(), "/echo");
        CHECK(res.result_int() == 200);
        CHECK(res["X-RateLimit-Remaining"] == "599");
        CHECK(keys_in(3) == 1);
        CHECK(keys_in(0) == 0);
    }
    {
        auto cfg = redis_test_config(up.port(), redis);
        cfg.store.redis.url = redis.url("alice:wonder", 5);
        running_proxy gw(cfg);
        CHECK(get(gw.port(), "/echo").result_int() == 200);
        CHECK(keys_in(5) == 1);
    }
    {
        // Reserved characters in a secret are percent-encoded in the URL.
        redis.command({"ACL", "SETUSER", "b@b", "on", ">p@ss/w:rd%", "~*", "&*", "+@all"});
        auto cfg = redis_test_config(up.port(), redis);
        cfg.store.redis.url = redis.url("b%40b:p%40ss%2Fw%3Ard%25", 6);
        cfg.store.redis.instances = 2;  // a local decision would say 300
        running_proxy gw(cfg);
        auto res = get(gw.port(), "/echo");
        CHECK(res.result_int() == 200);
        CHECK(res["X-RateLimit-Limit"] == "600");  // decided in Redis
        CHECK(keys_in(6) == 1);
        CHECK(gw.srv().gw().redis.errors(store::redis_error_kind::connect) == 0);
    }
    {
        auto cfg = redis_test_config(up.port(), redis);
        cfg.store.redis.url = redis.url(":wrong");
        cfg.store.redis.instances = 3;
        running_proxy gw(cfg);
        auto res = get(gw.port(), "/echo");
        CHECK(res.result_int() == 200);
        CHECK(res["X-RateLimit-Limit"] == "200");  // decided locally: 600 / 3
        CHECK(eventually(
            [&] { return gw.srv().gw().redis.errors(store::redis_error_kind::connect) >= 1; }));
    }
}

TEST_CASE("bucket keys use the prefix and expire when the bucket is fresh again", "[redis]") {
    redis_server redis;
    test_upstream up;
    auto cfg = redis_test_config(up.port(), redis);
    cfg.rate_limit.limit = 10;
    cfg.rate_limit.window = 1000ms;
    cfg.store.redis.key_prefix = "tg-test:";
    running_proxy gw(cfg);
    CHECK(get(gw.port(), "/echo").result_int() == 200);
    auto keys = redis.command({"KEYS", "*"});
    REQUIRE(keys.elements.size() == 1);
    const std::string key = keys.elements[0].text;
    CHECK(key == "tg-test:gcra:10:1s:10:0::ip:127.0.0.1");  // burst defaults to the limit
    const auto ttl = redis.command({"PTTL", key}).integer;
    CHECK(ttl > 0);
    CHECK(ttl <= 100);  // one emission interval: 1 s / 10
    CHECK(eventually([&] { return redis.command({"EXISTS", key}).integer == 0; }, 2s));
}

TEST_CASE("the tollgate binary uses Redis from TOLLGATE_REDIS_URL", "[redis][lifecycle]") {
    redis_server redis;
    test_upstream up;
    auto path = write_temp_file("redis.yaml",
                                binary_yaml(up.port(), "rate_limit: {limit: 3, window: 1h}\n"));
    tollgate_process p({"--config", path}, {{"TOLLGATE_REDIS_URL", redis.url()}});
    REQUIRE(p.wait_listening());
    for (int i = 0; i < 3; ++i) {
        CHECK(get(p.port(), "/echo").result_int() == 200);
    }
    CHECK(get(p.port(), "/echo").result_int() == 429);
    CHECK(redis.command({"KEYS", "tollgate:*"}).elements.size() == 1);
    auto metrics = get(p.admin_port(), "/metrics").body();
    CHECK(metrics.find("tollgate_store_duration_seconds_bucket") != std::string::npos);
    CHECK(metrics.find("tollgate_store_errors_total{kind=\"connection\"} 0") != std::string::npos);
    p.signal(SIGTERM);
    CHECK(p.wait_exit() == 0);
}
