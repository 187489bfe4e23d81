// tollgate: rate-limiting HTTP reverse proxy. Everything lives in the
// library; main parses the command line, loads the config, and turns
// signals into reload and drain.

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tollgate/config/cli.hpp"
#include "tollgate/config/loader.hpp"
#include "tollgate/log.hpp"
#include "tollgate/net.hpp"
#include "tollgate/server/gateway.hpp"
#include "tollgate/server/server.hpp"
#include "tollgate/server/service_notify.hpp"

using namespace tollgate;

namespace {

void log_warnings(const std::vector<std::string>& warnings) {
    for (const auto& warning : warnings) {
        log_line(log_level::warn, warning);
    }
}

/// Holds `signals` pending in the calling thread while it lives (threads
/// started meanwhile inherit the mask); the old mask is back after.
class signals_held {
public:
    explicit signals_held(std::initializer_list<int> signals) {
        sigset_t set;
        sigemptyset(&set);
        for (const int signo : signals) {
            sigaddset(&set, signo);
        }
        pthread_sigmask(SIG_BLOCK, &set, &old_);
    }
    ~signals_held() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
    signals_held(const signals_held&) = delete;
    signals_held& operator=(const signals_held&) = delete;

private:
    sigset_t old_;
};

}  // namespace

int main(int argc, char** argv) {
    // A reader of stdout or stderr that goes away (a log shipper, a pipe
    // into `logger`) must not kill the proxy: writes fail with EPIPE instead.
    std::signal(SIGPIPE, SIG_IGN);
    // Until the signal_set below handles it, SIGHUP waits: a reload sent
    // right after start (`systemctl start` then `reload`) would otherwise
    // end the process by its default action, without a word. (SIGINT and
    // SIGTERM may end a start that is not done yet.) The threads the server
    // starts keep it blocked, so this thread, which waits for it, takes it.
    std::optional<signals_held> held(std::in_place, std::initializer_list<int>{SIGHUP});
    cli_options options;
    // Known before parsing, so that a command-line error in check mode
    // exits 1 like every other check failure (DESIGN.md section 6).
    options.check_config = wants_check_config(argc, argv);
    std::shared_ptr<const config> cfg;
    try {
        options = parse_cli(argc, argv);
        if (options.help) {
            std::cout << cli_usage();
            return 0;
        }
        if (options.version) {
            std::cout << "tollgate " << TOLLGATE_VERSION << "\n";
            return 0;
        }
        // Before loading, so the warnings show when the config fails too.
        log_warnings(unknown_env_warnings(process_env_names()));
        cfg = std::make_shared<const config>(load_effective_config(options, process_env()));
        if (options.check_config) {
            // Whatever log.level says: checking is asking for them.
            log_warnings(config_warnings(*cfg));
            // What startup would refuse beyond the config itself: certificate
            // and key files, upstream names that do not resolve.
            const auto problems = server::startup_problems(*cfg);
            for (const auto& problem : problems) {
                log_line(log_level::error, problem);
            }
            if (!problems.empty()) {
                return 1;
            }
            std::cout << (cfg->source.empty() ? std::string("defaults") : cfg->source)
                      << ": configuration is valid\n";
            return 0;
        }
        if (options.print_config) {
            std::cout << render_config(*cfg);
            return 0;
        }
    } catch (const std::exception& e) {
        log_line(log_level::error, e.what());
        return options.check_config ? 1 : 2;
    }
    set_log_level(cfg->log.level);
    // After the level is set, as on reload.
    log_warnings(config_warnings(*cfg));

    // The signal that cut a drain short (0: none did).
    int ended_by = 0;
    try {
        asio::io_context control;
        asio::signal_set signals(control, SIGINT, SIGTERM, SIGHUP);
        asio::steady_timer flush_timer(control);
        server::server srv(cfg);
        srv.start();
        held.reset();  // a SIGHUP sent meanwhile is handled now
        // Not filtered by log.level: with port 0 this line is the only
        // place that names the ports (see log.hpp). Composed first and
        // written at once: the workers may be logging already.
        std::ostringstream started;
        started << "tollgate " << TOLLGATE_VERSION << " listening on " << srv.proxy_endpoint()
                << ", admin on " << srv.admin_endpoint() << ", upstream "
                << cfg->upstream.servers.front().url;
        if (cfg->tls.listen) {
            started << ", tls on " << srv.tls_endpoint();
        }
        started << "\n";
        std::cerr << started.str();
        // systemd's Type=notify: started means listening (and a reload
        // before it waits).
        const char* notify_socket = std::getenv("NOTIFY_SOCKET");
        const std::string notify_to = notify_socket != nullptr ? notify_socket : "";
        server::notify_service_manager(notify_to, "READY=1");
        // What a reload keeps: its upstreams must not point back at these.
        const auto bound = [](const tcp::endpoint& e) {
            return listen_address{e.address().to_string(), e.port()};
        };
        running_listeners running{bound(srv.proxy_endpoint()), std::nullopt};
        if (cfg->tls.listen) {
            running.tls_listen = bound(srv.tls_endpoint());
        }

        bool draining = false;
        int drain_signal = 0;  // the signal that started the drain
        std::chrono::steady_clock::time_point drain_started{};
        std::function<void()> wait_signal = [&] {
            signals.async_wait([&](error_code ec, int signo) {
                if (ec) {
                    return;
                }
                if (signo == SIGHUP && draining) {
                    // The config is of no use to a process that is leaving,
                    // and the drain keeps the timeout it started with.
                    log_line(log_level::warn, "reload ignored: draining");
                    wait_signal();
                    return;
                }
                if (signo == SIGHUP) {
                    std::shared_ptr<const config> next;
                    try {
                        next = std::make_shared<const config>(
                            load_effective_config(options, process_env(), &running));
                        const auto pending = srv.reload(next);
                        // The new level applies to the lines about this reload already.
                        set_log_level(next->log.level);
                        log_line(log_level::info, "configuration reloaded");
                        // The file cannot change these: say so, or an edit to
                        // them would seem to be ignored.
                        auto pinned = environment_settings(process_env());
                        for (const auto& [flag, value] : options.overrides) {
                            pinned.push_back(flag);
                        }
                        const auto joined = [](const std::vector<std::string>& keys,
                                               std::string_view separator) {
                            std::string text;
                            for (const auto& key : keys) {
                                text += (text.empty() ? "" : std::string(separator)) + key;
                            }
                            return text;
                        };
                        if (!pinned.empty()) {
                            log_line(log_level::info,
                                     "set by the environment or flags, which the file does not "
                                     "override: " +
                                         joined(pinned, ", "));
                        }
                        log_warnings(config_warnings(*next));
                        if (auto warning = srv.descriptor_limit_warning(*next)) {
                            log_line(log_level::warn, *warning);
                        }
                        if (!pending.empty()) {
                            log_line(log_level::warn,
                                     "warning: changed, but applied only on restart (the running "
                                     "values stay): " +
                                         joined(pending, " "));
                        }
                    } catch (const std::exception& e) {
                        srv.record_reload_failure();
                        // A loading error says where already; one found
                        // after (an upstream that does not resolve) gets it.
                        log_line(log_level::error,
                                 "reload failed, keeping the running configuration: " +
                                     (next ? located(*next, e.what()) : std::string(e.what())));
                    }
                    wait_signal();
                    return;
                }
                if (draining && signo != drain_signal &&
                    std::chrono::steady_clock::now() - drain_started < std::chrono::seconds(1)) {
                    // Ctrl-C under a process manager reaches tollgate twice:
                    // SIGINT from the terminal, SIGTERM from the manager.
                    // One request to stop, not two.
                    log_line(log_level::info, "signal " + std::to_string(signo) +
                                                  " right after signal " +
                                                  std::to_string(drain_signal) +
                                                  ": taken as the same request to drain");
                    wait_signal();
                    return;
                }
                if (draining) {
                    // Ctrl-C pressed again, or a supervisor that asks twice:
                    // stop now instead of waiting out the drain.
                    const std::size_t open = srv.open_connections();
                    log_line(log_level::warn,
                             "second signal (" + std::to_string(signo) +
                                 ") while draining: stopping now, cutting " + std::to_string(open) +
                                 (open == 1 ? " open connection" : " open connections"));
                    srv.stop_now();
                    ended_by = signo;
                    flush_timer.cancel();
                    control.stop();
                    return;
                }
                draining = true;
                drain_signal = signo;
                drain_started = std::chrono::steady_clock::now();
                // Readiness flips before the line is printed, so whoever
                // reads the log sees /readyz already answering 503.
                srv.gw().start_draining();
                log_line(log_level::info, "draining (signal " + std::to_string(signo) + ")");
                server::notify_service_manager(notify_to, "STOPPING=1");
                srv.async_drain_and_stop(control.get_executor(), [&] {
                    flush_timer.cancel();
                    control.stop();
                });
                wait_signal();
            });
        };
        wait_signal();
        // The access log is written with buffered stdio from every worker;
        // flush it once a second so lines reach `docker logs` promptly. A
        // stdout nobody reads any more loses the lines, said once.
        bool stdout_failed = false;
        std::function<void()> flush_loop = [&] {
            flush_timer.expires_after(std::chrono::seconds(1));
            flush_timer.async_wait([&](error_code ec) {
                // A worker's own write may have met the error first,
                // leaving this flush nothing to fail on: ferror() says so.
                const bool flush_failed = std::fflush(stdout) != 0;
                const int flush_errno = errno;
                if ((flush_failed || std::ferror(stdout)) && !stdout_failed) {
                    stdout_failed = true;
                    log_line(log_level::error,
                             std::string("access log: cannot write to stdout (") +
                                 (flush_failed ? std::strerror(flush_errno) : "a write failed") +
                                 "); its lines are lost");
                }
                if (!ec) {
                    flush_loop();
                }
            });
        };
        flush_loop();
        control.run();
        std::fflush(stdout);
        log_line(log_level::info, "stopped");
    } catch (const std::exception& e) {
        log_line(log_level::error, located(*cfg, e.what()));
        return 1;
    }
    if (ended_by != 0) {
        // Cut short, the process ends as the signal's default action would
        // have ended it: systemd counts that as a clean stop (an exit status
        // of 143 would be a failure to it, and Restart=on-failure would
        // restart), shells and docker show 128 + the signal (130, 143), and
        // a shell script knows that its child was interrupted.
        std::fflush(stdout);
        struct sigaction default_action {};
        default_action.sa_handler = SIG_DFL;
        sigemptyset(&default_action.sa_mask);
        ::sigaction(ended_by, &default_action, nullptr);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, ended_by);
        pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
        ::raise(ended_by);
        // Reached where the kernel ignores the default action: as PID 1 of a
        // container (no init), a signal without a handler does nothing.
        return 128 + ended_by;
    }
    return 0;
}
