// libFuzzer target: the config loader on arbitrary YAML.
//
// Oracles: parse_config either returns a config or throws config_error (any
// other exception escaping is a bug: it would crash `--check-config` or a
// SIGHUP reload); every error line names the file; a config it accepts
// renders to YAML that it accepts again, unchanged. Inputs on which yaml-cpp
// 0.7's YAML::LoadAll never returns (corpus/config/regress-yaml-cpp-*) go
// through too: parse_config counts documents with a bounded loop.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tollgate/config/loader.hpp"

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tollgate;
    if (size > 64 * 1024) {
        return 0;  // yaml-cpp recursion on deep nesting is not what this is about
    }
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    tollgate::config cfg;
    try {
        cfg = parse_config(text, "fuzz.yaml", no_env());
    } catch (const config_error& e) {
        const std::string what = e.what();
        check(!what.empty());
        check(what.rfind("fuzz.yaml", 0) == 0);
        return 0;
    }
    const std::string rendered = render_config(cfg);
    // Secrets print as <redacted>, which the loader refuses (it would become
    // the secret): fill in stand-ins, as an operator fills in the real ones.
    std::string filled = rendered;
    for (const auto& [placeholder, stand_in] :
         {std::pair<std::string_view, std::string_view>{"token_secret: \"<redacted>\"",
                                                        "token_secret: \"stand-in\""},
          {":<redacted>@", ":stand-in@"}}) {
        if (const auto at = filled.find(placeholder); at != std::string::npos) {
            filled.replace(at, placeholder.size(), stand_in);
        }
    }
    tollgate::config back;
    try {
        back = parse_config(filled, "fuzz.yaml", no_env());
    } catch (const config_error&) {
        check(false);  // what we print must load
    }
    check(render_config(back) == rendered);
    return 0;
}
