#include "tollgate/store/redis_store.hpp"

#include <algorithm>
#include <deque>
#include <stdexcept>
#include <unordered_map>

#include <hiredis/async.h>

#include "tollgate/log.hpp"
#include "tollgate/store/redis_asio.hpp"
#include "tollgate/store/redis_cache.hpp"
#include "tollgate/store/redis_scripts.hpp"

namespace tollgate::store {
namespace {

using steady = std::chrono::steady_clock;
using std::chrono::nanoseconds;

/// What a reply answers; packed with the request id into hiredis's privdata.
enum class command_kind : std::uintptr_t { eval = 0, handshake = 1, ping = 2, reload = 3 };
constexpr unsigned kind_bits = 2;

void* pack(std::uint64_t id, command_kind kind) {
    return reinterpret_cast<void*>((static_cast<std::uintptr_t>(id) << kind_bits) |
                                   static_cast<std::uintptr_t>(kind));
}

/// The in-process limiter's scope for fallback buckets: in Redis mode the
/// limiter holds nothing else, and the separator keeps them apart anyway.
constexpr std::string_view fallback_scope_prefix = "\x1eredis-fallback\x1e";

nanoseconds since_epoch(steady::time_point t) {
    return std::chrono::duration_cast<nanoseconds>(t.time_since_epoch());
}

bool all_integers(const redisReply* r, std::size_t n) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        return false;
    }
    for (std::size_t i = 0; i < n; ++i) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER) {
            return false;
        }
    }
    return true;
}

}  // namespace

redis_settings redis_settings::from(const redis_config& cfg) {
    auto endpoint = parse_redis_url(cfg.url);
    if (!endpoint) {
        throw std::runtime_error("store.redis.url: " + endpoint.error());
    }
    redis_settings s;
    s.endpoint = *endpoint;
    s.timeout = cfg.timeout;
    s.on_failure = cfg.on_failure;
    s.instances = std::max<std::uint32_t>(cfg.instances, 1);
    s.key_prefix = cfg.key_prefix;
    s.dead_after = std::max(std::chrono::milliseconds{1000}, 10 * cfg.timeout);
    return s;
}

class redis_store::impl : public std::enable_shared_from_this<impl> {
public:
    impl(asio::io_context& ioc, redis_settings settings, limit::rate_limiter& local,
         redis_shared& shared)
        : ioc_(ioc),
          settings_(std::move(settings)),
          local_(local),
          shared_(shared),
          cache_(settings_.cache_capacity) {}

    impl(const impl&) = delete;
    impl& operator=(const impl&) = delete;

    /// Opens the first connection once the io_context runs.
    void start() {
        asio::post(ioc_, [weak = weak_from_this()] {
            if (auto self = weak.lock(); self && self->state_ == state::disconnected &&
                                         self->ac_ == nullptr && !self->closing_) {
                self->start_connect(true);
            }
        });
    }

    /// Frees the connection without completing what is pending (the worker
    /// and its sessions are going away; its io_context no longer runs).
    void shutdown() {
        closing_ = true;
        timer_.cancel();
        resolver_.cancel();
        if (ac_ != nullptr) {
            auto* ac = ac_;
            auto link = link_;
            ac_ = nullptr;
            redisAsyncFree(ac);
            link_.reset();
        }
        pending_.clear();
        deadlines_.clear();
        probes_.clear();
        // The shared fallback state is left alone: a store shutting down
        // says nothing about Redis.
    }

    std::optional<store_result> check(std::string_view scope, std::string_view key,
                                      const limit::bucket_policy& policy,
                                      const completion_source& done) {
        if (policy.limit == 0) {
            limit::bucket_state unused;
            return store_result{limit::check(unused, policy, nanoseconds{0}), false};
        }
        if (closing_) {
            return decide_without_redis(scope, key, policy);  // stopping: no new connection
        }
        const auto now = steady::now();
        std::string bucket = redis_bucket_key(settings_.key_prefix, scope, key, policy);
        bool refusal_expired = false;
        if (auto refused = cache_.lookup(bucket, since_epoch(now), &refusal_expired)) {
            return store_result{*refused, false};
        }
        if (state_ == state::ready && sent_.empty() && link_) {
            link_->poll_idle();  // a server gone while we were idle shows up here
        }
        // Read the clock again: the poll may just have found the connection
        // gone and made the next attempt due at its own, later, now.
        if (state_ == state::disconnected && ac_ == nullptr && !resolving_ &&
            steady::now() >= next_attempt_) {
            start_connect(hold_next_);
        }
        const bool via_redis =
            (state_ == state::ready && !suspect_) || (state_ == state::connecting && hold_);
        if (!via_redis) {
            if (state_ == state::ready && suspect_ && !ping_out_ &&
                now >= fallback_since_ + flap_hold_) {
                send_ping(now);
            }
            return decide_without_redis(scope, key, policy);
        }

        const std::uint64_t id = next_id_++;
        pending& p = pending_[id];
        p.done = done();
        p.scope = std::string(scope);
        p.key = std::string(key);
        p.policy = policy;
        p.started = now;
        p.deadline = now + settings_.timeout;
        // A key Redis refused until a moment ago gets one request through to
        // ask again; the others arriving meanwhile wait for that answer (about
        // the round trip they would have spent anyway) instead of all asking.
        if (!probes_.empty()) {
            if (auto probe = probes_.find(bucket); probe != probes_.end()) {
                p.bucket = std::move(bucket);
                p.waiting = true;
                probe->second.push_back(id);
                deadlines_.push_back(id);
                arm_timer();
                return std::nullopt;
            }
        }
        if (refusal_expired) {
            probes_.try_emplace(bucket);
            p.probe = true;
        }
        p.bucket = std::move(bucket);
        if (ac_ != nullptr && !send_eval(id, p)) {
            if (p.probe) {
                probes_.erase(p.bucket);  // nobody waits for it yet
            }
            pending_.erase(id);
            return decide_without_redis(scope, key, policy);
        }
        deadlines_.push_back(id);
        arm_timer();
        return std::nullopt;
    }

private:
    enum class state { disconnected, connecting, ready };

    struct pending {
        completion done;
        std::string bucket;
        std::string scope;
        std::string key;
        limit::bucket_policy policy;
        steady::time_point started;
        steady::time_point deadline;
        steady::time_point sent_at;  ///< last EVALSHA; no later than Redis decided
        bool sent = false;
        bool retried = false;  ///< after NOSCRIPT
        bool probe = false;    ///< first request after the bucket's cached refusal ran out
        bool waiting = false;  ///< held until the probe of its bucket is answered
    };

    // ---- connection --------------------------------------------------------

    void start_connect(bool hold) {
        state_ = state::connecting;
        hold_ = hold;
        update_fallback();
        addresses_.clear();
        next_address_ = 0;
        error_code ec;
        auto address = asio::ip::make_address(settings_.endpoint.host, ec);
        if (!settings_.addresses.empty() || !ec) {
            addresses_ = settings_.addresses.empty() ? std::vector<std::string>{address.to_string()}
                                                     : settings_.addresses;
            connect_next();
            return;
        }
        resolving_ = true;
        resolver_.async_resolve(
            settings_.endpoint.host, std::to_string(settings_.endpoint.port),
            [weak = weak_from_this()](error_code rec, const tcp::resolver::results_type& found) {
                auto self = weak.lock();
                if (!self || self->closing_) {
                    return;
                }
                self->resolving_ = false;
                if (rec || found.empty()) {
                    self->report("cannot resolve " + self->settings_.endpoint.host);
                    self->attempt_failed(redis_error_kind::connect);
                    return;
                }
                for (const auto& entry : found) {
                    std::string ip = entry.endpoint().address().to_string();
                    if (std::find(self->addresses_.begin(), self->addresses_.end(), ip) ==
                        self->addresses_.end()) {
                        self->addresses_.push_back(std::move(ip));
                    }
                }
                self->connect_next();
            });
    }

    /// Connects to the next address of the name. A name may have several
    /// (localhost: ::1 and 127.0.0.1) while Redis listens on one of them,
    /// so an attempt fails only once every address refused.
    void connect_next() {
        while (next_address_ < addresses_.size()) {
            redisAsyncContext* ac =
                redisAsyncConnect(addresses_[next_address_++].c_str(), settings_.endpoint.port);
            if (ac != nullptr && ac->err == 0) {
                connect_to(ac);
                return;
            }
            if (ac != nullptr) {
                if (next_address_ == addresses_.size()) {
                    report(std::string("cannot connect: ") + ac->errstr);
                }
                redisAsyncFree(ac);
            }
        }
        attempt_failed(redis_error_kind::connect);
    }

    /// A connection to one address failed before it was established (from
    /// its connect callback): when the name has more, tries the next one
    /// instead of failing the attempt. Commands queued on `ac` go out again
    /// on the next connection (none of them reached Redis).
    bool try_next_address(const redisAsyncContext* ac) {
        if (ac != ac_ || next_address_ >= addresses_.size()) {
            return false;
        }
        ac_ = nullptr;
        link_.reset();  // as in connection_gone
        sent_.clear();
        handshake_left_ = 0;
        for (auto& entry : pending_) {
            entry.second.sent = false;  // their NULL replies from `ac` now pass them by
        }
        // After hiredis has freed `ac` (it does once this callback returns).
        asio::post(ioc_, [weak = weak_from_this()] {
            if (auto self = weak.lock();
                self && !self->closing_ && self->state_ == state::connecting && !self->ac_) {
                self->connect_next();
            }
        });
        return true;
    }

    void connect_to(redisAsyncContext* ac) {
        auto link = redis_asio_link::attach(ioc_, ac);
        if (!link) {
            redisAsyncFree(ac);
            attempt_failed(redis_error_kind::connect);
            return;
        }
        ac->data = this;
        redisAsyncSetConnectCallback(ac, &connect_callback);
        redisAsyncSetDisconnectCallback(ac, &disconnect_callback);
        redisEnableKeepAlive(&ac->c);
        ac_ = ac;
        link_ = std::move(link);
        send_handshake();
        // Requests held while the name resolved (or an earlier address of it
        // refused) go out behind the handshake.
        const std::vector<std::uint64_t> held(deadlines_.begin(), deadlines_.end());
        for (std::uint64_t id : held) {
            auto it = pending_.find(id);
            if (it != pending_.end() && !it->second.sent && !it->second.waiting &&
                !send_eval(id, it->second)) {
                complete(id, decide_without_redis(it->second));
            }
        }
        arm_timer();
    }

    void send_handshake() {
        const auto now = steady::now();
        handshake_left_ = 0;
        const auto& ep = settings_.endpoint;
        auto send = [&](std::initializer_list<std::string_view> words) {
            std::vector<const char*> argv;
            std::vector<std::size_t> lens;
            for (auto w : words) {
                argv.push_back(w.data());
                lens.push_back(w.size());
            }
            if (redisAsyncCommandArgv(ac_, &reply_callback, pack(0, command_kind::handshake),
                                      static_cast<int>(argv.size()), argv.data(),
                                      lens.data()) == REDIS_OK) {
                ++handshake_left_;
                command_sent(now);
            }
        };
        if (!ep.password.empty()) {
            if (ep.username.empty()) {
                send({"AUTH", ep.password});
            } else {
                send({"AUTH", ep.username, ep.password});
            }
        }
        if (ep.db != 0) {
            const std::string db = std::to_string(ep.db);
            send({"SELECT", db});
        }
        for (auto a : {algorithm_kind::gcra, algorithm_kind::token_bucket,
                       algorithm_kind::fixed_window, algorithm_kind::sliding_window}) {
            send({"SCRIPT", "LOAD", script_for(a).source});
        }
    }

    bool send_eval(std::uint64_t id, pending& p) {
        const redis_script& script = script_for(p.policy.algorithm);
        const redis_script_args args = script_args(p.policy);
        const char* argv[7] = {"EVALSHA",         script.sha1.c_str(), "1",
                               p.bucket.c_str(),  args.limit.c_str(),  args.window_us.c_str(),
                               args.burst.c_str()};
        const std::size_t lens[7] = {7,
                                     script.sha1.size(),
                                     1,
                                     p.bucket.size(),
                                     args.limit.size(),
                                     args.window_us.size(),
                                     args.burst.size()};
        if (redisAsyncCommandArgv(ac_, &reply_callback, pack(id, command_kind::eval), 7, argv,
                                  lens) != REDIS_OK) {
            return false;
        }
        p.sent = true;
        p.sent_at = steady::now();
        command_sent(p.sent_at);
        return true;
    }

    void send_ping(steady::time_point now) {
        const char* argv[1] = {"PING"};
        const std::size_t lens[1] = {4};
        if (redisAsyncCommandArgv(ac_, &reply_callback, pack(0, command_kind::ping), 1, argv,
                                  lens) == REDIS_OK) {
            ping_out_ = true;
            ping_sent_ = now;
            command_sent(now);
            arm_timer();
        }
    }

    /// Replies come back in the order commands went out, so the oldest
    /// unanswered command is always `sent_.front()`.
    void command_sent(steady::time_point t) {
        sent_.push_back(t);
        if (sent_.size() == 1 && link_) {
            link_->set_read_interest(true);
        }
    }

    steady::time_point reply_received() {
        steady::time_point t = steady::now();
        if (!sent_.empty()) {
            t = sent_.front();
            sent_.pop_front();
        }
        if (sent_.empty() && link_) {
            link_->set_read_interest(false);
        }
        return t;
    }

    /// A connection attempt failed before it worked: back off.
    void attempt_failed(redis_error_kind why) {
        state_ = state::disconnected;
        hold_ = false;
        hold_next_ = false;
        backoff_ = backoff_.count() == 0 ? settings_.backoff_min
                                         : std::min(2 * backoff_, settings_.backoff_max);
        shared_.error(why);
        // Requests held for this attempt that never went out.
        std::vector<std::uint64_t> unsent;
        for (std::uint64_t id : deadlines_) {
            auto it = pending_.find(id);
            if (it != pending_.end() && !it->second.sent && !it->second.waiting) {
                unsent.push_back(id);
            }
        }
        for (std::uint64_t id : unsent) {
            if (auto it = pending_.find(id); it != pending_.end()) {
                complete(id, decide_without_redis(it->second));
            }
        }
        update_fallback(true);
        next_attempt_ = std::max(steady::now() + backoff_, fallback_since_ + flap_hold_);
        arm_timer();
    }

    /// `ac` is gone or going (hiredis frees it after this returns, failing
    /// its commands with NULL replies). `worked`: it was answering until now,
    /// so the next request reconnects at once and waits for it.
    /// `idle_close`: Redis closed a connection that had nothing to answer
    /// (its `timeout`, a restart, CLIENT KILL); the next request reconnects
    /// and waits for it, so no decision is lost and nothing is said above debug.
    void connection_gone(const redisAsyncContext* ac, redis_error_kind why, bool worked,
                         bool idle_close = false) {
        if (ac != ac_ || ac == nullptr) {
            return;
        }
        ac_ = nullptr;
        link_.reset();  // hiredis holds no hook of it any more, or a handler keeps it alive
        sent_.clear();
        handshake_left_ = 0;
        suspect_ = false;
        ping_out_ = false;
        if (worked) {
            state_ = state::disconnected;
            hold_ = false;
            hold_next_ = true;
            backoff_ = {};
            next_attempt_ = steady::now();
            if (idle_close) {
                // With `timeout 300` in redis.conf and quiet traffic this
                // happens every few minutes per worker: routine, not an error.
                log_report("closed the idle connection; the next request reopens it",
                           log_level::debug);
            } else {
                shared_.error(why);
                report("connection lost");
            }
            update_fallback();
            arm_timer();
        } else {
            attempt_failed(why);
        }
    }

    /// Drops the current connection (it failed its handshake or stopped
    /// answering). From inside a hiredis callback the free is deferred.
    void drop(redis_error_kind why) {
        if (ac_ == nullptr) {
            return;
        }
        if (in_callback_ > 0) {
            state_ = state::disconnected;  // nothing more goes to it
            update_fallback();
            asio::post(ioc_, [weak = weak_from_this(), ac = ac_, why] {
                if (auto self = weak.lock(); self && self->ac_ == ac && !self->closing_) {
                    self->drop(why);
                }
            });
            return;
        }
        auto* ac = ac_;
        auto link = link_;  // alive until hiredis has run the cleanup hook
        connection_gone(ac, why, false);
        redisAsyncFree(ac);
    }

    // ---- replies -------------------------------------------------------------

    static void reply_callback(redisAsyncContext* ac, void* reply, void* privdata) {
        auto* self = static_cast<impl*>(ac->data);
        if (self == nullptr || self->closing_) {
            return;
        }
        const auto bits = reinterpret_cast<std::uintptr_t>(privdata);
        ++self->in_callback_;
        try {
            self->on_reply(ac, static_cast<redisReply*>(reply), bits >> kind_bits,
                           static_cast<command_kind>(bits & ((1u << kind_bits) - 1)));
        } catch (...) {
            // Nothing may unwind through hiredis (C); a failed completion is dropped.
        }
        --self->in_callback_;
    }

    static void connect_callback(const redisAsyncContext* ac, int status) {
        auto* self = static_cast<impl*>(ac->data);
        if (self == nullptr || self->closing_ || status == REDIS_OK) {
            return;
        }
        ++self->in_callback_;
        if (!self->try_next_address(ac)) {
            self->report(std::string("cannot connect: ") + (ac->errstr ? ac->errstr : "error"));
            self->connection_gone(ac, redis_error_kind::connect, false);
        }
        --self->in_callback_;
    }

    static void disconnect_callback(const redisAsyncContext* ac, int) {
        auto* self = static_cast<impl*>(ac->data);
        if (self == nullptr || self->closing_) {
            return;
        }
        ++self->in_callback_;
        if (self->state_ == state::connecting && ac == self->ac_) {
            // Closed before the handshake completed: not a Redis that worked
            // (a server that is not Redis ends here with a protocol error).
            self->report(
                std::string("connection closed during the handshake: ") +
                (ac->errstr != nullptr && ac->errstr[0] != '\0' ? ac->errstr : "no reason given"));
            self->connection_gone(ac, redis_error_kind::connect, false);
        } else {
            const bool worked = self->state_ == state::ready && !self->suspect_;
            // Closed by Redis (end of file) with no reply outstanding.
            const bool idle_close = worked && self->sent_.empty() && ac->err == REDIS_ERR_EOF;
            self->connection_gone(ac, redis_error_kind::connection, worked, idle_close);
        }
        --self->in_callback_;
    }

    void on_reply(redisAsyncContext* ac, redisReply* r, std::uint64_t id, command_kind kind) {
        if (r == nullptr) {
            // The context is being freed: every command it still had fails.
            if (kind == command_kind::eval) {
                if (auto it = pending_.find(id); it != pending_.end() && it->second.sent) {
                    complete(id, decide_without_redis(it->second));
                }
            }
            return;
        }
        if (ac != ac_) {
            return;
        }
        const auto sent_at = reply_received();
        const auto now = steady::now();
        switch (kind) {
            case command_kind::eval:
                shared_.observe_duration(std::chrono::duration<double>(now - sent_at).count());
                on_eval_reply(id, r);
                break;
            case command_kind::handshake:
                on_handshake_reply(r);
                break;
            case command_kind::ping:
                ping_out_ = false;
                if (r->type != REDIS_REPLY_ERROR && now - sent_at <= settings_.timeout) {
                    suspect_ = false;
                    update_fallback();
                }
                break;
            case command_kind::reload:
                break;
        }
        arm_timer();
    }

    void on_handshake_reply(redisReply* r) {
        if (r->type == REDIS_REPLY_ERROR) {
            report("handshake refused: " + std::string(r->str, r->len));
            drop(redis_error_kind::connect);
            return;
        }
        if (handshake_left_ > 0 && --handshake_left_ == 0 && state_ == state::connecting) {
            state_ = state::ready;
            hold_ = false;
            suspect_ = false;
            // backoff_ and reported_ stay until Redis decides again: a node
            // that takes connections but fails every decision (READONLY,
            // OOM) is retried ever slower, and its trouble logged once.
            reported_reply_ = false;
            update_fallback();
        }
    }

    void on_eval_reply(std::uint64_t id, redisReply* r) {
        auto it = pending_.find(id);
        if (it == pending_.end()) {
            return;  // decided without Redis already (timed out)
        }
        pending& p = it->second;
        if (r->type == REDIS_REPLY_ERROR) {
            std::string_view message(r->str, r->len);
            if (message.starts_with("NOSCRIPT") && !p.retried) {
                // Redis lost its scripts (restart, SCRIPT FLUSH): load and retry once.
                shared_.error(redis_error_kind::noscript);
                p.retried = true;
                const std::string& source = script_for(p.policy.algorithm).source;
                const char* argv[3] = {"SCRIPT", "LOAD", source.c_str()};
                const std::size_t lens[3] = {6, 4, source.size()};
                if (redisAsyncCommandArgv(ac_, &reply_callback, pack(0, command_kind::reload), 3,
                                          argv, lens) == REDIS_OK) {
                    command_sent(steady::now());
                    if (send_eval(id, p)) {
                        return;
                    }
                }
            } else {
                shared_.error(redis_error_kind::reply);
                if (redis_error_is_node_wide(message)) {
                    // Not this key's trouble but the node's (a primary demoted
                    // to replica, a server loading, out of memory, busy with a
                    // script, or a Redis Cluster node): deciding some keys
                    // here and the others locally would split every limit.
                    // Reconnect, with backoff and a fresh name lookup,
                    // deciding locally meanwhile. One line per trouble.
                    report("decision failed: " + std::string(message));
                    complete(id, decide_without_redis(p));
                    drop(redis_error_kind::connection);
                    return;
                }
                report_reply("decision failed: " + std::string(message));
            }
            complete(id, decide_without_redis(p));
            return;
        }
        if (!all_integers(r, 4)) {
            shared_.error(redis_error_kind::reply);
            complete(id, decide_without_redis(p));
            return;
        }
        const limit::decision d =
            decision_from_reply(r->element[0]->integer, r->element[1]->integer,
                                r->element[2]->integer, r->element[3]->integer, p.policy);
        if (!d.allowed) {
            cache_.remember(p.bucket, d, since_epoch(p.sent_at));
        }
        decided_in_redis();
        complete(id, store_result{d, false}, true);
    }

    // ---- deadlines -------------------------------------------------------------

    void arm_timer() {
        while (!deadlines_.empty() && pending_.find(deadlines_.front()) == pending_.end()) {
            deadlines_.pop_front();
        }
        auto next = steady::time_point::max();
        if (!deadlines_.empty()) {
            next = pending_.find(deadlines_.front())->second.deadline;
        }
        if (!sent_.empty()) {
            next = std::min(next, sent_.front() + settings_.dead_after);
        }
        if (next == steady::time_point::max()) {
            if (timer_armed_) {
                timer_armed_ = false;
                timer_.cancel();  // nothing to wait for: leave the io_context idle
            }
            return;
        }
        if (timer_armed_ && timer_expiry_ <= next) {
            return;
        }
        timer_armed_ = true;
        timer_expiry_ = next;
        timer_.expires_at(next);
        timer_.async_wait([weak = weak_from_this()](error_code ec) {
            if (ec) {
                return;
            }
            if (auto self = weak.lock(); self && !self->closing_) {
                self->on_timer();
            }
        });
    }

    void on_timer() {
        timer_armed_ = false;
        const auto now = steady::now();
        bool timed_out = false;
        while (!deadlines_.empty()) {
            auto it = pending_.find(deadlines_.front());
            if (it == pending_.end()) {
                deadlines_.pop_front();
                continue;
            }
            if (it->second.deadline > now) {
                break;
            }
            const std::uint64_t id = deadlines_.front();
            deadlines_.pop_front();
            shared_.error(redis_error_kind::timeout);
            if (!timed_out) {
                // Stop making every request wait: decide locally until a PING
                // (or the connection attempt) shows Redis answering again.
                timed_out = true;
                if (state_ == state::ready) {
                    suspect_ = true;
                }
                hold_ = false;
                update_fallback(true, true);
            }
            complete(id, decide_without_redis(it->second));
        }
        if (!sent_.empty() && now - sent_.front() >= settings_.dead_after) {
            report("no answer for " + std::to_string(settings_.dead_after.count()) +
                   " ms; reconnecting");
            drop(redis_error_kind::connection);
        }
        arm_timer();
    }

    // ---- decisions -------------------------------------------------------------

    /// `from_redis`: the result is Redis' own decision (not a fallback).
    void complete(std::uint64_t id, store_result result, bool from_redis = false) {
        auto it = pending_.find(id);
        if (it == pending_.end()) {
            return;
        }
        completion done = std::move(it->second.done);
        std::vector<std::uint64_t> waiters;
        std::string bucket;
        if (it->second.probe) {
            if (auto probe = probes_.find(it->second.bucket); probe != probes_.end()) {
                waiters = std::move(probe->second);
                probes_.erase(probe);
                bucket = std::move(it->second.bucket);
            }
        }
        pending_.erase(it);
        if (done) {
            try {
                done(result);
            } catch (...) {
                // A completion must not throw; if it does, the request is lost, not the worker.
            }
        }
        if (!waiters.empty()) {
            release(bucket, std::move(waiters), result, from_redis);
        }
    }

    /// The probe of `bucket` is answered. If Redis allowed it, as many
    /// waiters as it said would still pass ask Redis at once. The others are
    /// answered by the cache if it holds a refusal; the first one left
    /// becomes the new probe and the rest wait for it. So a token coming back
    /// to a busy key costs about two round trips, not one per waiter.
    void release(const std::string& bucket, std::vector<std::uint64_t> waiters,
                 const store_result& probe, bool from_redis) {
        std::size_t direct = waiters.size();  // a fallback answer: each decides alone
        if (from_redis) {
            direct = probe.decision.allowed
                         ? std::min<std::uint64_t>(probe.decision.remaining, waiters.size())
                         : 0;
        }
        for (std::size_t i = 0; i < direct; ++i) {
            redispatch(waiters[i]);
        }
        std::vector<std::uint64_t> rest;
        const auto now = since_epoch(steady::now());
        for (std::size_t i = direct; i < waiters.size(); ++i) {
            if (pending_.find(waiters[i]) == pending_.end()) {
                continue;  // timed out meanwhile
            }
            if (auto refused = cache_.lookup(bucket, now)) {
                complete(waiters[i], store_result{*refused, false});
            } else {
                rest.push_back(waiters[i]);
            }
        }
        if (rest.empty()) {
            return;
        }
        pending_.find(rest.front())->second.probe = true;
        probes_[bucket].assign(rest.begin() + 1, rest.end());
        redispatch(rest.front());
    }

    /// A request that waited for its bucket's probe: the cache has the
    /// answer if the probe was refused; otherwise it asks Redis itself.
    void redispatch(std::uint64_t id) {
        auto it = pending_.find(id);
        if (it == pending_.end()) {
            return;  // timed out meanwhile
        }
        pending& p = it->second;
        p.waiting = false;
        if (auto refused = cache_.lookup(p.bucket, since_epoch(steady::now()))) {
            complete(id, store_result{*refused, false});
            return;
        }
        const bool usable = state_ == state::ready && !suspect_ && ac_ != nullptr;
        if (!usable || !send_eval(id, p)) {
            complete(id, decide_without_redis(p));
        }
    }

    store_result decide_without_redis(const pending& p) {
        return decide_without_redis(p.scope, p.key, p.policy);
    }

    store_result decide_without_redis(std::string_view scope, std::string_view key,
                                      const limit::bucket_policy& policy) {
        if (settings_.on_failure == failure_mode::closed) {
            store_result r;
            r.unavailable = true;
            r.decision.limit = policy.limit;
            r.decision.window = policy.window;
            r.decision.retry_after = std::chrono::seconds{1};
            return r;
        }
        fallback_scope_.assign(fallback_scope_prefix);
        fallback_scope_.append(scope);
        return store_result{
            local_.check(fallback_scope_, key, fallback_policy(policy, settings_.instances)),
            false};
    }

    /// Reports this worker's changes of view to the shared fallback state.
    /// `failed`: Redis has just failed this worker (an attempt, a timeout);
    /// reported even when the worker decided locally already, because
    /// another worker may have reported Redis back meanwhile.
    ///
    /// Only the way into fallback is reported here. Requests going to Redis
    /// again after a fallback (connected, or a PING answered) are a trial:
    /// Redis is reported back by decided_in_redis(), when a decision has
    /// succeeded. A node that takes connections and PINGs but fails every
    /// decision (a replica's READONLY, OOM) therefore keeps the gauge at 1
    /// and logs nothing, where reporting it back at each reconnect flapped
    /// the gauge and the log once a second.
    ///
    /// `timed_out`: the failure is a decision that took too long, which
    /// cost the requests waiting for it; it makes a failed trial a flip.
    void update_fallback(bool failed = false, bool timed_out = false) {
        if (closing_) {
            return;  // a store shutting down is not Redis coming back
        }
        // A connection that worked and was lost is not a fallback yet: the
        // next request reconnects at once and waits for it.
        const bool redis_decides = (state_ == state::ready && !suspect_) ||
                                   (state_ == state::connecting && hold_) ||
                                   (state_ == state::disconnected && ac_ == nullptr && hold_next_);
        const auto now = steady::now();
        if (redis_decides) {
            if (in_fallback_ && !trial_) {
                trial_ = true;
                decided_in_trial_ = false;
                trial_since_ = now;
            }
            return;
        }
        if (!in_fallback_ || trial_) {
            // Leaving Redis, or a trial, for local decisions. It is a flip
            // when going back to Redis cost something and did not last: a
            // trial in which Redis decided (the gauge may have moved) or a
            // decision timed out (requests waited), or a failure soon after
            // Redis was reported back. A trial refused at once (READONLY)
            // cost nothing: the back-off paces those.
            const bool flip = trial_ ? decided_in_trial_ || timed_out
                                     : recovered_ && now - recovered_at_ < settings_.flap_hold_max;
            if (flip) {
                flap_hold_ =
                    std::clamp(2 * flap_hold_, settings_.flap_hold_min, settings_.flap_hold_max);
            } else if (!trial_) {
                flap_hold_ = {};  // Redis decided long enough: a new trouble
            }
            trial_ = false;
            fallback_since_ = now;
        }
        if (!in_fallback_ || failed) {
            in_fallback_ = true;
            shared_.report_fallback(true);
        }
    }

    /// Redis has just decided a request in time. Ends a fallback (the trial
    /// succeeded): back-off, trouble reports and the shared state start
    /// afresh. Outside a fallback it is reported too: the last report may be
    /// another worker's timeout, while Redis decides again here.
    void decided_in_redis() {
        if (state_ != state::ready || suspect_) {
            return;  // answered while the node is being left: proves nothing
        }
        if (trial_) {
            decided_in_trial_ = true;
            const auto now = steady::now();
            if (now - trial_since_ < flap_hold_) {
                return;  // after a flip, Redis must decide for the hold without failing
            }
            trial_ = false;
            recovered_ = true;
            recovered_at_ = now;
        }
        in_fallback_ = false;
        backoff_ = {};
        reported_ = false;
        shared_.report_fallback(false);
    }

    /// One line per trouble, not per attempt: quiet again once Redis decides.
    void report(const std::string& what) {
        if (reported_) {
            return;
        }
        reported_ = true;
        log_report(what);
    }
    /// The same for error replies, on their own: one bad key's error does
    /// not silence the connection's troubles that may follow.
    void report_reply(const std::string& what) {
        if (reported_reply_) {
            return;
        }
        reported_reply_ = true;
        log_report(what);
    }
    void log_report(const std::string& what, log_level level = log_level::warn) const {
        log_line(level, "redis " + settings_.endpoint.host + ":" +
                            std::to_string(settings_.endpoint.port) + ": " + what);
    }

    asio::io_context& ioc_;
    redis_settings settings_;
    limit::rate_limiter& local_;
    redis_shared& shared_;
    over_limit_cache cache_;

    redisAsyncContext* ac_ = nullptr;
    std::shared_ptr<redis_asio_link> link_;
    tcp::resolver resolver_{ioc_};
    std::vector<std::string> addresses_;  ///< of the name, for this attempt
    std::size_t next_address_ = 0;
    asio::steady_timer timer_{ioc_};
    bool timer_armed_ = false;
    steady::time_point timer_expiry_{};

    state state_ = state::disconnected;
    bool resolving_ = false;
    bool hold_ = false;      ///< requests wait for the connection being opened
    bool hold_next_ = true;  ///< ... and for the next one
    bool suspect_ = false;   ///< a decision timed out; a PING tells when Redis is back
    bool ping_out_ = false;
    steady::time_point ping_sent_{};
    int handshake_left_ = 0;
    std::chrono::milliseconds backoff_{0};
    steady::time_point next_attempt_{};
    /// Reported as deciding without Redis (see update_fallback).
    bool in_fallback_ = false;
    bool trial_ = false;  ///< in fallback, but requests go to Redis again
    bool decided_in_trial_ = false;
    steady::time_point trial_since_{};
    steady::time_point fallback_since_{};
    bool recovered_ = false;             ///< Redis was reported back after a fallback ...
    steady::time_point recovered_at_{};  ///< ... last at this time
    /// Hysteresis (redis_settings::flap_hold_min): the least time in
    /// fallback before Redis is tried again, and in a trial before it is
    /// reported back.
    std::chrono::milliseconds flap_hold_{0};
    bool closing_ = false;
    bool reported_ = false;
    bool reported_reply_ = false;
    int in_callback_ = 0;

    std::uint64_t next_id_ = 1;
    std::unordered_map<std::uint64_t, pending> pending_;
    std::deque<std::uint64_t> deadlines_;  ///< ids in deadline order (same timeout for all)
    std::deque<steady::time_point> sent_;  ///< send times of unanswered commands, in order
    /// Buckets whose probe is in flight, with the requests waiting for it.
    std::unordered_map<std::string, std::vector<std::uint64_t>> probes_;
    std::string fallback_scope_;
};

redis_store::redis_store(asio::io_context& ioc, redis_settings settings, limit::rate_limiter& local,
                         redis_shared& shared, prometheus::Registry& registry) {
    shared.attach(registry);
    impl_ = std::make_shared<impl>(ioc, std::move(settings), local, shared);
    impl_->start();
}

redis_store::~redis_store() {
    impl_->shutdown();
}

void redis_store::stop() {
    impl_->shutdown();
}

std::optional<store_result> redis_store::check(std::string_view scope, std::string_view key,
                                               const limit::bucket_policy& policy,
                                               const completion_source& done) {
    return impl_->check(scope, key, policy, done);
}

}  // namespace tollgate::store
