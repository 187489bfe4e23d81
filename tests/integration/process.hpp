#pragma once
// The real tollgate binary as a child process, for what only a process can
// show: signals, exit codes, config files and environment.

#include <sys/types.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tollgate::test {

class tollgate_process {
public:
    /// Starts TOLLGATE_BINARY with `args` and `env` added to the environment.
    /// Without `read_stdout`, nobody reads its stdout: the pipe's read end is
    /// closed at once, as when a log shipper reading it has gone.
    /// `open_files` sets the child's RLIMIT_NOFILE (soft, hard) before it starts.
    tollgate_process(std::vector<std::string> args, std::map<std::string, std::string> env = {},
                     bool read_stdout = true,
                     std::optional<std::pair<std::uint64_t, std::uint64_t>> open_files = {});
    ~tollgate_process();

    /// Waits (up to 10 s) for the "listening on" line; false if it exited first.
    bool wait_listening();
    std::uint16_t port() const { return port_; }
    std::uint16_t admin_port() const { return admin_port_; }
    /// The TLS listener's port (0 without `tls.listen`).
    std::uint16_t tls_port() const { return tls_port_; }

    void signal(int signo);
    pid_t pid() const { return pid_; }
    /// Waits up to `seconds` for the process to exit; its exit code, or nullopt.
    std::optional<int> wait_exit(int seconds = 10);
    /// After wait_exit(): the signal that ended the process, 0 if it exited
    /// (wait_exit() reports both as 128 + n).
    int killed_by() const { return killed_by_; }
    /// Waits (up to 10 s) for a stderr line containing `text`.
    bool wait_for_log(const std::string& text);
    std::string stderr_text();
    /// Everything printed on stdout (complete once the process has exited).
    std::string stdout_text();

private:
    void read_stderr(int fd);
    /// Waits (up to 10 s) until the main thread waits in its event loop.
    void wait_main_loop();

    int killed_by_ = 0;
    pid_t pid_ = -1;
    std::thread reader_;
    std::thread stdout_reader_;
    std::string stdout_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::string stderr_;
    bool eof_ = false;
    std::uint16_t port_ = 0;
    std::uint16_t admin_port_ = 0;
    std::uint16_t tls_port_ = 0;
};

/// Writes `text` to `name` in this test process's own directory under the
/// temp dir (removed when the process exits); returns its path.
std::string write_temp_file(const std::string& name, const std::string& text);

}  // namespace tollgate::test
