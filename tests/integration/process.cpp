#include "process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>

namespace tollgate::test {

tollgate_process::tollgate_process(
    std::vector<std::string> args, std::map<std::string, std::string> env, bool read_stdout,
    std::optional<std::pair<std::uint64_t, std::uint64_t>> open_files) {
    int fds[2];
    int out[2];
    if (::pipe2(fds, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe failed");
    }
    pid_ = ::fork();
    if (pid_ == 0) {
        ::dup2(fds[1], STDERR_FILENO);
        ::dup2(out[1], STDOUT_FILENO);
        for (const auto& [name, value] : env) {
            ::setenv(name.c_str(), value.c_str(), 1);
        }
        if (open_files) {
            const rlimit limit{open_files->first, open_files->second};
            if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
                ::_exit(126);
            }
        }
        std::vector<char*> argv;
        std::string binary = TOLLGATE_BINARY;
        argv.push_back(binary.data());
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        ::execv(binary.c_str(), argv.data());
        ::_exit(127);
    }
    ::close(fds[1]);
    ::close(out[1]);
    reader_ = std::thread([this, fd = fds[0]] { read_stderr(fd); });
    if (!read_stdout) {
        ::close(out[0]);
        return;
    }
    stdout_reader_ = std::thread([this, fd = out[0]] {
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) {
            std::lock_guard lock(mutex_);
            stdout_.append(buf, static_cast<std::size_t>(n));
        }
        ::close(fd);
    });
}

tollgate_process::~tollgate_process() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) {
        reader_.join();
    }
    if (stdout_reader_.joinable()) {
        stdout_reader_.join();
    }
}

void tollgate_process::read_stderr(int fd) {
    char buf[4096];
    while (true) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        std::lock_guard lock(mutex_);
        stderr_.append(buf, static_cast<std::size_t>(n));
        cv_.notify_all();
    }
    ::close(fd);
    std::lock_guard lock(mutex_);
    eof_ = true;
    cv_.notify_all();
}

bool tollgate_process::wait_for_log(const std::string& text) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
        return eof_ || stderr_.find(text) != std::string::npos;
    }) && stderr_.find(text) != std::string::npos;
}

bool tollgate_process::wait_listening() {
    // The line arrives in pieces; wait until all of it is there.
    static const std::regex line(
        R"(listening on [^ ]*:(\d+), admin on [^ ]*:(\d+), upstream [^ ,\n]*(, tls on [^ ]*:(\d+))?\n)");
    std::smatch m;
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10),
                      [&] { return eof_ || std::regex_search(stderr_, m, line); }) ||
        !std::regex_search(stderr_, m, line)) {
        return false;
    }
    port_ = static_cast<std::uint16_t>(std::stoi(m[1]));
    admin_port_ = static_cast<std::uint16_t>(std::stoi(m[2]));
    tls_port_ = m[4].matched ? static_cast<std::uint16_t>(std::stoi(m[4])) : 0;
    lock.unlock();
    wait_main_loop();
    return true;
}

void tollgate_process::wait_main_loop() {
    // The line is written just before the main thread first waits in its
    // event loop. Under ThreadSanitizer that first wait allocates the
    // thread's signal state, and a signal landing during that allocation is
    // stored in a second one that is then dropped: now and then the first
    // SIGHUP was lost (strace shows the two allocations around it; a build
    // without TSan never lost one). So wait until the main thread sleeps in
    // epoll_wait, as /proc tells; where it cannot tell, do not wait.
    const std::string syscall_file = "/proc/" + std::to_string(pid_) + "/syscall";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        std::ifstream in(syscall_file);
        std::string number;
        if (!(in >> number)) {
            return;
        }
#ifdef SYS_epoll_wait
        if (number == std::to_string(SYS_epoll_wait)) {
            return;
        }
#endif
        if (number == std::to_string(SYS_epoll_pwait)) {
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

void tollgate_process::signal(int signo) {
    ::kill(pid_, signo);
}

std::optional<int> tollgate_process::wait_exit(int seconds) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        pid_t r = ::waitpid(pid_, &status, WNOHANG);
        if (r == pid_) {
            pid_ = -1;
            killed_by_ = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
}

std::string tollgate_process::stdout_text() {
    if (pid_ < 0 && stdout_reader_.joinable()) {
        stdout_reader_.join();  // exited: everything it printed is in
    }
    std::lock_guard lock(mutex_);
    return stdout_;
}

std::string tollgate_process::stderr_text() {
    std::unique_lock lock(mutex_);
    if (pid_ < 0) {
        // Exited: wait until the pipe has given up everything it printed.
        cv_.wait_for(lock, std::chrono::seconds(5), [&] { return eof_; });
    }
    return stderr_;
}

namespace {

// This test process's directory for write_temp_file, removed when the
// process exits normally (a forked child leaves with _exit and keeps it).
class temp_dir {
public:
    temp_dir()
        : path_(std::filesystem::temp_directory_path() /
                ("tollgate-test-" + std::to_string(::getpid()))) {
        std::filesystem::create_directories(path_);
    }
    ~temp_dir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

}  // namespace

std::string write_temp_file(const std::string& name, const std::string& text) {
    static const temp_dir dir;
    auto path = dir.path() / name;
    std::ofstream(path) << text;
    return path.string();
}

}  // namespace tollgate::test
