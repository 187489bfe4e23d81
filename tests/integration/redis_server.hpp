#pragma once
// A real redis-server (Debian's) for the Redis store tests: started on a
// free loopback port with persistence off, stopped (SIGKILL) when the test
// ends; can be killed, restarted on the same port and paused, and answers
// commands over a synchronous hiredis connection.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <hiredis/hiredis.h>

#include "tollgate/config/config.hpp"

namespace tollgate::test {

/// One reply, copied out of hiredis.
struct redis_value {
    enum class kind { nil, integer, string, status, error, array } type = kind::nil;
    long long integer = 0;
    std::string text;
    std::vector<redis_value> elements;
};

class redis_server {
public:
    /// Starts redis-server on a free port with `extra` arguments (e.g.
    /// {"--requirepass", "secret"}); waits until it answers PING.
    explicit redis_server(std::vector<std::string> extra = {});
    ~redis_server();
    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    std::uint16_t port() const { return port_; }
    /// redis://127.0.0.1:port (plus `auth` before the host and `/db` when given).
    std::string url(std::string_view auth = "", int db = -1) const;

    /// SIGKILL, and wait for the process to be gone.
    void kill();
    /// Starts it again on the same port (empty: nothing was saved).
    void restart();
    bool running() const { return pid_ > 0; }

    /// Sends one command on the test's own connection (AUTH with `password_`
    /// first if set). Throws std::runtime_error if Redis cannot be reached.
    redis_value command(std::initializer_list<std::string_view> words);
    redis_value command(const std::vector<std::string>& words);
    /// `INFO commandstats` calls of one command (e.g. "evalsha"), 0 if none.
    long long calls(std::string_view command_name);
    /// Password the test connection authenticates with.
    void set_password(std::string password) {
        password_ = std::move(password);
        conn_.reset();
    }

private:
    void start();
    bool wait_ready(std::chrono::milliseconds limit);

    std::vector<std::string> extra_;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
    std::string password_;
    struct context_free {
        void operator()(redisContext* c) const { redisFree(c); }
    };
    std::unique_ptr<redisContext, context_free> conn_;
};

/// A TCP relay on a loopback port in front of 127.0.0.1:`target` that holds
/// each chunk of the server's answers for a random time in [min, max]
/// (order kept): a Redis whose latency sits around the store's timeout.
/// Requests pass at once. Threads per connection; all stopped on destruction.
class latency_relay {
public:
    latency_relay(std::uint16_t target, std::chrono::microseconds min,
                  std::chrono::microseconds max);
    ~latency_relay();
    latency_relay(const latency_relay&) = delete;
    latency_relay& operator=(const latency_relay&) = delete;

    std::uint16_t port() const { return port_; }
    std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
    /// Answers from now on are held for a time in [min, max].
    void set_delay(std::chrono::microseconds min, std::chrono::microseconds max);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
    std::uint16_t port_ = 0;
};

/// test_config with `store.type: redis` on `server` (threads 2).
config redis_test_config(std::uint16_t upstream_port, const redis_server& server);

}  // namespace tollgate::test
