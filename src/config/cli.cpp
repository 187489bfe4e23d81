#include "tollgate/config/cli.hpp"

#include <algorithm>
#include <array>
#include <string_view>
#include <vector>

#include "tollgate/config/values.hpp"

namespace tollgate {
namespace {

struct override_flag {
    std::string_view name;
    setting which;
    std::string_view value_name;
    std::string_view help;
};

constexpr std::array<override_flag, 13> override_flags{{
    {"--listen", setting::listen, "ADDR:PORT", "client listener (TOLLGATE_LISTEN)"},
    {"--admin-listen", setting::admin_listen, "ADDR:PORT",
     "metrics/health listener (TOLLGATE_ADMIN_LISTEN)"},
    {"--tls-listen", setting::tls_listen, "ADDR:PORT",
     "TLS listener, needs --tls-cert/--tls-key (TOLLGATE_TLS_LISTEN)"},
    {"--tls-cert", setting::tls_cert, "FILE", "PEM certificate chain (TOLLGATE_TLS_CERT)"},
    {"--tls-key", setting::tls_key, "FILE", "PEM private key (TOLLGATE_TLS_KEY)"},
    {"--upstream", setting::upstream, "URL[,URL...]",
     "upstream servers, http:// or https:// (TOLLGATE_UPSTREAM)"},
    {"--upstream-ca-file", setting::upstream_ca_file, "FILE",
     "PEM CAs for https:// upstreams (TOLLGATE_UPSTREAM_CA_FILE)"},
    {"--threads", setting::threads, "N", "I/O threads, 0 = one per core (TOLLGATE_THREADS)"},
    {"--rate-limit", setting::rate_limit, "N", "requests per window per key (RATE_LIMIT)"},
    {"--rate-limit-window", setting::rate_limit_window, "DURATION",
     "rate window, e.g. 60s, 1m, 500ms (RATE_LIMIT_WINDOW)"},
    {"--concurrency", setting::concurrency, "N",
     "upstream in-flight capacity, 0 = off (TOLLGATE_CONCURRENCY)"},
    {"--log-level", setting::log_level, "LEVEL", "debug, info, warn or error (TOLLGATE_LOG_LEVEL)"},
    {"--redis-url", setting::redis_url, "URL",
     "redis://host:port, implies store.type redis (TOLLGATE_REDIS_URL)"},
}};

/// `unknown option "--lsten"`, with the flag most like it (see --help).
std::string unknown_option(std::string_view name) {
    std::vector<std::string_view> flags{"--config", "--check-config", "--print-config", "--help",
                                        "--version"};
    for (const auto& f : override_flags) {
        flags.push_back(f.name);
    }
    std::string message = "unknown option \"" + std::string(name) + "\"";
    if (auto best = closest_name(name, flags)) {
        return message + " (did you mean " + std::string(flags[*best]) + "?)";
    }
    return message + " (see --help)";
}

const override_flag* find_override(std::string_view name) {
    for (const auto& f : override_flags) {
        if (f.name == name) {
            return &f;
        }
    }
    return nullptr;
}

}  // namespace

cli_options parse_cli(int argc, const char* const* argv) {
    cli_options out;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        std::string_view name = arg;
        std::optional<std::string_view> inline_value;
        if (arg.starts_with("--")) {
            if (std::size_t eq = arg.find('='); eq != std::string_view::npos) {
                name = arg.substr(0, eq);
                inline_value = arg.substr(eq + 1);
            }
        } else if (arg.starts_with("-") && arg != "-h") {
            throw config_error("unknown option \"" + std::string(arg) + "\" (see --help)");
        } else if (arg != "-h") {
            throw config_error("unexpected argument \"" + std::string(arg) +
                               "\" (options start with --; see --help)");
        }

        bool* toggle = nullptr;
        if (name == "--check-config") {
            toggle = &out.check_config;
        } else if (name == "--print-config") {
            toggle = &out.print_config;
        } else if (name == "--help" || name == "-h") {
            toggle = &out.help;
        } else if (name == "--version") {
            toggle = &out.version;
        }
        if (toggle != nullptr) {
            if (inline_value) {
                throw config_error(std::string(name) + ": takes no value");
            }
            *toggle = true;
            continue;
        }

        bool is_config = name == "--config";
        if (!is_config && find_override(name) == nullptr) {
            throw config_error(unknown_option(name));
        }
        std::string value;
        if (inline_value) {
            value = std::string(*inline_value);
        } else {
            // A following option is almost certainly a forgotten value, not a
            // value that happens to start with "--" (none of ours can).
            if (i + 1 >= argc || std::string_view(argv[i + 1]).starts_with("--")) {
                throw config_error(std::string(name) + ": missing value");
            }
            value = argv[++i];
        }
        if (is_config) {
            if (out.config_path) {
                throw config_error("--config: given twice");
            }
            if (value.empty()) {
                throw config_error("--config: has an empty value");
            }
            out.config_path = value;
        } else {
            out.overrides.emplace_back(std::string(name), std::move(value));
        }
    }
    return out;
}

bool wants_check_config(int argc, const char* const* argv) {
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--check-config" || arg.starts_with("--check-config=")) {
            return true;
        }
    }
    return false;
}

std::string cli_usage() {
    std::string text =
        "usage: tollgate [--config FILE] [options]\n"
        "\n"
        "HTTP reverse proxy that rate-limits per caller.\n"
        "\n"
        "  --config FILE           YAML configuration (default: TOLLGATE_CONFIG, else built-in\n"
        "                          defaults)\n"
        "  --check-config          validate the configuration, print every error, exit 0 or 1\n"
        "  --print-config          print the effective configuration (secrets redacted)\n"
        "  --version               print the version\n"
        "  -h, --help              print this help\n"
        "\n"
        "Overrides (win over the environment, which wins over the file):\n";
    for (const auto& f : override_flags) {
        std::string left = "  " + std::string(f.name) + " " + std::string(f.value_name);
        left.resize(std::max<std::size_t>(left.size() + 1, 30), ' ');
        text += left + std::string(f.help) + "\n";
    }
    text +=
        "\n"
        "Environment: RATE_LIMIT, RATE_LIMIT_WINDOW, TOLLGATE_LISTEN, TOLLGATE_ADMIN_LISTEN,\n"
        "TOLLGATE_TLS_LISTEN, TOLLGATE_TLS_CERT, TOLLGATE_TLS_KEY, TOLLGATE_UPSTREAM,\n"
        "TOLLGATE_UPSTREAM_CA_FILE, TOLLGATE_THREADS, TOLLGATE_CONCURRENCY, TOLLGATE_REDIS_URL,\n"
        "TOLLGATE_TOKEN_SECRET, TOLLGATE_LOG_LEVEL, TOLLGATE_CONFIG. A variable that is set but\n"
        "empty is an error; a near miss of one of these names gets a warning. Relative file\n"
        "paths are relative to the working directory.\n";
    return text;
}

config load_effective_config(const cli_options& options, const env_lookup& env,
                             const running_listeners* running) {
    std::optional<std::string> path = options.config_path;
    if (!path) {
        path = env("TOLLGATE_CONFIG");
        if (path && path->empty()) {
            throw config_error(
                "TOLLGATE_CONFIG: is set but empty (unset it to run on built-in defaults)");
        }
    }
    std::vector<setting_override> overrides;
    for (const auto& [flag, value] : options.overrides) {
        const override_flag* f = find_override(flag);
        if (f == nullptr) {
            throw config_error("unknown option \"" + flag + "\"");
        }
        overrides.push_back(setting_override{flag, f->which, value});
    }
    return load_config(path, env, overrides, running);
}

}  // namespace tollgate
