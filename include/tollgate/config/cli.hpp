#pragma once
/// @file cli.hpp
/// tollgate's command line and the full layering of configuration sources:
/// built-in defaults < file (`--config` or TOLLGATE_CONFIG) < environment <
/// flags (DESIGN.md section 6).
///
/// Flags take `--flag value` or `--flag=value`; a repeated override flag wins
/// over earlier ones. There is deliberately no flag for the token secret: the
/// command line is visible to every local user through ps.

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/config/loader.hpp"

namespace tollgate {

/// What the command line asked for. Override values are not validated by
/// parse_cli but by load_effective_config, which names the flag on error.
struct cli_options {
    std::optional<std::string> config_path;
    bool check_config = false;  ///< validate, print "ok" or the errors, exit 0/1
    bool print_config = false;  ///< print render_config() of the effective config
    bool help = false;
    bool version = false;
    /// (flag as written without its value, e.g. "--threads", value), in command-line order.
    std::vector<std::pair<std::string, std::string>> overrides;
};

/// Parses argv (argv[0] is the program name). Throws config_error on an
/// unknown flag, a missing value, a value given to a switch, a repeated
/// `--config` or a positional argument.
cli_options parse_cli(int argc, const char* const* argv);

/// True when argv asks for `--check-config` (also as `--check-config=x`,
/// which parse_cli refuses), looked up before parsing: check mode exits 1
/// for every failure, a command-line error included, and parse_cli throws
/// before it could say which mode was meant.
bool wants_check_config(int argc, const char* const* argv);

/// The `--help` text.
std::string cli_usage();

/// Defaults, then the file named by `--config` or else TOLLGATE_CONFIG (none:
/// defaults only), then `env`, then the override flags. Throws config_error
/// with every problem found, each naming its file and line, variable or flag
/// (`--threads: must be at most 1024, got "5000"`).
/// `running`: for a reload, the listeners that keep running (load_config).
config load_effective_config(const cli_options& options, const env_lookup& env,
                             const running_listeners* running = nullptr);

}  // namespace tollgate
