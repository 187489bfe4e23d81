#include "tollgate/server/server.hpp"

#include "tollgate/admin/status_page.hpp"
#include "tollgate/config/values.hpp"
#include "tollgate/log.hpp"
#include "tollgate/server/descriptor_limit.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <thread>

namespace tollgate::server {

tcp::endpoint to_endpoint(const listen_address& address) {
    error_code ec;
    auto ip = asio::ip::make_address(address.host, ec);
    if (ec) {
        throw std::runtime_error("listen address " + address.host + ": not an IP address");
    }
    return {ip, address.port};
}

server::server(std::shared_ptr<const config> cfg, const limit::clock* time) : started_with_(cfg) {
    const auto& c = *cfg;
    std::size_t threads = c.threads != 0 ? c.threads : std::thread::hardware_concurrency();
    threads = std::max<std::size_t>(1, threads);
    threads_ = threads;
    const auto limit = raise_descriptor_limit();
    if (limit.now != limit.before) {
        log_line(log_level::debug, "open-file limit raised from " + std::to_string(limit.before) +
                                       " to " + std::to_string(limit.now));
    }
    if (auto warning = descriptor_limit_warning(c)) {
        log_line(log_level::warn, *warning);
    }
    if (c.upstream.max_connections < threads) {
        // Each thread's pool gets max_connections / threads, but at least
        // one, or a thread could never reach the upstream.
        log_line(log_level::warn,
                 "warning: upstream.max_connections (" +
                     std::to_string(c.upstream.max_connections) + ") is less than the " +
                     std::to_string(threads) +
                     " threads; each thread still gets 1 upstream connection, so up to " +
                     std::to_string(threads) + " may be open");
    }
    gateway_ = std::make_unique<gateway>(build_runtime(cfg), threads, time);

    auto endpoint = to_endpoint(c.listen);
    for (std::size_t i = 0; i < threads; ++i) {
        workers_.push_back(std::make_unique<worker>(*gateway_, i, c, threads));
        try {
            if (i == 0) {
                worker::claim_address(endpoint);
            }
            workers_.back()->listen(endpoint);
        } catch (const boost::system::system_error& e) {
            throw std::runtime_error("listen: cannot listen on " + format_listen_address(c.listen) +
                                     ": " + e.code().message());
        }
        // With port 0 the first worker picks the port; the others join it.
        endpoint = workers_.front()->local_endpoint();
    }
    if (c.tls.listen) {
        auto tls_endpoint = to_endpoint(*c.tls.listen);
        for (auto& w : workers_) {
            try {
                if (w == workers_.front()) {
                    worker::claim_address(tls_endpoint);
                }
                w->listen_tls(tls_endpoint);
            } catch (const boost::system::system_error& e) {
                throw std::runtime_error("tls.listen: cannot listen on " +
                                         format_listen_address(*c.tls.listen) + ": " +
                                         e.code().message());
            }
            tls_endpoint = workers_.front()->local_tls_endpoint();
        }
        tls_endpoint_ = tls_endpoint;
    }
    try {
        admin_ = std::make_unique<admin::admin_server>(
            to_endpoint(c.admin.listen),
            [this](const admin::request& req) { return handle_admin(req); });
    } catch (const boost::system::system_error& e) {
        throw std::runtime_error("admin.listen: cannot listen on " +
                                 format_listen_address(c.admin.listen) + ": " + e.code().message());
    }
    proxy_endpoint_ = endpoint;
    admin_endpoint_ = admin_->local_endpoint();
}

server::~server() {
    if (started_ && !stopped_) {
        for (auto& w : workers_) {
            w->force_stop();
        }
        for (auto& w : workers_) {
            w->join();
        }
    }
    if (admin_) {
        admin_->stop();
    }
}

void server::start() {
    for (auto& w : workers_) {
        w->start_thread();
    }
    admin_->start();
    started_ = true;
}

namespace {

bool operator==(const listen_address& a, const listen_address& b) {
    return a.host == b.host && a.port == b.port;
}

// What a reload cannot change: the listeners, the worker threads and what
// each worker built at startup (its upstream pool, its store), and the size
// of the shared key table.
std::vector<std::string> restart_only_changes(const config& running, const config& next) {
    std::vector<std::string> changed;
    const auto check = [&changed](bool same, const char* key) {
        if (!same) {
            changed.emplace_back(key);
        }
    };
    check(running.listen == next.listen, "listen");
    check(running.admin.listen == next.admin.listen, "admin.listen");
    check(running.tls.listen.has_value() == next.tls.listen.has_value() &&
              (!running.tls.listen || *running.tls.listen == *next.tls.listen),
          "tls.listen");
    check(running.threads == next.threads, "threads");
    check(running.upstream.connect_timeout == next.upstream.connect_timeout,
          "upstream.connect_timeout");
    check(running.upstream.idle_timeout == next.upstream.idle_timeout, "upstream.idle_timeout");
    check(running.upstream.max_connections == next.upstream.max_connections,
          "upstream.max_connections");
    check(running.rate_limit.max_keys == next.rate_limit.max_keys, "rate_limit.max_keys");
    const auto& a = running.store;
    const auto& b = next.store;
    check(a.type == b.type && a.redis.url == b.redis.url && a.redis.timeout == b.redis.timeout &&
              a.redis.on_failure == b.redis.on_failure && a.redis.instances == b.redis.instances &&
              a.redis.key_prefix == b.redis.key_prefix,
          "store");
    return changed;
}

}  // namespace

std::vector<std::string> server::reload(std::shared_ptr<const config> next) {
    auto current = gateway_->current();
    // Against what runs, not the last reload: that one may have asked for
    // a change it could not make either.
    auto changed = restart_only_changes(*started_with_, *next);
    gateway_->swap(build_runtime(std::move(next), current.get()));
    return changed;
}

std::optional<std::string> server::descriptor_limit_warning(const config& next) const {
    // The pools keep the size they started with.
    return tollgate::server::descriptor_limit_warning(
        descriptors_needed(next, threads_, started_with_->upstream.max_connections),
        current_descriptor_limit());
}

void server::drain_and_stop() {
    if (stopped_ || drain_timer_) {
        return;
    }
    asio::io_context ioc;
    // The timer is bound to `ioc`: it must go before `ioc` does, however
    // this ends.
    struct drop_timer {
        std::optional<asio::steady_timer>& timer;
        ~drop_timer() { timer.reset(); }
    } drop{drain_timer_};
    async_drain_and_stop(ioc.get_executor(), [] {});
    // The caller's thread waits here, and so would whatever flushes the
    // access log on it: flush it here, or the lines of the exchanges that
    // end during the drain reach stdout only at exit.
    while (!ioc.stopped()) {
        ioc.run_for(std::chrono::seconds(1));
        std::fflush(stdout);
    }
}

void server::async_drain_and_stop(asio::any_io_executor ex, std::function<void()> done) {
    if (stopped_ || drain_timer_) {
        return;
    }
    gateway_->start_draining();
    for (auto& w : workers_) {
        w->begin_drain();
    }
    drain_deadline_ =
        std::chrono::steady_clock::now() + gateway_->current()->cfg->shutdown.drain_timeout;
    drain_done_ = std::move(done);
    drain_timer_.emplace(std::move(ex));
    // A timer rather than a loop: the executor's thread stays free for what
    // else it serves meanwhile (main: a second signal, the access log flush).
    // The first look after the workers had a turn to close their idle
    // keep-alive connections, so the deadline's count is of exchanges.
    drain_tick(std::chrono::milliseconds(20));
}

void server::drain_tick(std::chrono::steady_clock::duration delay) {
    drain_timer_->expires_after(delay);
    drain_timer_->async_wait([this](error_code ec) {
        // Cancelled, or expired just as stop_now() came first.
        if (ec || stopped_) {
            return;
        }
        const std::size_t open = open_connections();
        if (open > 0 && std::chrono::steady_clock::now() < drain_deadline_) {
            drain_tick(std::chrono::milliseconds(20));
            return;
        }
        if (open > 0) {
            // Cut, not finished: say so, or the cut exchanges look like
            // clients that went away.
            log_line(log_level::warn, "shutdown.drain_timeout passed: cutting " +
                                          std::to_string(open) +
                                          (open == 1 ? " open connection" : " open connections"));
        }
        stop_workers();
        auto done = std::move(drain_done_);
        if (done) {
            done();
        }
    });
}

void server::stop_now() {
    if (drain_timer_) {
        drain_timer_->cancel();
    }
    drain_done_ = nullptr;
    stop_workers();
}

std::size_t server::open_connections() const {
    std::size_t open = 0;
    for (const auto& w : workers_) {
        open += w->session_count();
    }
    return open;
}

void server::stop_workers() {
    if (stopped_) {
        return;
    }
    for (auto& w : workers_) {
        w->force_stop();
    }
    for (auto& w : workers_) {
        w->join();
    }
    stopped_ = true;
}

tcp::endpoint server::proxy_endpoint() const {
    return proxy_endpoint_;
}

tcp::endpoint server::tls_endpoint() const {
    return tls_endpoint_;
}

tcp::endpoint server::admin_endpoint() const {
    return admin_endpoint_;
}

std::uint64_t server::upstream_connects() const {
    std::uint64_t total = 0;
    for (const auto& w : workers_) {
        total += w->pool->connects();
    }
    return total;
}

namespace {

constexpr std::size_t default_top = 10;
constexpr std::size_t max_top = 1000;

/// `top` from the query of /debug/keys: 10 when absent, at most 1000;
/// the error text when it is not one positive integer. Parameters are split
/// on `&` and `=`, so `stop=5` is not `top`; others are ignored.
parse_result<std::size_t> query_top(std::string_view target) {
    using result = parse_result<std::size_t>;
    const std::size_t question = target.find('?');
    std::string_view query = question == std::string_view::npos ? "" : target.substr(question + 1);
    std::optional<std::string_view> value;
    while (!query.empty()) {
        const std::size_t amp = query.find('&');
        const std::string_view param = query.substr(0, amp);
        query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
        const std::size_t eq = param.find('=');
        if (param.substr(0, eq) != "top") {
            continue;
        }
        if (value) {
            return result::fail("top: given more than once");
        }
        value = eq == std::string_view::npos ? "" : param.substr(eq + 1);
    }
    if (!value) {
        return result::ok(default_top);
    }
    std::size_t n = 0;
    const char* end = value->data() + value->size();
    auto [ptr, ec] = std::from_chars(value->data(), end, n);
    if (ptr == end && ec == std::errc::result_out_of_range) {
        return result::ok(max_top);  // digits past size_t: still "as many as there are"
    }
    if (value->empty() || ec != std::errc{} || ptr != end || n == 0) {
        return result::fail("top: must be a positive integer (at most " + std::to_string(max_top) +
                            "), got " + quote_value(*value));
    }
    return result::ok(std::min(n, max_top));
}

std::string_view type_of(std::string_view key) {
    return key.substr(0, key.find(':'));
}

/// The paths handle_admin answers (GET and HEAD only); anything else is 404.
constexpr std::array<std::string_view, 5> admin_paths = {"/metrics", "/healthz", "/readyz",
                                                         "/debug/keys", "/status"};

/// `doc` as JSON text. Strings in it may hold request bytes (a `top` value
/// quoted in an error, cut after 77 bytes, perhaps inside a character):
/// bytes that are not UTF-8 become U+FFFD instead of making dump() throw.
std::string json_text(const nlohmann::json& doc) {
    return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string server::debug_keys_json(std::size_t top) const {
    nlohmann::json limited = nlohmann::json::array();
    const auto refused = gateway_->refused_keys.top_refused(top);
    for (const auto& e : refused.keys) {
        limited.push_back({{"key_type", type_of(e.key)}, {"key", e.key}, {"refused", e.refused}});
    }
    nlohmann::json in_flight = nlohmann::json::array();
    auto rt = gateway_->current();
    for (const auto& [key, count] : rt->top_in_flight(top)) {
        in_flight.push_back(
            {{"key_type", type_of(key)}, {"key", admin::display_key(key)}, {"in_flight", count}});
    }
    // Read from the slots themselves, not from gauge_values: those are
    // doubles for Prometheus and would print as 12.0 here.
    const auto slots = rt->slots_held();
    nlohmann::json out{
        // The span the counts actually cover (one to two windows), in ms
        // precision: `refused / window_seconds` is then a key's true rate.
        {"window_seconds",
         static_cast<double>(
             std::chrono::duration_cast<std::chrono::milliseconds>(refused.span).count()) /
             1000.0},
        {"limited", std::move(limited)},
        {"in_flight", std::move(in_flight)},
        {"slots",
         {{"in_flight", slots.in_flight},
          {"capacity", slots.capacity},
          {"active_keys", slots.active_keys}}},
        {"requests",
         {{"allowed", gateway_->metrics.requests(admin::decision_kind::allowed)},
          {"limited", gateway_->metrics.requests(admin::decision_kind::limited)},
          {"rejected", gateway_->metrics.requests(admin::decision_kind::rejected)}}},
        {"draining", gateway_->draining()},
    };
    return json_text(out);
}

admin::response server::handle_admin(const admin::request& req) {
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    if (std::find(admin_paths.begin(), admin_paths.end(), path) == admin_paths.end()) {
        return admin::text_response(req, http::status::not_found, "not found\n");
    }
    // Every admin path only reads. A 200 to a POST or DELETE would tell
    // the client that something was done.
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
        auto res =
            admin::text_response(req, http::status::method_not_allowed, "method not allowed\n");
        res.set(http::field::allow, "GET, HEAD");
        return res;
    }
    if (path == "/debug/keys") {
        auto top = query_top(target);
        if (!top) {
            return admin::text_response(req, http::status::bad_request,
                                        json_text(nlohmann::json{{"error", top.error()}}),
                                        "application/json");
        }
        return admin::text_response(req, http::status::ok, debug_keys_json(*top),
                                    "application/json");
    }
    if (path == "/status") {
        return admin::text_response(req, http::status::ok, std::string(admin::status_page_html()),
                                    "text/html; charset=utf-8");
    }
    if (path == "/metrics") {
        return admin::text_response(req, http::status::ok,
                                    gateway_->metrics.serialize(gateway_->gauges()),
                                    "text/plain; version=0.0.4; charset=utf-8");
    }
    if (path == "/healthz") {
        return admin::text_response(req, http::status::ok, "ok\n");
    }
    if (path == "/readyz") {
        if (gateway_->draining()) {
            return admin::text_response(req, http::status::service_unavailable, "draining\n");
        }
        return admin::text_response(req, http::status::ok, "ready\n");
    }
    return admin::text_response(req, http::status::not_found, "not found\n");
}

}  // namespace tollgate::server
