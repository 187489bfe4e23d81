#pragma once
// What tollgate logs on stderr (std::cerr), for unit and integration tests.

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace tollgate::test {

/// What is written to std::cerr (tollgate's log lines) while it lives.
/// Swapping the stream buffer races the workers' writes: make it before
/// the proxy starts and read it after the proxy has stopped.
class captured_stderr {
public:
    captured_stderr() : old_(std::cerr.rdbuf(text_.rdbuf())) {}
    ~captured_stderr() { std::cerr.rdbuf(old_); }
    captured_stderr(const captured_stderr&) = delete;
    captured_stderr& operator=(const captured_stderr&) = delete;

    /// Everything written so far (since the last take()).
    std::string text() const { return text_.str(); }

    /// The lines written since the last call.
    std::vector<std::string> take() {
        std::vector<std::string> lines;
        std::string line;
        while (std::getline(text_, line)) {
            lines.push_back(line);
        }
        text_.str("");
        text_.clear();
        return lines;
    }

private:
    std::stringstream text_;
    std::streambuf* old_;
};

}  // namespace tollgate::test
