#pragma once
// The framing corpus (tests/data/framing/*.corpus): cases of raw bytes with
// what must happen to them. Header-only so the unit tests (validator
// verdicts) and the integration tests (over real sockets) read one file.
//
// Format, one directive per line, `#` starts a comment line:
//
//   case <name>                   starts a case
//   ref <text>                    where the case comes from (RFC section, research)
//   validator ok|<status>         verdict of validate_*_head on the first head of `send`
//   status <s> [<s> ...]          statuses the client receives, in order ("-": none)
//   closed yes|no                 whether tollgate closes the client connection after them
//   upstream <METHOD> <target> <body>   a complete request the upstream receives, in order
//   aborted <METHOD> <target>     a request whose head may reach the upstream before
//                                 its connection is cut, the body incomplete (whether
//                                 the head goes first depends on how the bytes arrive)
//   send <bytes>                  bytes to send; several `send` lines are concatenated
//   end
//
// Response cases (responses.corpus) use `send` for what the upstream answers
// to `GET /`, `status`/`closed` for what the client gets, and also:
//
//   body <body>                   the body the client receives
//   eof                           the upstream closes its connection after `send`
//   truncated                     the client gets the response head, then the
//                                 connection is cut before the body is complete
//
// <bytes> and <body> are escaped: \r \n \t \0 \\ \xHH, \s for a space (so
// trailing spaces survive editors); a body of `-` is empty.

#include <cctype>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tollgate::test::framing {

struct expected_request {
    std::string method;
    std::string target;
    std::string body;
};

struct corpus_case {
    std::string name;
    std::string ref;
    unsigned validator = 0;  ///< 0 = acceptable
    std::vector<unsigned> statuses;
    bool closed = false;
    std::vector<expected_request> upstream;
    std::vector<expected_request> aborted;
    std::optional<std::string> body;
    bool eof = false;
    bool truncated = false;
    std::string bytes;
    int line = 0;
};

inline std::string unescape(const std::string& text, const std::string& where) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '\\') {
            out += text[i];
            continue;
        }
        if (++i == text.size()) {
            throw std::runtime_error(where + ": dangling backslash");
        }
        switch (text[i]) {
            case 'r':
                out += '\r';
                break;
            case 'n':
                out += '\n';
                break;
            case 't':
                out += '\t';
                break;
            case '0':
                out += '\0';
                break;
            case 's':
                out += ' ';
                break;
            case '\\':
                out += '\\';
                break;
            case 'x': {
                if (i + 2 >= text.size()) {
                    throw std::runtime_error(where + ": short \\x escape");
                }
                out += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
                i += 2;
                break;
            }
            default:
                throw std::runtime_error(where + ": unknown escape \\" + text[i]);
        }
    }
    return out;
}

inline std::vector<corpus_case> load_corpus(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        throw std::runtime_error("cannot read " + path);
    }
    std::vector<corpus_case> cases;
    corpus_case current;
    bool open = false;
    bool has_status = false;
    bool has_closed = false;
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
        ++number;
        const std::string where = path + ":" + std::to_string(number);
        if (line.empty() || line[0] == '#') {
            continue;
        }
        const std::size_t space = line.find(' ');
        const std::string word = line.substr(0, space);
        const std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
        if (word == "case") {
            if (open) {
                throw std::runtime_error(where + ": case inside case");
            }
            current = corpus_case{};
            current.name = rest;
            current.line = number;
            open = true;
            has_status = false;
            has_closed = false;
            continue;
        }
        if (!open) {
            throw std::runtime_error(where + ": directive outside a case");
        }
        std::istringstream words(rest);
        if (word == "ref") {
            current.ref = rest;
        } else if (word == "validator") {
            current.validator = rest == "ok" ? 0 : static_cast<unsigned>(std::stoul(rest));
        } else if (word == "status") {
            has_status = true;
            std::string s;
            while (words >> s) {
                if (s != "-") {
                    current.statuses.push_back(static_cast<unsigned>(std::stoul(s)));
                }
            }
        } else if (word == "closed") {
            has_closed = true;
            if (rest != "yes" && rest != "no") {
                throw std::runtime_error(where + ": closed yes|no");
            }
            current.closed = rest == "yes";
        } else if (word == "upstream" || word == "aborted") {
            expected_request r;
            std::string body;
            if (!(words >> r.method >> r.target)) {
                throw std::runtime_error(where + ": " + word + " needs a method and a target");
            }
            if (word == "upstream") {
                if (!(words >> body)) {
                    throw std::runtime_error(where + ": upstream needs a body (- for none)");
                }
                r.body = body == "-" ? "" : unescape(body, where);
                current.upstream.push_back(r);
            } else {
                current.aborted.push_back(r);
            }
        } else if (word == "body") {
            current.body = rest == "-" ? "" : unescape(rest, where);
        } else if (word == "eof") {
            current.eof = true;
        } else if (word == "truncated") {
            current.truncated = true;
        } else if (word == "send") {
            current.bytes += unescape(rest, where);
        } else if (word == "end") {
            if (!has_status || !has_closed || current.bytes.empty()) {
                throw std::runtime_error(where + ": case " + current.name +
                                         " needs status, closed and send");
            }
            cases.push_back(current);
            open = false;
        } else {
            throw std::runtime_error(where + ": unknown directive " + word);
        }
    }
    if (open) {
        throw std::runtime_error(path + ": case " + current.name + " has no end");
    }
    return cases;
}

/// Printable form of raw bytes for failure messages.
inline std::string printable(const std::string& bytes) {
    std::string out;
    for (unsigned char c : bytes) {
        if (c == '\r') {
            out += "\\r";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c >= 0x7f) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

}  // namespace tollgate::test::framing
