#include "redis_server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include "support.hpp"

namespace tollgate::test {
namespace {

constexpr const char* redis_binary = "/usr/bin/redis-server";

redis_value copy(const redisReply* r) {
    redis_value v;
    switch (r->type) {
        case REDIS_REPLY_INTEGER:
            v.type = redis_value::kind::integer;
            v.integer = r->integer;
            break;
        case REDIS_REPLY_STRING:
            v.type = redis_value::kind::string;
            v.text.assign(r->str, r->len);
            break;
        case REDIS_REPLY_STATUS:
            v.type = redis_value::kind::status;
            v.text.assign(r->str, r->len);
            break;
        case REDIS_REPLY_ERROR:
            v.type = redis_value::kind::error;
            v.text.assign(r->str, r->len);
            break;
        case REDIS_REPLY_ARRAY:
            v.type = redis_value::kind::array;
            for (std::size_t i = 0; i < r->elements; ++i) {
                v.elements.push_back(copy(r->element[i]));
            }
            break;
        default:
            break;
    }
    return v;
}

}  // namespace

redis_server::redis_server(std::vector<std::string> extra) : extra_(std::move(extra)) {
    if (::access(redis_binary, X_OK) != 0) {
        throw std::runtime_error(
            "redis-server is not installed (apt-get install redis-server, or "
            "TOLLGATE_DEPS=test scripts/install-deps.sh)");
    }
    for (int attempt = 0; attempt < 5; ++attempt) {
        port_ = free_port();
        start();
        if (wait_ready(std::chrono::seconds(5))) {
            return;
        }
        kill();  // lost the port to someone else: try another
    }
    throw std::runtime_error("redis-server did not start");
}

redis_server::~redis_server() {
    conn_.reset();
    kill();
}

std::string redis_server::url(std::string_view auth, int db) const {
    std::string u = "redis://";
    if (!auth.empty()) {
        u += std::string(auth) + "@";
    }
    u += "127.0.0.1:" + std::to_string(port_);
    if (db >= 0) {
        u += "/" + std::to_string(db);
    }
    return u;
}

void redis_server::start() {
    std::vector<std::string> args{redis_binary,
                                  "--port",
                                  std::to_string(port_),
                                  "--bind",
                                  "127.0.0.1",
                                  "--save",
                                  "",
                                  "--appendonly",
                                  "no",
                                  "--daemonize",
                                  "no",
                                  "--loglevel",
                                  "warning",
                                  "--logfile",
                                  ""};
    args.insert(args.end(), extra_.begin(), extra_.end());
    // Built before fork: the child of a threaded process may not allocate.
    std::vector<char*> argv;
    for (auto& a : args) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
        // Dies with the test process, even one that crashes or is killed.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) {
            ::_exit(127);
        }
        int devnull = ::open("/dev/null", O_RDWR);
        ::dup2(devnull, STDIN_FILENO);
        ::dup2(devnull, STDOUT_FILENO);
        ::dup2(devnull, STDERR_FILENO);
        // Nothing of the test process (listeners, connections) leaks into Redis.
        if (::close_range(3, ~0u, 0) != 0) {
            for (int fd = 3; fd < 4096; ++fd) {
                ::close(fd);
            }
        }
        ::execv(redis_binary, argv.data());
        ::_exit(127);
    }
    if (pid_ < 0) {
        throw std::runtime_error("fork failed");
    }
}

bool redis_server::wait_ready(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return false;  // exited: port taken, or bad arguments
        }
        conn_.reset();
        try {
            auto pong = command({"PING"});
            if ((pong.type == redis_value::kind::status && pong.text == "PONG") ||
                (pong.type == redis_value::kind::error && pong.text.starts_with("NOAUTH"))) {
                return true;  // up (with --requirepass it wants AUTH first)
            }
        } catch (const std::exception&) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
}

void redis_server::kill() {
    conn_.reset();
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
}

void redis_server::restart() {
    kill();
    for (int attempt = 0; attempt < 50; ++attempt) {
        start();
        if (wait_ready(std::chrono::seconds(5))) {
            return;
        }
        // The port may linger for a moment after SIGKILL; try again.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("redis-server did not restart on port " + std::to_string(port_));
}

redis_value redis_server::command(std::initializer_list<std::string_view> words) {
    std::vector<std::string> copy_of(words.begin(), words.end());
    return command(copy_of);
}

redis_value redis_server::command(const std::vector<std::string>& words) {
    if (!conn_) {
        timeval tv{1, 0};
        conn_.reset(redisConnectWithTimeout("127.0.0.1", port_, tv));
        if (!conn_ || conn_->err) {
            std::string why = conn_ ? conn_->errstr : "out of memory";
            conn_.reset();
            throw std::runtime_error("cannot connect to redis: " + why);
        }
        redisSetTimeout(conn_.get(), timeval{5, 0});
        if (!password_.empty()) {
            auto* r = static_cast<redisReply*>(
                redisCommand(conn_.get(), "AUTH %b", password_.data(), password_.size()));
            if (r) {
                freeReplyObject(r);
            }
        }
    }
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& w : words) {
        argv.push_back(w.data());
        lens.push_back(w.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(conn_.get(), static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (r == nullptr) {
        std::string why = conn_->errstr;
        conn_.reset();
        throw std::runtime_error("redis command failed: " + why);
    }
    redis_value v = copy(r);
    freeReplyObject(r);
    return v;
}

long long redis_server::calls(std::string_view command_name) {
    auto info = command({"INFO", "commandstats"});
    const std::string needle = "cmdstat_" + std::string(command_name) + ":calls=";
    auto at = info.text.find(needle);
    if (at == std::string::npos) {
        return 0;
    }
    return std::stoll(info.text.substr(at + needle.size()));
}

struct latency_relay::impl {
    std::uint16_t target = 0;
    std::chrono::microseconds min{0};
    std::chrono::microseconds max{0};
    int listener = -1;
    std::atomic<bool> stopping{false};
    std::mutex mutex;  // guards fds, threads and rng
    std::vector<int> fds;
    std::vector<std::thread> threads;
    std::mt19937_64 rng{20240611};

    std::chrono::microseconds delay() {
        std::lock_guard lock(mutex);
        return std::chrono::microseconds{
            std::uniform_int_distribution<std::int64_t>(min.count(), max.count())(rng)};
    }

    void accept_loop() {
        for (;;) {
            const int client = ::accept(listener, nullptr, nullptr);
            if (client < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return;  // shut down
            }
            const int server = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in to{};
            to.sin_family = AF_INET;
            to.sin_port = htons(target);
            to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (::connect(server, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
                ::close(server);
                ::close(client);
                continue;
            }
            std::lock_guard lock(mutex);
            if (stopping) {
                ::close(server);
                ::close(client);
                return;
            }
            fds.push_back(client);
            fds.push_back(server);
            threads.emplace_back([this, client, server] { relay(client, server); });
        }
    }

    /// Requests straight through; answers queued and written when due.
    void relay(int client, int server) {
        struct chunk {
            std::chrono::steady_clock::time_point due;
            std::string data;
        };
        std::mutex qm;
        std::condition_variable cv;
        std::deque<chunk> queue;
        bool done = false;
        std::thread up([&] {
            char buf[16384];
            for (ssize_t n; (n = ::read(client, buf, sizeof buf)) > 0;) {
                if (::send(server, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) {
                    break;
                }
            }
            ::shutdown(server, SHUT_RDWR);
        });
        std::thread deliver([&] {
            std::unique_lock lock(qm);
            for (;;) {
                cv.wait(lock, [&] { return done || !queue.empty(); });
                if (queue.empty()) {
                    break;
                }
                const auto due = queue.front().due;
                if (cv.wait_until(lock, due, [&] { return done; })) {
                    break;
                }
                std::string data = std::move(queue.front().data);
                queue.pop_front();
                lock.unlock();
                ::send(client, data.data(), data.size(), MSG_NOSIGNAL);
                lock.lock();
            }
            ::shutdown(client, SHUT_RDWR);
        });
        char buf[16384];
        auto last = std::chrono::steady_clock::now();
        for (ssize_t n; (n = ::read(server, buf, sizeof buf)) > 0;) {
            std::lock_guard lock(qm);
            last = std::max(last, std::chrono::steady_clock::now() + delay());
            queue.push_back({last, std::string(buf, static_cast<std::size_t>(n))});
            cv.notify_one();
        }
        {
            std::lock_guard lock(qm);
            done = true;
            cv.notify_one();
        }
        ::shutdown(client, SHUT_RDWR);
        up.join();
        deliver.join();
    }
};

latency_relay::latency_relay(std::uint16_t target, std::chrono::microseconds min,
                             std::chrono::microseconds max)
    : impl_(std::make_unique<impl>()) {
    impl_->target = target;
    impl_->min = min;
    impl_->max = max;
    impl_->listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof at;
    if (::bind(impl_->listener, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
        ::listen(impl_->listener, 64) != 0 ||
        ::getsockname(impl_->listener, reinterpret_cast<sockaddr*>(&at), &len) != 0) {
        ::close(impl_->listener);
        throw std::runtime_error("latency_relay: cannot listen");
    }
    port_ = ntohs(at.sin_port);
    // Under the mutex: the accept loop adds its relay threads to the same
    // vector, and may already do so before this emplace_back returns.
    std::lock_guard lock(impl_->mutex);
    impl_->threads.emplace_back([i = impl_.get()] { i->accept_loop(); });
}

void latency_relay::set_delay(std::chrono::microseconds min, std::chrono::microseconds max) {
    std::lock_guard lock(impl_->mutex);
    impl_->min = min;
    impl_->max = max;
}

latency_relay::~latency_relay() {
    std::vector<std::thread> threads;
    {
        std::lock_guard lock(impl_->mutex);
        impl_->stopping = true;
        // Wakes the blocked accept and reads; every thread then winds down.
        ::shutdown(impl_->listener, SHUT_RDWR);
        for (int fd : impl_->fds) {
            ::shutdown(fd, SHUT_RDWR);
        }
        threads = std::move(impl_->threads);
    }
    for (auto& t : threads) {
        t.join();
    }
    ::close(impl_->listener);
    for (int fd : impl_->fds) {
        ::close(fd);
    }
}

config redis_test_config(std::uint16_t upstream_port, const redis_server& server) {
    config cfg = test_config(upstream_port);
    cfg.store.type = store_kind::redis;
    cfg.store.redis.url = server.url();
    return cfg;
}

}  // namespace tollgate::test
