// slowloris: holds many slow clients against a running tollgate and measures
// what that costs it, while timing ordinary requests next to them.
//
//   slowloris --target 127.0.0.1:8080 --pid <tollgate pid> [options]
//
// Modes (--mode):
//   headers    (default) each connection sends the start of a request head,
//              then one more header line every --trickle-ms: tollgate must
//              answer 408 and close at client.header_timeout after the
//              first byte, however the bytes trickle.
//   idle       each connection connects and sends nothing.
//   chunk-ext  each connection sends a valid chunked POST head, then a chunk
//              header whose extension never ends (--trickle-bytes per
//              trickle): measures whether tollgate bounds what it buffers.
//
// Meanwhile --probes threads send `GET --probe-path` on keep-alive
// connections (every 10th on a fresh one) at --probe-rps in total and
// record latencies. tollgate's RSS (/proc/<pid>/status) is sampled every
// 100 ms. Output: a human summary and, with --json, one JSON object.
//
// Built and run by bench/slowloris.sh; needs `ulimit -n` above the number of
// connections (and tollgate's client.max_connections above it too).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;
using boost::system::error_code;

namespace {

struct options {
    std::string host = "127.0.0.1";
    unsigned short port = 8080;
    int pid = 0;
    std::string mode = "headers";
    std::size_t connections = 10000;
    std::size_t open_rate = 5000;  // connections per second
    unsigned trickle_ms = 1000;
    std::size_t trickle_bytes = 1;  // chunk-ext mode
    unsigned header_timeout_ms = 10000;
    unsigned grace_ms = 5000;
    unsigned probes = 4;
    unsigned probe_rps = 200;
    std::string probe_path = "/";
    unsigned settle_ms = 3000;
    bool json = false;
};

long rss_kib(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::stol(line.substr(6));
        }
    }
    return -1;
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    const auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

// One slow client.
struct slow_conn : std::enable_shared_from_this<slow_conn> {
    slow_conn(asio::io_context& ioc, const options& o) : socket(ioc), timer(ioc), opt(o) {}
    tcp::socket socket;
    asio::steady_timer timer;
    const options& opt;
    std::string out;
    std::array<char, 512> in{};
    std::string received;
    clock_type::time_point connected_at{};
    clock_type::time_point first_byte{};  ///< unset in idle mode
    clock_type::time_point closed_at{};
    bool connected = false;
    bool closed = false;
    bool reset = false;
    bool gave_up = false;  ///< still open when the run ended
    unsigned lines = 0;

    void start(const tcp::endpoint& ep) {
        socket.async_connect(ep, [self = shared_from_this()](error_code ec) {
            if (ec) {
                self->closed = true;
                self->reset = true;
                self->closed_at = clock_type::now();
                return;
            }
            self->connected = true;
            self->connected_at = clock_type::now();
            self->socket.set_option(tcp::no_delay(true), ec);
            self->read();
            if (self->opt.mode == "idle") {
                return;
            }
            if (self->opt.mode == "chunk-ext") {
                self->send(
                    "POST /slow HTTP/1.1\r\nHost: slowloris\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "1;a=");
            } else {
                self->send("GET /slow HTTP/1.1\r\nHost: slowloris\r\n");
            }
            self->first_byte = clock_type::now();
            self->arm();
        });
    }

    void send(std::string bytes) {
        auto data = std::make_shared<std::string>(std::move(bytes));
        asio::async_write(socket, asio::buffer(*data),
                          [data, self = shared_from_this()](error_code, std::size_t) {});
    }

    void arm() {
        timer.expires_after(ms(opt.trickle_ms));
        timer.async_wait([self = shared_from_this()](error_code ec) {
            if (ec || self->closed) {
                return;
            }
            if (self->opt.mode == "chunk-ext") {
                self->send(std::string(self->opt.trickle_bytes, 'x'));
            } else {
                self->send("X-Slow-" + std::to_string(self->lines++) + ": 1\r\n");
            }
            self->arm();
        });
    }

    void read() {
        socket.async_read_some(
            asio::buffer(in), [self = shared_from_this()](error_code ec, std::size_t n) {
                self->received.append(self->in.data(), std::min<std::size_t>(n, 64));
                if (!ec) {
                    self->read();
                    return;
                }
                self->closed = true;
                self->reset = ec != asio::error::eof;
                self->closed_at = clock_type::now();
                self->timer.cancel();
                error_code ignored;
                self->socket.close(ignored);
            });
    }

    bool got_408() const { return received.rfind("HTTP/1.1 408", 0) == 0; }
    unsigned status() const {
        if (received.size() >= 12 && received.rfind("HTTP/1.", 0) == 0) {
            return static_cast<unsigned>(std::atoi(received.substr(9, 3).c_str()));
        }
        return 0;
    }
};

// Ordinary requests next to the slow ones.
struct probe_stats {
    std::mutex mutex;
    std::vector<double> latencies_ms;
    std::size_t errors = 0;
    std::size_t non_200 = 0;
};

void probe_loop(const options& opt, std::atomic<bool>& stop, probe_stats& stats, unsigned index) {
    asio::io_context ioc;
    const tcp::endpoint ep(asio::ip::make_address(opt.host), opt.port);
    std::optional<tcp::socket> sock;
    const auto interval = std::chrono::microseconds(1000000ull * opt.probes / opt.probe_rps);
    auto next =
        clock_type::now() + std::chrono::microseconds(interval.count() * index / opt.probes);
    const std::string request = "GET " + opt.probe_path +
                                " HTTP/1.1\r\nHost: probe\r\nX-Org-Id: probe-" +
                                std::to_string(index) + "\r\n\r\n";
    std::size_t count = 0;
    while (!stop) {
        std::this_thread::sleep_until(next);
        next += interval;
        error_code ec;
        const auto t0 = clock_type::now();
        if (!sock || count++ % 10 == 0) {
            sock.emplace(ioc);
            sock->connect(ep, ec);
        }
        std::string response;
        if (!ec) {
            asio::write(*sock, asio::buffer(request), ec);
        }
        // Read one response: head, then Content-Length bytes.
        std::array<char, 4096> buf{};
        std::size_t need = std::string::npos;
        while (!ec) {
            const std::size_t n = sock->read_some(asio::buffer(buf), ec);
            response.append(buf.data(), n);
            const auto end = response.find("\r\n\r\n");
            if (end != std::string::npos && need == std::string::npos) {
                const auto cl = response.find("Content-Length: ");
                need =
                    end + 4 + (cl == std::string::npos ? 0 : std::stoul(response.substr(cl + 16)));
            }
            if (need != std::string::npos && response.size() >= need) {
                break;
            }
        }
        const double elapsed =
            std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
        std::lock_guard lock(stats.mutex);
        if (ec) {
            stats.errors++;
            sock.reset();
            continue;
        }
        if (response.rfind("HTTP/1.1 200", 0) != 0) {
            stats.non_200++;
        }
        if (response.find("Connection: close") != std::string::npos) {
            sock.reset();
        }
        stats.latencies_ms.push_back(elapsed);
    }
}

bool parse_args(int argc, char** argv, options& o) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                throw std::runtime_error(a + " needs a value");
            }
            return argv[++i];
        };
        if (a == "--target") {
            const std::string t = value();
            const auto colon = t.rfind(':');
            o.host = t.substr(0, colon);
            o.port = static_cast<unsigned short>(std::stoi(t.substr(colon + 1)));
        } else if (a == "--pid") {
            o.pid = std::stoi(value());
        } else if (a == "--mode") {
            o.mode = value();
        } else if (a == "--connections") {
            o.connections = std::stoul(value());
        } else if (a == "--open-rate") {
            o.open_rate = std::stoul(value());
        } else if (a == "--trickle-ms") {
            o.trickle_ms = static_cast<unsigned>(std::stoul(value()));
        } else if (a == "--trickle-bytes") {
            o.trickle_bytes = std::stoul(value());
        } else if (a == "--header-timeout-ms") {
            o.header_timeout_ms = static_cast<unsigned>(std::stoul(value()));
        } else if (a == "--grace-ms") {
            o.grace_ms = static_cast<unsigned>(std::stoul(value()));
        } else if (a == "--probes") {
            o.probes = static_cast<unsigned>(std::stoul(value()));
        } else if (a == "--probe-rps") {
            o.probe_rps = static_cast<unsigned>(std::stoul(value()));
        } else if (a == "--probe-path") {
            o.probe_path = value();
        } else if (a == "--settle-ms") {
            o.settle_ms = static_cast<unsigned>(std::stoul(value()));
        } else if (a == "--json") {
            o.json = true;
        } else {
            std::cerr << "unknown option " << a << "\n";
            return false;
        }
    }
    if (o.pid == 0) {
        std::cerr << "--pid <tollgate pid> is required\n";
        return false;
    }
    if (o.mode != "headers" && o.mode != "idle" && o.mode != "chunk-ext") {
        std::cerr << "--mode headers|idle|chunk-ext\n";
        return false;
    }
    return o.probes > 0 && o.probe_rps > 0;
}

}  // namespace

int main(int argc, char** argv) {
    options opt;
    try {
        if (!parse_args(argc, argv, opt)) {
            return 2;
        }
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 2;
    }
    const long baseline = rss_kib(opt.pid);
    if (baseline < 0) {
        std::cerr << "no process " << opt.pid << "\n";
        return 2;
    }

    // RSS sampler.
    std::atomic<bool> stop_sampler{false};
    std::atomic<long> peak{baseline};
    std::thread sampler([&] {
        while (!stop_sampler) {
            const long r = rss_kib(opt.pid);
            long p = peak.load();
            while (r > p && !peak.compare_exchange_weak(p, r)) {
            }
            std::this_thread::sleep_for(ms(100));
        }
    });

    // Probes: a first quiet second for the baseline latency, then under load.
    probe_stats quiet;
    {
        std::atomic<bool> stop{false};
        std::vector<std::thread> threads;
        for (unsigned i = 0; i < opt.probes; ++i) {
            threads.emplace_back([&, i] { probe_loop(opt, stop, quiet, i); });
        }
        std::this_thread::sleep_for(ms(1000));
        stop = true;
        for (auto& t : threads) {
            t.join();
        }
    }
    probe_stats loaded;
    std::atomic<bool> stop_probes{false};
    std::vector<std::thread> probes;
    for (unsigned i = 0; i < opt.probes; ++i) {
        probes.emplace_back([&, i] { probe_loop(opt, stop_probes, loaded, i); });
    }

    // The slow connections, opened at --open-rate.
    asio::io_context ioc;
    const tcp::endpoint ep(asio::ip::make_address(opt.host), opt.port);
    std::vector<std::shared_ptr<slow_conn>> conns;
    conns.reserve(opt.connections);
    const auto t_start = clock_type::now();
    asio::steady_timer opener(ioc);
    std::size_t opened = 0;
    std::function<void()> open_batch = [&] {
        const std::size_t batch = std::max<std::size_t>(1, opt.open_rate / 100);
        for (std::size_t i = 0; i < batch && opened < opt.connections; ++i, ++opened) {
            auto c = std::make_shared<slow_conn>(ioc, opt);
            conns.push_back(c);
            c->start(ep);
        }
        if (opened < opt.connections) {
            opener.expires_after(ms(10));
            opener.async_wait([&](error_code ec) {
                if (!ec) {
                    open_batch();
                }
            });
        }
    };
    open_batch();

    long rss_all_open = -1;
    clock_type::time_point t_all_open{};
    std::size_t max_open = 0;
    asio::steady_timer watcher(ioc);
    const auto give_up = ms(opt.header_timeout_ms + opt.grace_ms);
    std::function<void()> watch = [&] {
        std::size_t open = 0;
        std::size_t done = 0;
        for (const auto& c : conns) {
            open += c->connected && !c->closed;
            done += c->closed;
        }
        if (open > max_open) {
            max_open = open;
            rss_all_open = rss_kib(opt.pid);
            t_all_open = clock_type::now();
        }
        const bool finished = opened == opt.connections && done == opt.connections;
        if (finished ||
            clock_type::now() - t_start > give_up + ms(opt.connections * 1000 / opt.open_rate)) {
            for (auto& c : conns) {
                c->gave_up = c->connected && !c->closed;
                c->timer.cancel();
                error_code ignored;
                c->socket.close(ignored);
            }
            opener.cancel();
            return;
        }
        watcher.expires_after(ms(50));
        watcher.async_wait([&](error_code ec) {
            if (!ec) {
                watch();
            }
        });
    };
    watch();
    ioc.run();
    stop_probes = true;
    for (auto& t : probes) {
        t.join();
    }

    // Back to idle: how much does tollgate give back?
    std::this_thread::sleep_for(ms(opt.settle_ms));
    const long after = rss_kib(opt.pid);
    stop_sampler = true;
    sampler.join();

    // Per-connection outcomes.
    std::size_t connected = 0, got408 = 0, other_status = 0, silent_close = 0, resets = 0,
                never_closed = 0;
    std::vector<double> close_after_ms;
    for (const auto& c : conns) {
        if (!c->connected) {
            continue;
        }
        connected++;
        if (c->gave_up) {
            never_closed++;
            continue;
        }
        if (c->got_408()) {
            got408++;
        } else if (c->status() != 0) {
            other_status++;
        } else if (c->reset) {
            resets++;
        } else {
            silent_close++;
        }
        const auto from =
            c->first_byte != clock_type::time_point{} ? c->first_byte : c->connected_at;
        close_after_ms.push_back(
            std::chrono::duration<double, std::milli>(c->closed_at - from).count());
    }
    auto mib = [](long kib) { return static_cast<double>(kib) / 1024.0; };
    const double per_conn =
        max_open ? static_cast<double>(rss_all_open - baseline) * 1024.0 / max_open : 0;

    std::printf("mode %s, %zu connections (%zu connected, %zu open at once)\n", opt.mode.c_str(),
                opt.connections, connected, max_open);
    std::printf(
        "tollgate RSS: baseline %.1f MiB, all open %.1f MiB (%.0f B per connection), "
        "peak %.1f MiB, after %.1f MiB\n",
        mib(baseline), mib(rss_all_open), per_conn, mib(peak.load()), mib(after));
    std::printf(
        "slow connections: %zu got a status (408: %zu, other: %zu), %zu closed silently, "
        "%zu reset, %zu still open at the end\n",
        got408 + other_status, got408, other_status, silent_close, resets, never_closed);
    std::printf(
        "closed after the first byte (idle: after connecting), ms: min %.0f p50 %.0f p99 %.0f max "
        "%.0f\n",
        percentile(close_after_ms, 0), percentile(close_after_ms, 50),
        percentile(close_after_ms, 99), percentile(close_after_ms, 100));
    for (auto* s : {&quiet, &loaded}) {
        std::printf(
            "probes %s: %zu requests, %zu errors, %zu non-200, latency ms p50 %.2f p99 "
            "%.2f max %.2f\n",
            s == &quiet ? "before" : "during", s->latencies_ms.size(), s->errors, s->non_200,
            percentile(s->latencies_ms, 50), percentile(s->latencies_ms, 99),
            percentile(s->latencies_ms, 100));
    }
    if (opt.json) {
        std::printf(
            "{\"mode\":\"%s\",\"connections\":%zu,\"connected\":%zu,\"max_open\":%zu,"
            "\"rss_baseline_kib\":%ld,\"rss_all_open_kib\":%ld,\"rss_peak_kib\":%ld,"
            "\"rss_after_kib\":%ld,\"bytes_per_connection\":%.0f,\"got_408\":%zu,"
            "\"other_status\":%zu,\"silent_close\":%zu,\"reset\":%zu,\"never_closed\":%zu,"
            "\"close_ms_min\":%.0f,\"close_ms_p50\":%.0f,\"close_ms_max\":%.0f,"
            "\"probe_requests\":%zu,\"probe_errors\":%zu,\"probe_non_200\":%zu,"
            "\"probe_p50_ms\":%.2f,\"probe_p99_ms\":%.2f,\"probe_max_ms\":%.2f}\n",
            opt.mode.c_str(), opt.connections, connected, max_open, baseline, rss_all_open,
            peak.load(), after, per_conn, got408, other_status, silent_close, resets, never_closed,
            percentile(close_after_ms, 0), percentile(close_after_ms, 50),
            percentile(close_after_ms, 100), loaded.latencies_ms.size(), loaded.errors,
            loaded.non_200, percentile(loaded.latencies_ms, 50),
            percentile(loaded.latencies_ms, 99), percentile(loaded.latencies_ms, 100));
    }
    return 0;
}
