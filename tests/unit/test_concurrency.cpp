// Unit tests for the concurrency slots policy (DESIGN.md section 4). No
// sockets, no sleeps: time is passed in explicitly, threads meet at joins.

#include "tollgate/limit/concurrency.hpp"

#include "tollgate/limit/clock.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using tollgate::limit::concurrency_limiter;
using slot = concurrency_limiter::slot;
using std::chrono::nanoseconds;

/// Takes exactly `n` slots for `key`, failing the test if any is refused.
std::vector<slot> take(concurrency_limiter& limiter, std::string_view key, std::size_t n) {
    std::vector<slot> slots;
    for (std::size_t i = 0; i < n; ++i) {
        auto s = limiter.try_acquire(key);
        INFO("key " << key << ", slot " << i + 1 << " of " << n);
        REQUIRE(s.has_value());
        REQUIRE(s->held());
        slots.push_back(std::move(*s));
    }
    return slots;
}

/// Records what a queued request's on_done received; keeps the slot it got.
struct outcome {
    int calls = 0;
    bool got_slot = false;
    std::optional<slot> kept;
};

concurrency_limiter::completion keep_into(outcome& out) {
    return [&out](std::optional<slot> s) {
        ++out.calls;
        out.got_slot = s.has_value() && s->held();
        out.kept = std::move(s);
    };
}

// ---- fair share ------------------------------------------------------------

TEST_CASE("a lone key may use the whole capacity and no more", "[concurrency]") {
    auto limiter = concurrency_limiter::create(3);
    auto a = take(*limiter, "A", 3);
    CHECK_FALSE(limiter->try_acquire("A"));
    CHECK(limiter->in_flight() == 3);
    CHECK(limiter->in_flight("A") == 3);
    CHECK(limiter->active_keys() == 1);
    CHECK(a.front().key() == "A");
    a.clear();
    CHECK(limiter->in_flight() == 0);
    CHECK(limiter->in_flight("A") == 0);
    CHECK(limiter->active_keys() == 0);
}

TEST_CASE("rebalancing on join and leave, exact numbers (capacity 10)", "[concurrency]") {
    auto limiter = concurrency_limiter::create(10);

    auto a = take(*limiter, "A", 10);        // alone, A's share is the whole capacity
    CHECK_FALSE(limiter->try_acquire("B"));  // joining never pre-empts
    CHECK(limiter->active_keys() == 1);

    a.pop_back();                     // A 9, total 9
    auto b = take(*limiter, "B", 1);  // B joins: share 10/2 = 5, total 9 < 10
    CHECK(limiter->active_keys() == 2);
    CHECK(limiter->in_flight() == 10);
    CHECK_FALSE(limiter->try_acquire("B"));  // B is under its share, but total is at capacity

    // A, over its new share of 5, drains; every slot it returns goes to B
    // until B reaches its share.
    for (std::size_t b_held = 2; b_held <= 5; ++b_held) {
        a.pop_back();
        CHECK_FALSE(limiter->try_acquire("A"));  // A still >= 5
        auto more = take(*limiter, "B", 1);
        b.push_back(std::move(more.front()));
        CHECK(limiter->in_flight("B") == b_held);
        CHECK(limiter->in_flight() == 10);
    }
    CHECK(limiter->in_flight("A") == 5);

    a.pop_back();                            // A 4, total 9
    CHECK_FALSE(limiter->try_acquire("B"));  // B at its share of 5
    auto a_more = take(*limiter, "A", 1);    // A 4 < 5
    CHECK(limiter->in_flight("A") == 5);
    CHECK_FALSE(limiter->try_acquire("A"));

    // C joins once there is room: share 10/3 = 3.
    CHECK_FALSE(limiter->try_acquire("C"));
    b.pop_back();  // B 4, total 9
    auto c = take(*limiter, "C", 1);
    CHECK(limiter->active_keys() == 3);
    a.pop_back();                            // A 4 (incl. a_more), total 9
    CHECK_FALSE(limiter->try_acquire("A"));  // 4 >= 3
    CHECK_FALSE(limiter->try_acquire("B"));  // 4 >= 3
    auto c2 = take(*limiter, "C", 1);        // 1 < 3
    CHECK(limiter->in_flight() == 10);

    // B leaves: A and C now share 10/2 = 5 each.
    b.clear();
    CHECK(limiter->active_keys() == 2);
    CHECK(limiter->in_flight() == 6);
    auto a_fill = take(*limiter, "A", 1);  // A 5
    CHECK_FALSE(limiter->try_acquire("A"));
    auto c_fill = take(*limiter, "C", 3);  // C 5
    CHECK_FALSE(limiter->try_acquire("C"));
    CHECK(limiter->in_flight() == 10);
    CHECK(limiter->in_flight("A") == 5);
    CHECK(limiter->in_flight("C") == 5);
}

TEST_CASE("a joining key gets a slot whenever there is room", "[concurrency]") {
    auto limiter = concurrency_limiter::create(5);
    auto a = take(*limiter, "A", 1);
    auto b = take(*limiter, "B", 1);
    auto c = take(*limiter, "C", 1);         // 5/3 = 1
    CHECK_FALSE(limiter->try_acquire("A"));  // 1 >= 1, though total 3 < 5
    auto d = take(*limiter, "D", 1);         // 5/4 = 1
    auto e = take(*limiter, "E", 1);         // 5/5 = 1
    CHECK_FALSE(limiter->try_acquire("F"));  // 5/6 = 0 -> 1, but total at capacity
    CHECK(limiter->active_keys() == 5);
    CHECK(limiter->in_flight() == 5);
}

TEST_CASE("fair share matches a reference model over random operations", "[concurrency]") {
    constexpr std::size_t capacity = 7;  // odd, so capacity / active_keys truncates
    auto limiter = concurrency_limiter::create(capacity);
    const std::vector<std::string> keys{"ip:1", "ip:2", "tok:3", "org:4", "org:5", "ip:6"};
    std::map<std::string, std::size_t> model;
    std::size_t model_total = 0;
    std::vector<slot> held;
    std::mt19937 rng(12345);
    std::size_t granted = 0;
    std::size_t refused = 0;

    for (int op = 0; op < 200000; ++op) {
        if (rng() % 5 < 3 || held.empty()) {
            const std::string& key = keys[rng() % keys.size()];
            const std::size_t mine = model.count(key) != 0 ? model[key] : 0;
            const std::size_t sharing = model.size() + (mine == 0 ? 1 : 0);
            const bool expected =
                model_total < capacity && mine < std::max<std::size_t>(1, capacity / sharing);
            auto s = limiter->try_acquire(key);
            REQUIRE(s.has_value() == expected);
            if (s) {
                ++granted;
                ++model[key];
                ++model_total;
                held.push_back(std::move(*s));
            } else {
                ++refused;
            }
        } else {
            const std::size_t i = rng() % held.size();
            const std::string key(held[i].key());
            std::swap(held[i], held.back());
            held.pop_back();
            --model_total;
            if (--model[key] == 0) {
                model.erase(key);
            }
        }
        REQUIRE(limiter->in_flight() <= capacity);
        REQUIRE(limiter->in_flight() == model_total);
        REQUIRE(limiter->active_keys() == model.size());
        if (op % 97 == 0) {
            for (const auto& key : keys) {
                const std::size_t expected = model.count(key) != 0 ? model.at(key) : 0;
                REQUIRE(limiter->in_flight(key) == expected);
            }
        }
    }
    CHECK(granted > 1000);  // the walk really exercised both outcomes
    CHECK(refused > 1000);
    held.clear();
    CHECK(limiter->in_flight() == 0);
    CHECK(limiter->active_keys() == 0);
}

// ---- the faults of the design this replaces ---------------------------------

TEST_CASE("fault a: returns above a shrunken share are all counted", "[concurrency][fault]") {
    auto limiter = concurrency_limiter::create(10);
    for (int round = 0; round < 100; ++round) {
        auto a = take(*limiter, "A", 6);  // alone: share 10
        auto b = take(*limiter, "B", 4);  // joins: share 5, stops at capacity
        CHECK_FALSE(limiter->try_acquire("B"));
        // A now holds 6, above its share of 5. Each of its returns must count.
        for (std::size_t left = 6; left > 0; --left) {
            a.pop_back();
            REQUIRE(limiter->in_flight("A") == left - 1);
            REQUIRE(limiter->in_flight() == 4 + left - 1);
        }
        CHECK(limiter->active_keys() == 1);
        b.clear();
        REQUIRE(limiter->in_flight() == 0);  // the gauge did not drift
        REQUIRE(limiter->active_keys() == 0);
    }
}

TEST_CASE("fault b: total in flight never exceeds capacity after a rebalance",
          "[concurrency][fault]") {
    auto limiter = concurrency_limiter::create(10);
    auto a = take(*limiter, "A", 8);
    // B's share is 5, but only 2 slots are left: the share is a ceiling, not
    // a reservation.
    auto b = take(*limiter, "B", 2);
    CHECK(limiter->in_flight("B") == 2);
    CHECK_FALSE(limiter->try_acquire("B"));
    CHECK_FALSE(limiter->try_acquire("C"));
    CHECK(limiter->in_flight() == 10);

    // Churn joins and leaves around a full limiter.
    for (int i = 0; i < 1000; ++i) {
        b.pop_back();
        auto c = limiter->try_acquire("C" + std::to_string(i % 3));
        REQUIRE(c.has_value());  // a joining key gets the freed slot...
        REQUIRE(limiter->in_flight() == 10);
        REQUIRE_FALSE(limiter->try_acquire("B"));  // ...and nobody gets an eleventh
        REQUIRE_FALSE(limiter->try_acquire("D"));
        c.reset();
        b.push_back(std::move(take(*limiter, "B", 1).front()));
        REQUIRE(limiter->in_flight() == 10);
    }
}

TEST_CASE("fault c: an idle key reaches a share that grew while it waited",
          "[concurrency][fault]") {
    auto limiter = concurrency_limiter::create(10);
    auto a = take(*limiter, "A", 5);
    auto b = take(*limiter, "B", 5);
    CHECK_FALSE(limiter->try_acquire("A"));  // at its share of 5

    // A does nothing while B drains; its share is computed when it next asks.
    b.clear();
    auto a_more = take(*limiter, "A", 5);
    CHECK(limiter->in_flight("A") == 10);
    CHECK_FALSE(limiter->try_acquire("A"));

    // The same with three keys: C leaves, A and B go from 3 to 5.
    a.clear();
    a_more.clear();
    auto a3 = take(*limiter, "A", 3);
    auto b3 = take(*limiter, "B", 3);
    auto c3 = take(*limiter, "C", 3);
    CHECK_FALSE(limiter->try_acquire("A"));
    c3.clear();
    auto a2 = take(*limiter, "A", 2);
    auto b2 = take(*limiter, "B", 2);
    CHECK_FALSE(limiter->try_acquire("A"));
    CHECK(limiter->in_flight() == 10);
}

TEST_CASE("fault d: cancelling or replacing a queued request leaks nothing",
          "[concurrency][fault]") {
    auto limiter = concurrency_limiter::create(1);
    auto holder = take(*limiter, "A", 1);

    SECTION("cancel while queued") {
        outcome out;
        const auto r = limiter->enqueue("B", nanoseconds(1000), keep_into(out));
        REQUIRE_FALSE(r.granted);
        REQUIRE(r.id != 0);
        CHECK(limiter->queued() == 1);
        CHECK(limiter->cancel(r.id));
        CHECK(limiter->queued() == 0);
        CHECK_FALSE(limiter->next_deadline());
        CHECK_FALSE(limiter->cancel(r.id));  // only once
        holder.clear();
        CHECK(out.calls == 0);  // never called after a successful cancel
        CHECK(limiter->in_flight() == 0);
        CHECK(limiter->active_keys() == 0);
        limiter->expire(nanoseconds(5000));
        CHECK(out.calls == 0);
    }

    SECTION("replaced: cancelled, then queued again") {
        outcome first;
        outcome second;
        const auto r1 = limiter->enqueue("B", nanoseconds(1000), keep_into(first));
        REQUIRE(limiter->cancel(r1.id));
        const auto r2 = limiter->enqueue("B", nanoseconds(2000), keep_into(second));
        REQUIRE(r2.id != r1.id);
        CHECK(limiter->queued() == 1);
        holder.clear();
        CHECK(first.calls == 0);
        CHECK(second.calls == 1);
        CHECK(second.got_slot);
        CHECK(limiter->in_flight() == 1);
        CHECK(limiter->in_flight("B") == 1);
        second.kept.reset();
        CHECK(limiter->in_flight() == 0);
        CHECK(limiter->active_keys() == 0);
    }

    SECTION("cancel that loses the race to a grant") {
        outcome out;
        const auto r = limiter->enqueue("B", nanoseconds(1000), keep_into(out));
        holder.clear();  // grants to the queued request
        REQUIRE(out.calls == 1);
        CHECK_FALSE(limiter->cancel(r.id));  // too late: the caller must drop the slot
        CHECK(limiter->in_flight() == 1);
        out.kept.reset();
        CHECK(limiter->in_flight() == 0);
    }

    SECTION("a granted slot nobody takes is returned and passes on") {
        outcome gone;
        gone.calls = 0;
        bool gone_got_slot = false;
        const auto r1 = limiter->enqueue("B", nanoseconds(1000), [&](std::optional<slot> s) {
            ++gone.calls;
            gone_got_slot = s.has_value() && s->held();
            // The client has disconnected: the slot is dropped right here.
        });
        outcome next;
        const auto r2 = limiter->enqueue("C", nanoseconds(1000), keep_into(next));
        REQUIRE(r1.id != 0);
        REQUIRE(r2.id != 0);
        holder.clear();
        CHECK(gone.calls == 1);
        CHECK(gone_got_slot);
        CHECK(next.calls == 1);
        REQUIRE(next.got_slot);
        CHECK(next.kept->key() == "C");
        CHECK(limiter->in_flight() == 1);
        CHECK(limiter->in_flight("B") == 0);
        CHECK(limiter->queued() == 0);
        next.kept.reset();
        CHECK(limiter->in_flight() == 0);
        CHECK(limiter->active_keys() == 0);
    }
}

TEST_CASE("fault e: a slot is returned exactly once", "[concurrency][fault]") {
    static_assert(!std::is_copy_constructible_v<slot>);
    static_assert(!std::is_copy_assignable_v<slot>);
    static_assert(std::is_nothrow_move_constructible_v<slot>);
    static_assert(std::is_nothrow_move_assignable_v<slot>);

    auto limiter = concurrency_limiter::create(10);

    SECTION("release is idempotent") {
        auto a = take(*limiter, "A", 2);
        a[0].release();
        a[0].release();
        CHECK_FALSE(a[0].held());
        CHECK(a[0].key().empty());
        CHECK(limiter->in_flight() == 1);
        a.erase(a.begin());  // destroying a released slot returns nothing
        CHECK(limiter->in_flight() == 1);
        CHECK(limiter->in_flight("A") == 1);
    }

    SECTION("a moved-from slot returns nothing") {
        auto a = take(*limiter, "A", 2);
        slot moved = std::move(a[0]);
        CHECK(moved.held());
        CHECK_FALSE(a[0].held());
        a[0].release();
        CHECK(limiter->in_flight() == 2);
        moved.release();
        CHECK(limiter->in_flight() == 1);
    }

    SECTION("move-assigning onto a held slot returns the old one, once") {
        auto a = take(*limiter, "A", 1);
        auto b = take(*limiter, "B", 1);
        a[0] = std::move(b[0]);
        CHECK(limiter->in_flight() == 1);
        CHECK(limiter->in_flight("A") == 0);
        CHECK(limiter->in_flight("B") == 1);
        CHECK(a[0].key() == "B");
        slot& same = a[0];
        a[0] = std::move(same);  // self-assignment keeps the slot
        CHECK(a[0].held());
        CHECK(limiter->in_flight() == 1);
    }

    SECTION("a retried exchange hands its slot to the retry") {
        struct attempt {
            slot held;
            void fail() { held.release(); }  // every error path returns "its" slot
        };
        auto other = take(*limiter, "A", 1);
        attempt first{std::move(take(*limiter, "A", 1).front())};
        attempt retry{std::move(first.held)};
        first.fail();  // the failed attempt's cleanup runs after the hand-over
        CHECK(limiter->in_flight("A") == 2);
        retry.fail();
        retry.fail();
        CHECK(limiter->in_flight("A") == 1);
        CHECK(other.front().held());
    }
}

// ---- the wait queue ----------------------------------------------------------

TEST_CASE("enqueue grants at once when a slot is free", "[concurrency][queue]") {
    auto limiter = concurrency_limiter::create(2);
    int calls = 0;
    auto r = limiter->enqueue("A", nanoseconds(10), [&](std::optional<slot>) { ++calls; });
    REQUIRE(r.granted);
    CHECK(r.granted->held());
    CHECK(r.id == 0);
    CHECK(limiter->queued() == 0);
    CHECK(limiter->in_flight() == 1);
    limiter->expire(nanoseconds(100));
    r.granted.reset();
    CHECK(calls == 0);
    CHECK(limiter->in_flight() == 0);

    CHECK_THROWS_AS(limiter->enqueue("A", nanoseconds(10), {}), std::invalid_argument);
    CHECK(limiter->in_flight() == 0);
}

TEST_CASE("set_capacity counts the slots already held", "[concurrency]") {
    auto limiter = concurrency_limiter::create(2);
    auto a = take(*limiter, "A", 1);
    auto b = take(*limiter, "B", 1);
    std::optional<slot> c;
    auto queued =
        limiter->enqueue("C", nanoseconds(100), [&](std::optional<slot> s) { c = std::move(s); });
    REQUIRE_FALSE(queued.granted);

    // Raised to 3: one more slot, and it goes to the queued request.
    limiter->set_capacity(3);
    CHECK(limiter->capacity() == 3);
    REQUIRE(c.has_value());
    CHECK(c->held());
    CHECK(limiter->in_flight() == 3);
    CHECK_FALSE(limiter->try_acquire("D"));

    // Lowered to 1 with 3 still held: nothing new until in_flight() < 1.
    limiter->set_capacity(1);
    CHECK(limiter->in_flight() == 3);
    a.clear();
    c.reset();
    CHECK_FALSE(limiter->try_acquire("D"));
    b.clear();
    auto d = limiter->try_acquire("D");
    CHECK(d.has_value());
    CHECK_FALSE(limiter->try_acquire("E"));
    CHECK(limiter->in_flight() == 1);

    CHECK_THROWS_AS(limiter->set_capacity(0), std::invalid_argument);
    CHECK_THROWS_AS(concurrency_limiter::create(0)->set_capacity(4), std::invalid_argument);
}

TEST_CASE("queued requests of one key are served in FIFO order", "[concurrency][queue]") {
    auto limiter = concurrency_limiter::create(1);
    auto holder = take(*limiter, "A", 1);
    std::vector<int> order;
    // One place per request: a callback must not store into the object whose
    // destruction (returning its slot) is what ran the callback.
    std::vector<std::optional<slot>> granted(4);
    for (int i = 1; i <= 3; ++i) {
        const auto r = limiter->enqueue("B", nanoseconds(1000), [&, i](std::optional<slot> s) {
            REQUIRE(s);
            order.push_back(i);
            granted[static_cast<std::size_t>(i)] = std::move(s);
        });
        REQUIRE_FALSE(r.granted);
    }
    // Queued requests cannot be overtaken, by try_acquire or a new enqueue.
    CHECK_FALSE(limiter->try_acquire("B"));
    holder.clear();
    CHECK(order == std::vector<int>{1});
    CHECK_FALSE(limiter->try_acquire("B"));
    granted[1].reset();
    CHECK(order == std::vector<int>{1, 2});
    granted[2].reset();
    CHECK(order == std::vector<int>{1, 2, 3});
    CHECK(limiter->queued() == 0);
    granted[3].reset();
    CHECK(limiter->in_flight() == 0);
}

TEST_CASE("a queued request whose key is over its share is skipped, not blocking",
          "[concurrency][queue]") {
    auto limiter = concurrency_limiter::create(4);
    auto a = take(*limiter, "A", 2);
    auto b = take(*limiter, "B", 2);
    outcome wa;
    outcome wb;
    REQUIRE_FALSE(limiter->enqueue("A", nanoseconds(1000), keep_into(wa)).granted);
    REQUIRE_FALSE(limiter->enqueue("B", nanoseconds(1000), keep_into(wb)).granted);
    b.pop_back();  // room for one; A (2 of share 2) may not take it, B (1) may
    CHECK(wa.calls == 0);
    CHECK(wb.calls == 1);
    REQUIRE(wb.got_slot);
    CHECK(wb.kept->key() == "B");
    CHECK(limiter->queued() == 1);
    CHECK(limiter->in_flight() == 4);

    // The skipped request is still first in line once A drains.
    a.pop_back();
    CHECK(wa.calls == 1);
    CHECK(wa.got_slot);
    CHECK(limiter->queued() == 0);
}

TEST_CASE("one release can grant several requests when a key leaves", "[concurrency][queue]") {
    auto limiter = concurrency_limiter::create(9);
    auto a = take(*limiter, "A", 3);
    auto b = take(*limiter, "B", 3);
    auto c = take(*limiter, "C", 1);  // share 9/3 = 3; total 7
    outcome wa;
    outcome wb;
    REQUIRE_FALSE(limiter->enqueue("A", nanoseconds(1000), keep_into(wa)).granted);
    REQUIRE_FALSE(limiter->enqueue("B", nanoseconds(1000), keep_into(wb)).granted);
    CHECK(limiter->in_flight() == 7);  // room, but both keys are at their share
    c.clear();                         // C leaves: share 9/2 = 4
    CHECK(wa.got_slot);
    CHECK(wb.got_slot);
    CHECK(limiter->in_flight() == 8);
    CHECK(limiter->queued() == 0);
}

TEST_CASE("queue timeout: 999 ns waits, 1000 ns is refused", "[concurrency][queue]") {
    auto limiter = concurrency_limiter::create(1);
    auto holder = take(*limiter, "A", 1);
    outcome out;
    const auto r = limiter->enqueue("B", nanoseconds(1000), keep_into(out));
    REQUIRE_FALSE(r.granted);
    CHECK(limiter->next_deadline() == nanoseconds(1000));

    limiter->expire(nanoseconds(999));
    CHECK(out.calls == 0);
    CHECK(limiter->queued() == 1);

    limiter->expire(nanoseconds(1000));
    CHECK(out.calls == 1);
    CHECK_FALSE(out.got_slot);
    CHECK_FALSE(out.kept.has_value());
    CHECK(limiter->queued() == 0);
    CHECK_FALSE(limiter->next_deadline());
    CHECK_FALSE(limiter->cancel(r.id));

    limiter->expire(nanoseconds(5000));
    holder.clear();  // an expired request is not granted afterwards
    CHECK(out.calls == 1);
    CHECK(limiter->in_flight() == 0);
}

TEST_CASE("queue timeout driven by a manual clock", "[concurrency][queue]") {
    // How the proxy uses it: deadline = now + concurrency.queue_timeout.
    using namespace std::chrono_literals;
    tollgate::limit::manual_clock clock(5s);
    constexpr auto queue_timeout = 1000ms;
    auto limiter = concurrency_limiter::create(1);
    auto holder = take(*limiter, "A", 1);
    outcome out;
    REQUIRE_FALSE(limiter->enqueue("B", clock.now() + queue_timeout, keep_into(out)).granted);

    clock.advance(999ms);
    limiter->expire(clock.now());
    CHECK(out.calls == 0);
    CHECK(limiter->queued() == 1);

    clock.advance(1ms);
    limiter->expire(clock.now());
    CHECK(out.calls == 1);
    CHECK_FALSE(out.got_slot);
    CHECK(limiter->queued() == 0);
}

TEST_CASE("expire refuses only requests whose deadline has passed", "[concurrency][queue]") {
    auto limiter = concurrency_limiter::create(1);
    auto holder = take(*limiter, "A", 1);
    outcome late;
    outcome early;
    outcome middle;
    REQUIRE_FALSE(limiter->enqueue("B", nanoseconds(3000), keep_into(late)).granted);
    REQUIRE_FALSE(limiter->enqueue("C", nanoseconds(1000), keep_into(early)).granted);
    REQUIRE_FALSE(limiter->enqueue("D", nanoseconds(2000), keep_into(middle)).granted);
    CHECK(limiter->next_deadline() == nanoseconds(1000));

    limiter->expire(nanoseconds(2000));
    CHECK(early.calls == 1);
    CHECK(middle.calls == 1);
    CHECK_FALSE(early.got_slot);
    CHECK_FALSE(middle.got_slot);
    CHECK(late.calls == 0);
    CHECK(limiter->next_deadline() == nanoseconds(3000));

    holder.clear();
    CHECK(late.calls == 1);
    CHECK(late.got_slot);
    CHECK(limiter->in_flight("B") == 1);
}

TEST_CASE("on_done runs outside the lock and may call back in", "[concurrency][queue]") {
    auto limiter = concurrency_limiter::create(1);
    auto holder = take(*limiter, "A", 1);
    std::size_t seen_in_flight = 99;
    std::size_t seen_queued = 99;
    bool second_refused = false;
    const auto r = limiter->enqueue("B", nanoseconds(1000), [&](std::optional<slot> s) {
        REQUIRE(s);
        // With the lock still held, any of these would deadlock.
        seen_in_flight = limiter->in_flight();
        seen_queued = limiter->queued();
        second_refused = !limiter->try_acquire("C").has_value();
        s->release();
        // Queue another request from inside the callback; the slot just
        // returned must be granted to it at once.
        auto again = limiter->enqueue("C", nanoseconds(2000), [](std::optional<slot>) {});
        CHECK(again.granted);
    });
    REQUIRE_FALSE(r.granted);
    holder.clear();
    CHECK(seen_in_flight == 1);
    CHECK(seen_queued == 0);
    CHECK(second_refused);
    CHECK(limiter->in_flight() == 0);
}

TEST_CASE("a long chain of abandoned grants does not recurse", "[concurrency][queue]") {
    // Each callback drops its slot, which grants the next request. Run
    // recursively, 20000 nested callbacks would overflow the stack.
    constexpr int waiters = 20000;
    auto limiter = concurrency_limiter::create(1);
    auto holder = take(*limiter, "A", 1);
    std::vector<int> calls(waiters, 0);
    int depth = 0;
    int max_depth = 0;
    for (int i = 0; i < waiters; ++i) {
        const auto r = limiter->enqueue("B", nanoseconds(1000), [&, i](std::optional<slot> s) {
            ++depth;
            max_depth = std::max(max_depth, depth);
            if (s) {
                ++calls[static_cast<std::size_t>(i)];
            }
            s.reset();
            --depth;
        });
        REQUIRE_FALSE(r.granted);
    }
    holder.clear();
    CHECK(std::all_of(calls.begin(), calls.end(), [](int n) { return n == 1; }));
    CHECK(max_depth == 1);
    CHECK(limiter->queued() == 0);
    CHECK(limiter->in_flight() == 0);
}

// ---- lifetime and "off" ---------------------------------------------------------

TEST_CASE("a slot keeps its limiter alive", "[concurrency]") {
    auto limiter = concurrency_limiter::create(4);
    std::weak_ptr<concurrency_limiter> weak = limiter;
    auto s = limiter->try_acquire("A");
    REQUIRE(s);
    limiter.reset();  // e.g. a config reload replaced it
    CHECK_FALSE(weak.expired());
    s->release();
    CHECK(weak.expired());
}

TEST_CASE("capacity 0 is off: everything is admitted and counted", "[concurrency]") {
    auto limiter = concurrency_limiter::create(0);
    CHECK(limiter->capacity() == 0);
    auto a = take(*limiter, "A", 1000);
    auto r = limiter->enqueue("B", nanoseconds(1), [](std::optional<slot>) {});
    CHECK(r.granted);
    CHECK(limiter->in_flight() == 1001);
    CHECK(limiter->active_keys() == 2);
    CHECK(limiter->queued() == 0);
    a.clear();
    r.granted.reset();
    CHECK(limiter->in_flight() == 0);
    CHECK(limiter->active_keys() == 0);
}

// ---- many threads -------------------------------------------------------------

TEST_CASE("invariants hold under many threads", "[concurrency][threads]") {
    constexpr std::size_t capacity = 16;
    constexpr int threads = 8;
    constexpr int iterations = 10000;
    auto limiter = concurrency_limiter::create(capacity);
    const std::vector<std::string> keys{"ip:a", "ip:b", "tok:c", "org:d", "org:e"};

    // Counted after a slot is granted and before it is returned, so it never
    // exceeds the slots really held; above capacity means over-admission.
    std::atomic<std::size_t> held{0};
    std::atomic<std::size_t> max_held{0};
    std::atomic<std::size_t> granted{0};
    std::atomic<std::size_t> refused{0};
    std::atomic<std::size_t> watcher_violations{0};
    std::atomic<bool> stop{false};

    std::thread watcher([&] {
        while (!stop.load()) {
            if (limiter->in_flight() > capacity || limiter->active_keys() > capacity) {
                ++watcher_violations;
            }
        }
    });

    // Each thread tends to hold more than the whole capacity, so slots are
    // refused however the threads happen to be scheduled.
    constexpr std::size_t most_held = capacity + 8;
    std::latch start(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            std::mt19937 rng(static_cast<std::uint32_t>(t) + 1);
            std::vector<slot> mine;
            start.arrive_and_wait();
            for (int i = 0; i < iterations; ++i) {
                if (!mine.empty() && (mine.size() >= most_held || rng() % 3 == 0)) {
                    --held;
                    mine.erase(mine.begin());
                    continue;
                }
                auto s = limiter->try_acquire(keys[rng() % keys.size()]);
                if (!s) {
                    ++refused;
                    continue;
                }
                ++granted;
                const std::size_t now_held = ++held;
                std::size_t seen = max_held.load();
                while (now_held > seen && !max_held.compare_exchange_weak(seen, now_held)) {
                }
                mine.push_back(std::move(*s));
            }
            held -= mine.size();
            mine.clear();
        });
    }
    for (auto& worker : workers) {
        worker.join();
    }
    stop = true;
    watcher.join();

    CHECK(max_held.load() <= capacity);
    CHECK(watcher_violations.load() == 0);
    CHECK(granted.load() > 0);
    CHECK(refused.load() > 0);  // there was contention to get wrong
    CHECK(limiter->in_flight() == 0);
    CHECK(limiter->active_keys() == 0);
    CHECK(limiter->queued() == 0);
}

TEST_CASE("queued requests under many threads complete exactly once", "[concurrency][threads]") {
    // Each thread may hold more than the capacity, so requests are queued
    // however the threads happen to be scheduled.
    constexpr std::size_t capacity = 2;
    constexpr std::size_t most_held = 3;
    constexpr int threads = 8;
    constexpr int iterations = 3000;
    auto limiter = concurrency_limiter::create(capacity);
    const std::vector<std::string> keys{"ip:a", "ip:b", "tok:c"};

    struct record {
        std::atomic<int> calls{0};
        bool immediate = false;
        bool cancelled = false;
    };
    std::atomic<std::int64_t> now{0};
    std::atomic<std::size_t> held{0};
    std::atomic<std::size_t> over_capacity{0};
    std::atomic<std::size_t> grants_in_callback{0};
    std::vector<std::vector<std::shared_ptr<record>>> logs(threads);

    auto count_held = [&] {
        if (++held > capacity) {
            ++over_capacity;
        }
    };

    std::latch start(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            std::mt19937 rng(static_cast<std::uint32_t>(t) + 100);
            std::vector<slot> mine;
            auto& log = logs[static_cast<std::size_t>(t)];
            start.arrive_and_wait();
            for (int i = 0; i < iterations; ++i) {
                switch (rng() % 4) {
                    case 0:
                        if (auto s = limiter->try_acquire(keys[rng() % keys.size()])) {
                            count_held();
                            mine.push_back(std::move(*s));
                        }
                        break;
                    case 1: {
                        auto rec = std::make_shared<record>();
                        const nanoseconds deadline(now.load() + static_cast<int>(rng() % 1000));
                        auto r = limiter->enqueue(
                            keys[rng() % keys.size()], deadline,
                            [rec, &count_held, &held, &grants_in_callback](std::optional<slot> s) {
                                ++rec->calls;
                                if (s) {
                                    ++grants_in_callback;
                                    count_held();
                                    --held;
                                }
                                // dropped here, as by a client that has gone
                            });
                        if (r.granted) {
                            rec->immediate = true;
                            count_held();
                            mine.push_back(std::move(*r.granted));
                        } else if (rng() % 2 == 0) {
                            rec->cancelled = limiter->cancel(r.id);
                        }
                        log.push_back(std::move(rec));
                        break;
                    }
                    case 2:
                        if (!mine.empty()) {
                            --held;
                            mine.erase(mine.begin());
                        }
                        break;
                    default:
                        limiter->expire(nanoseconds(now += 100));
                        break;
                }
                if (mine.size() > most_held) {
                    --held;
                    mine.erase(mine.begin());
                }
            }
            held -= mine.size();
            mine.clear();
        });
    }
    for (auto& worker : workers) {
        worker.join();
    }

    CHECK(over_capacity.load() == 0);
    CHECK(grants_in_callback.load() > 0);  // the queue really handed slots over
    // Once every slot is back, nothing can still be waiting: a free slot is
    // always handed to a queued request that may take it.
    CHECK(limiter->queued() == 0);
    CHECK(limiter->in_flight() == 0);
    CHECK(limiter->active_keys() == 0);

    std::size_t wrong = 0;
    std::size_t cancelled = 0;
    for (const auto& log : logs) {
        for (const auto& rec : log) {
            const int expected = (rec->immediate || rec->cancelled) ? 0 : 1;
            if (rec->calls.load() != expected) {
                ++wrong;
            }
            cancelled += rec->cancelled ? 1 : 0;
        }
    }
    CHECK(wrong == 0);
    CHECK(cancelled > 0);
}

}  // namespace
