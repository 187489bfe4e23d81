#pragma once
/// @file loader.hpp
/// Builds a tollgate::config from YAML text and the environment, with errors
/// precise enough that a typo is caught before it takes production down.
///
/// Rules (DESIGN.md section 6):
/// * Every key of section 6 is typed and validated (forms in values.hpp).
///   Unknown keys are errors at every level, including inside `routes[]` and
///   `rate_limit.overrides[]` items; so are duplicate keys, a mapping or list
///   where a value belongs, more than one YAML document, and cross-field
///   mistakes (duplicate route names, `burst` with a window algorithm, ...).
/// * An empty file (or one holding only comments or `null`) is an error: it is
///   far more often a truncated write or a template that rendered empty; `{}`
///   takes every default. A file over 16 MiB is refused (reading stops
///   there). A quoted value must close on its line (yaml-cpp would let a
///   missing quote take in the keys after it). A section with no value
///   (`keying:` with its children commented out) means its defaults, and so
///   does a list whose default is empty (`routes:`,
///   `rate_limit.overrides:`, `keying.trusted_proxies:`). Any other key with
///   no value (`limit:`, `trusted_org_sources:`) is an error, since nothing
///   says whether "none" or "the default" was meant.
/// * Errors are collected, not just the first: config_error::what() holds one
///   error per line (at most 50), file errors in line order, then environment
///   errors, then flag errors. A file error reads `file:line: key.path:
///   message` (line 1-based; list items as `routes[0].name`, 0-based), an
///   environment error `VARIABLE: message`, a flag error `--flag: message`.
///   Checks on the merged result name whichever layer set the key last. Port
///   clashes between listen, admin.listen and tls.listen are checked only
///   when nothing else failed; the TLS pairing (tls.listen needs tls.cert and
///   tls.key, which are errors without it) unless a tls key itself failed.
/// * File paths (tls.cert, tls.key, upstream.ca_file) are kept as written and
///   must name readable files when the config is loaded or reloaded. A
///   relative path is relative to the process's working directory, not to the
///   config file (no other key names a file, so there is no other convention
///   to follow); the empty string means "not set".
/// * Environment overrides the file (table in DESIGN.md section 6). A set but
///   empty variable is an error: `RATE_LIMIT=` is far more often a broken
///   deployment template than a wish for the default, so unset it instead.
///
/// Thread-safety: all functions are reentrant; the env_lookup is called on the
/// caller's thread only.

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/config/config.hpp"

namespace tollgate {

/// A configuration that cannot be used; what() is one or more lines, each a
/// complete, self-locating message.
struct config_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Looks up an environment variable; nullopt when unset.
using env_lookup = std::function<std::optional<std::string>(std::string_view)>;

/// The process environment (getenv).
env_lookup process_env();

/// The settings the environment sets, as "rate_limit.limit (RATE_LIMIT)":
/// they override the file, also on reload, so a reload says which file keys
/// it cannot change.
std::vector<std::string> environment_settings(const env_lookup& env);

/// The names of every variable in the process environment.
std::vector<std::string> process_env_names();

/// One "did you mean" warning line per name in `names` that starts with
/// TOLLGATE_, is none of the variables tollgate reads, and is spelled close
/// to one (a typo like TOLLGATE_LSTEN, or TOLLGATE_RATE_LIMIT for
/// RATE_LIMIT); sorted, each name once. Other TOLLGATE_ names belong to
/// other tools (build and test scripts use the prefix too). Names starting
/// with RATE are checked against RATE_LIMIT and RATE_LIMIT_WINDOW alone.
std::vector<std::string> unknown_env_warnings(const std::vector<std::string>& names);

/// An empty environment, for tests and for `--check-config` of a file alone.
env_lookup no_env();

/// Parses YAML text; `file_name` is used in messages and stored in
/// config::source. Applies `env` on top. Throws config_error.
config parse_config(std::string_view yaml_text, std::string_view file_name, const env_lookup& env);

/// Reads and parses a file. An unreadable file throws config_error
/// `path: cannot read: <strerror>`.
config load_config_file(const std::string& path, const env_lookup& env);

/// Built-in defaults with `env` applied, for running without a file.
config load_defaults(const env_lookup& env);

/// Settings that are valid but do nothing, or less than they say, in this
/// combination: one line each, `warning: <where>: key: ...`. Shown at
/// startup, in --check-config and on reload; they do not stop either.
/// Reads one file: a TLS listener's certificate outside its validity
/// period, which every client refuses, is warned about too.
std::vector<std::string> config_warnings(const config& cfg);

/// `message` about a key (it starts with the key path: `upstream.servers[1]:
/// cannot resolve host`, `tls.cert /etc/x.pem: ...`) prefixed with where
/// that key, or the list or section holding it, was set (`conf/x.yaml:5: `,
/// `TOLLGATE_UPSTREAM: `); unchanged when it was a built-in default.
std::string located(const config& cfg, std::string_view message);

/// The effective configuration as YAML that parse_config accepts back, every
/// key present. Secrets are replaced by `<redacted>` (keying.token_secret when
/// set, the password in store.redis.url); an empty secret shows as "".
std::string render_config(const config& cfg);

/// Settings that both an environment variable and a command-line flag can set.
enum class setting {
    rate_limit,         ///< RATE_LIMIT, --rate-limit
    rate_limit_window,  ///< RATE_LIMIT_WINDOW, --rate-limit-window
    listen,             ///< TOLLGATE_LISTEN, --listen
    admin_listen,       ///< TOLLGATE_ADMIN_LISTEN, --admin-listen
    upstream,           ///< TOLLGATE_UPSTREAM, --upstream (comma-separated)
    threads,            ///< TOLLGATE_THREADS, --threads
    concurrency,        ///< TOLLGATE_CONCURRENCY, --concurrency
    redis_url,          ///< TOLLGATE_REDIS_URL, --redis-url (also sets store.type: redis)
    token_secret,       ///< TOLLGATE_TOKEN_SECRET (no flag: argv is visible in ps)
    log_level,          ///< TOLLGATE_LOG_LEVEL, --log-level
    tls_listen,         ///< TOLLGATE_TLS_LISTEN, --tls-listen
    tls_cert,           ///< TOLLGATE_TLS_CERT, --tls-cert
    tls_key,            ///< TOLLGATE_TLS_KEY, --tls-key
    upstream_ca_file,   ///< TOLLGATE_UPSTREAM_CA_FILE, --upstream-ca-file
};

/// Parses `value` for `which` and stores it in `cfg` (validated exactly as the
/// YAML key would be). Returns the error message, without a prefix, or nullopt.
std::optional<std::string> apply_setting(config& cfg, setting which, std::string_view value);

/// A value from outside the file (so far: a command-line flag) for one setting.
struct setting_override {
    std::string source;  ///< how the operator wrote it, e.g. "--threads"; prefixes errors
    setting which;
    std::string value;
};

/// What a reload keeps whatever the new file says: the addresses tollgate
/// listens on (`listen` and `tls.listen` change only on restart), as bound.
struct running_listeners {
    listen_address listen;
    std::optional<listen_address> tls_listen;
};

/// The whole layering: `path` (nullopt = built-in defaults), then `env`, then
/// `overrides` in order, then checks that need the merged result (listener
/// ports, TLS pairing, upstreams that are tollgate itself). Errors from every
/// layer are collected. Throws config_error. parse_config, load_config_file
/// and load_defaults are this with fewer layers. For a reload, `running`
/// adds the listeners that keep running to the loop check: a reload must not
/// point an upstream at them even when the file moves `listen` elsewhere.
config load_config(const std::optional<std::string>& path, const env_lookup& env,
                   const std::vector<setting_override>& overrides = {},
                   const running_listeners* running = nullptr);

}  // namespace tollgate
