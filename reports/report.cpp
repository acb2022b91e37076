// Report writers. JSON schema: reports/schema/result.schema.json, described in docs/report-format.md.
#include "normcheck/report.hpp"

#include "normcheck/git_commit.hpp"
#include "normcheck/partition.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fcntl.h>
#include <sys/utsname.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include <cmath>
#include <ctime>
#include <fstream>
#include <limits>
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

namespace normcheck {

std::string reference_label(const RunReport& r) {
  if (r.reference_kind == "fast") return "exact (fast reference)";
  if (r.reference_kind == "slow") return fmt::format("slow, {} bits", r.reference_bits);
  return fmt::format("{} bits (kind not recorded)", r.reference_bits);
}

namespace {

using nlohmann::json;

/// JSON has no NaN/Inf: non-finite numbers are written as the strings "nan", "inf", "-inf".
json num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

std::string fmt_num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{:.6g}", v);
}

std::string coords_text(const std::vector<int64_t>& c) { return fmt::format("[{}]", fmt::join(c, ",")); }


std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') out += ' ';
        else out += c;
    }
  }
  return out;
}

std::string md_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else out += c;
  }
  return out;
}

const TensorComparison* worst_tensor(const CaseResult& c) {
  const TensorComparison* w = nullptr;
  for (const auto& t : c.tensors)
    if (!w || t.worst_ratio > w->worst_ratio) w = &t;
  return w;
}

}  // namespace

namespace {

/// Writes all of text to fd; false (errno set) on any error.
bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    text.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

void write_text_file(const std::string& path, const std::string& text) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    // A device or pipe (/dev/stdout, /dev/full): written in place, every error reported.
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) throw Error(fmt::format("cannot write report {}: {}", path, errno_text()));
    const bool ok = write_all(fd, text);
    const std::string why = errno_text();
    if (::close(fd) != 0 || !ok) throw Error(fmt::format("error writing report {}: {}", path, ok ? errno_text() : why));
    return;
  }
  // A regular file: written to a temporary file in the same directory and renamed over the
  // path, so the path holds either the complete new report or nothing of it.
  const std::filesystem::path target(path);
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  std::string name = target.filename().string();
  name.insert(0, 1, '.');
  name += ".tmp-XXXXXX";
  std::string tmp = (dir / name).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) throw Error(fmt::format("cannot write report {}: {}", path, errno_text()));
  const mode_t mask = ::umask(0);
  ::umask(mask);
  bool ok = ::fchmod(fd, 0666 & ~mask) == 0 && write_all(fd, text);
  std::string why = errno_text();
  ok = ::close(fd) == 0 && ok;
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) ok = false, why = errno_text();
  if (!ok) {
    ::unlink(tmp.c_str());
    throw Error(fmt::format("error writing report {}: {}", path, why));
  }
}

void prepare_output_path(const std::string& path, const std::string& flag) {
  namespace fs = std::filesystem;
  if (path.empty()) return;
  std::error_code ec;
  const fs::path target(path);
  const fs::file_status st = fs::status(target, ec);
  if (fs::is_directory(st)) throw Error(fmt::format("{} {}: is a directory", flag, path));
  if (fs::exists(st) && !fs::is_regular_file(st)) {  // a device or pipe: must open for writing
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno != ENXIO) throw Error(fmt::format("{} {}: cannot write: {}", flag, path, errno_text()));
    if (fd >= 0) ::close(fd);
    return;
  }
  const fs::path dir = target.has_parent_path() ? target.parent_path() : ".";
  if (!fs::is_directory(dir, ec))
    throw Error(fmt::format("{} {}: directory {} does not exist", flag, path, dir.string()));
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error(fmt::format("{} {}: cannot write in {}: {}", flag, path, dir.string(), errno_text()));
  // A report left by an earlier run must not pass for this run's: removed now, written at the end.
  if (fs::exists(st) && ::unlink(path.c_str()) != 0)
    throw Error(fmt::format("{} {}: cannot remove the previous report: {}", flag, path, errno_text()));
}

void Tally::add(Verdict v, bool weak_check) {
  if (weak_check && (v == Verdict::pass || v == Verdict::warn)) {
    ++weak;
    warn += v == Verdict::warn;
    return;
  }
  switch (v) {
    case Verdict::pass: ++pass; break;
    case Verdict::fail:
    case Verdict::nondeterministic: ++fail; break;
    case Verdict::unsupported: ++unsupported; break;
    case Verdict::error:
    case Verdict::crash:
    case Verdict::timeout:
    case Verdict::overrun: ++error; break;
    case Verdict::warn: ++pass, ++warn; break;
    case Verdict::not_certifiable: ++not_certifiable; break;
  }
}

Tally tally(const std::vector<CaseResult>& cases) {
  Tally t;
  for (const auto& c : cases) {
    t.add(c.verdict, c.weak_check);
    t.known += is_failure(c.verdict) && !c.known_failure.empty();
  }
  return t;
}

bool is_failure(Verdict v) {
  return v != Verdict::pass && v != Verdict::unsupported && v != Verdict::warn && v != Verdict::not_certifiable;
}

std::string reproducer(const std::string& backend, const std::string& descriptor) {
  auto quote = [](const std::string& s) {
    if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789_,=.:+-/") == std::string::npos)
      return s;
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  return fmt::format("normcheck --backend {} --case {}", quote(backend), quote(descriptor));
}

std::string explain(const CaseResult& c) {
  std::string out;
  for (const auto& t : c.tensors) {
    if (t.pass && t.undefined == 0) continue;
    if (t.undefined > 0 && t.pass) {
      out += fmt::format("      {}: {} element(s) not compared: the reference is undefined there "
                         "(unbiased variance of a single value, 0/0)\n", t.name, t.undefined);
      continue;
    }
    out += fmt::format("      {}: {}/{} over tolerance", t.name, t.over_tolerance, t.numel);
    if (t.nonfinite_mismatch) out += fmt::format(", {} non-finite mismatch(es)", t.nonfinite_mismatch);
    out += fmt::format("; worst at {}: got {}, expected {}, |err| {} = {}× budget {} (dominant term: {}; "
                       "{}× the probabilistic budget); max {} ulp\n",
                       coords_text(t.worst.coords), fmt_num(t.worst.got), fmt_num(t.worst.expected),
                       fmt_num(t.worst.abs_err), fmt_num(t.worst_ratio), fmt_num(t.worst.tol),
                       to_string(t.dominant), fmt_num(t.worst_ratio_prob), fmt_num(t.max_ulp));
  }
  return out;
}

std::string to_json_text(const RunReport& r) {
  json j;
  j["schema"] = "normcheck-result/1";
  j["normcheck_version"] = r.normcheck_version;
  j["command"] = r.command;
  j["started_utc"] = r.started_utc;
  j["wall_seconds"] = r.wall_seconds;
  j["complete"] = r.complete;
  j["incomplete_reason"] = r.incomplete_reason;
  j["run"] = {{"dtype_override", r.dtype_override}, {"convention_override", r.convention_override},
              {"planned_cases", r.planned_cases}, {"plan_digest", r.plan_digest}};
  j["shard"] = {{"index", r.shard_index}, {"count", r.shard_count}};
  j["expect_file"] = r.expect_file;
  j["machine"] = {{"cpu", r.machine}, {"compiler", r.compiler}, {"host", r.host}, {"os", r.os},
                  {"memory_bytes", r.memory}};
  j["normcheck_commit"] = r.commit;
  j["backend"] = {{"name", r.backend}, {"id", r.backend_name}, {"version", r.backend_version},
                  {"notes", r.backend_notes}};
  j["suite"] = r.suite;
  j["reference"] = {{"precision_bits", r.reference_bits}, {"kind", r.reference_kind}};
  const Tally t = tally(r.cases);
  j["summary"] = {{"total", t.total()}, {"pass", t.pass}, {"fail", t.fail}, {"unsupported", t.unsupported},
                  {"error", t.error}, {"known_failures", t.known}, {"warn", t.warn},
                  {"not_certifiable", t.not_certifiable}, {"weak", t.weak}};
  json cases = json::array();
  for (const auto& c : r.cases) {
    json jc;
    jc["index"] = c.index;
    jc["descriptor"] = c.descriptor;
    jc["known_failure"] = c.known_failure;
    jc["op"] = to_string(c.problem.op);
    jc["pass"] = to_string(c.problem.pass);
    jc["dtype"] = to_string(c.problem.dtype);
    jc["layout"] = to_string(c.problem.layout);
    jc["note"] = c.note;
    jc["verdict"] = to_string(c.verdict);
    jc["reason"] = c.reason;
    jc["reproducer"] = reproducer(r.backend, c.descriptor) + c.input_options;
    jc["condition_number"] = num(c.condition_number);
    jc["set_size"] = make_partition(c.problem).set_size;
    jc["weak_check"] = c.weak_check;
    jc["suspected_cause"] = c.suspected_cause;
    jc["seconds"] = c.seconds;
    jc["backend_seconds"] = c.backend_seconds;
    json tensors = json::array();
    for (const auto& tc : c.tensors) {
      json jt;
      jt["name"] = tc.name;
      jt["dtype"] = to_string(tc.dtype);
      jt["shape"] = tc.dims;
      jt["numel"] = tc.numel;
      jt["pass"] = tc.pass;
      jt["over_tolerance"] = tc.over_tolerance;
      jt["nonfinite_mismatch"] = tc.nonfinite_mismatch;
      jt["undefined"] = tc.undefined;
      jt["over_probabilistic"] = tc.over_probabilistic;
      jt["max_abs_err"] = num(tc.max_abs_err);
      jt["max_rel_err"] = num(tc.max_rel_err);
      jt["max_ulp"] = num(tc.max_ulp);
      jt["worst_ratio"] = num(tc.worst_ratio);
      jt["worst_ratio_prob"] = num(tc.worst_ratio_prob);
      jt["worst_ratio_acc"] = num(tc.worst_ratio_acc);
      jt["dominant_term"] = to_string(tc.dominant);
      jt["warn"] = tc.warn;
      if (tc.worst.index >= 0)
        jt["worst"] = {{"index", tc.worst.index}, {"coords", tc.worst.coords},
                       {"got", num(tc.worst.got)}, {"expected", num(tc.worst.expected)},
                       {"abs_err", num(tc.worst.abs_err)}, {"tolerance", num(tc.worst.tol)}};
      tensors.push_back(jt);
    }
    jc["tensors"] = tensors;
    cases.push_back(jc);
  }
  j["cases"] = cases;
  return j.dump(2) + "\n";
}

void write_json(const RunReport& r, const std::string& path) { write_text_file(path, to_json_text(r)); }

namespace {
double read_num(const json& v) {
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    return s == "-inf" ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  return v.get<double>();
}
Verdict read_verdict(const std::string& s) {
  for (Verdict v : {Verdict::pass, Verdict::fail, Verdict::unsupported, Verdict::error, Verdict::crash,
                    Verdict::timeout, Verdict::overrun, Verdict::warn, Verdict::not_certifiable,
                    Verdict::nondeterministic})
    if (to_string(v) == s) return v;
  throw Error("unknown verdict '" + s + "'");
}
}  // namespace

namespace {

/// An integer field in [lo, hi]. JSON floats (5.66667e+44), out-of-range values and non-numbers
/// are errors, never a silent conversion.
int64_t read_int(const json& v, const char* field, int64_t lo, int64_t hi) {
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(fmt::format("{} = {} is out of range [{}, {}]", field, u, lo, hi));
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    throw Error(fmt::format("{} = {} is not an integer", field, v.dump()));
  }
  if (x < lo || x > hi) throw Error(fmt::format("{} = {} is out of range [{}, {}]", field, x, lo, hi));
  return x;
}

int read_int32(const json& v, const char* field, int64_t lo = 0, int64_t hi = std::numeric_limits<int>::max()) {
  return static_cast<int>(read_int(v, field, lo, hi));
}

std::vector<int64_t> read_ints(const json& v, const char* field) {
  if (!v.is_array()) throw Error(fmt::format("{} is not an array", field));
  std::vector<int64_t> out;
  for (const auto& e : v) out.push_back(read_int(e, field, 0, std::numeric_limits<int64_t>::max()));
  return out;
}

TensorComparison read_tensor(const json& jt) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  TensorComparison t;
  t.name = jt.at("name");
  t.dtype = parse_dtype(jt.at("dtype").get<std::string>());
  t.dims = read_ints(jt.at("shape"), "tensors.shape");
  t.numel = read_int(jt.at("numel"), "tensors.numel", 0, kMax);
  t.pass = jt.at("pass");
  t.over_tolerance = read_int(jt.at("over_tolerance"), "tensors.over_tolerance", 0, kMax);
  t.nonfinite_mismatch = read_int(jt.at("nonfinite_mismatch"), "tensors.nonfinite_mismatch", 0, kMax);
  t.undefined = read_int(jt.at("undefined"), "tensors.undefined", 0, kMax);
  if (jt.contains("over_probabilistic"))
    t.over_probabilistic = read_int(jt.at("over_probabilistic"), "tensors.over_probabilistic", 0, kMax);
  t.max_abs_err = read_num(jt.at("max_abs_err"));
  t.max_rel_err = read_num(jt.at("max_rel_err"));
  t.max_ulp = read_num(jt.at("max_ulp"));
  t.worst_ratio = read_num(jt.at("worst_ratio"));
  if (jt.contains("worst_ratio_prob")) t.worst_ratio_prob = read_num(jt.at("worst_ratio_prob"));
  if (jt.contains("worst_ratio_acc")) t.worst_ratio_acc = read_num(jt.at("worst_ratio_acc"));
  t.warn = jt.value("warn", false);
  for (int k = 0; k <= static_cast<int>(BudgetTerm::running_update); ++k)
    if (jt.value("dominant_term", "") == to_string(static_cast<BudgetTerm>(k))) t.dominant = static_cast<BudgetTerm>(k);
  if (jt.contains("worst")) {
    const auto& w = jt.at("worst");
    t.worst = {read_int(w.at("index"), "worst.index", 0, kMax), read_ints(w.at("coords"), "worst.coords"),
               read_num(w.at("got")), read_num(w.at("expected")), read_num(w.at("abs_err")),
               read_num(w.at("tolerance"))};
  }
  return t;
}

CaseResult read_case(const json& jc) {
  CaseResult c;
  c.index = read_int32(jc.at("index"), "cases.index");
  c.descriptor = jc.at("descriptor");
  c.problem = parse_descriptor(c.descriptor);
  c.note = jc.at("note");
  c.verdict = read_verdict(jc.at("verdict"));
  c.reason = jc.at("reason");
  c.known_failure = jc.at("known_failure");
  c.condition_number = read_num(jc.at("condition_number"));
  c.weak_check = jc.at("weak_check");
  c.suspected_cause = jc.value("suspected_cause", "");
  c.seconds = jc.at("seconds");
  c.backend_seconds = jc.value("backend_seconds", 0.0);  // optional: earlier reports lack it
  for (const auto& jt : jc.at("tensors")) c.tensors.push_back(read_tensor(jt));
  return c;
}

RunReport read_report(const json& j) {
  if (j.at("schema") != "normcheck-result/1")
    throw Error(fmt::format("schema {} is not normcheck-result/1", j.at("schema").dump()));
  RunReport r;
  r.normcheck_version = j.at("normcheck_version");
  r.command = j.at("command");
  r.started_utc = j.at("started_utc");
  r.wall_seconds = j.at("wall_seconds");
  r.complete = j.at("complete");
  r.incomplete_reason = j.value("incomplete_reason", "");
  r.machine = j.at("machine").at("cpu");
  r.compiler = j.at("machine").at("compiler");
  r.host = j.at("machine").value("host", "");
  r.os = j.at("machine").value("os", "");
  r.memory = j.at("machine").value("memory_bytes", 0LL);
  r.commit = j.value("normcheck_commit", "");
  r.backend = j.at("backend").at("name");
  r.backend_name = j.at("backend").at("id");
  r.backend_notes = j.at("backend").at("notes").get<std::vector<std::string>>();
  r.backend_version = j.at("backend").at("version");
  r.suite = j.at("suite");
  r.reference_bits = read_int32(j.at("reference").at("precision_bits"), "reference.precision_bits", 1);
  r.reference_kind = j.at("reference").value("kind", std::string());
  r.shard_count = read_int32(j.at("shard").at("count"), "shard.count", 1, kMaxShards);
  r.shard_index = read_int32(j.at("shard").at("index"), "shard.index", 0, r.shard_count - 1);
  r.expect_file = j.at("expect_file");
  const json& run = j.at("run");
  r.dtype_override = run.at("dtype_override");
  r.convention_override = run.at("convention_override");
  r.planned_cases = read_int32(run.at("planned_cases"), "run.planned_cases");
  r.plan_digest = run.at("plan_digest");
  for (const auto& jc : j.at("cases")) {
    CaseResult c = read_case(jc);
    if (const std::string rep = jc.value("reproducer", ""), base = reproducer(r.backend, c.descriptor);
        rep.size() > base.size() && rep.compare(0, base.size(), base) == 0)
      c.input_options = rep.substr(base.size());  // --input files (file_inputs.hpp) survive a merge
    r.cases.push_back(std::move(c));
  }
  return r;
}

}  // namespace

RunReport parse_json_report(std::string_view text, const std::string& origin) {
  try {
    return read_report(json::parse(text));
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not a normcheck JSON report: {}", origin, e.what()));
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", origin, e.what()));
  }
}

RunReport read_json(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path);
  constexpr size_t kMaxBytes = size_t{1} << 30;  // /dev/zero or a wrong path: an error, not bad_alloc
  std::string text;
  std::vector<char> chunk(size_t{1} << 20);
  while (f.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || f.gcount() > 0) {
    text.append(chunk.data(), static_cast<size_t>(f.gcount()));
    if (text.size() > kMaxBytes) throw Error(fmt::format("{}: larger than 1 GiB, not a normcheck JSON report", path));
  }
  return parse_json_report(text, path);
}

std::string plan_digest(const std::vector<std::string>& descriptors) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis and prime
  for (const auto& d : descriptors)
    for (const char c : d + "\n") h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return fmt::format("{:016x}", h);
}

RunReport merge_reports(const std::vector<RunReport>& parts, const std::vector<std::string>& names) {
  if (parts.empty() || parts.size() != names.size()) throw Error("merge: no reports");
  const RunReport& first = parts.front();
  RunReport merged = first;
  merged.cases.clear();
  merged.wall_seconds = 0;
  merged.complete = true;
  merged.incomplete_reason.clear();
  std::vector<int> seen(static_cast<size_t>(first.shard_count), 0);
  std::set<int> indices;
  std::vector<std::string> interrupted;
  for (size_t k = 0; k < parts.size(); ++k) {
    const RunReport& p = parts[k];
    auto same = [&](const std::string& field, const std::string& a, const std::string& b) {
      if (a != b)
        throw Error(fmt::format("merge: {} and {} are not shards of one run: {} is '{}' in one and '{}' in the other",
                                names[0], names[k], field, a, b));
    };
    same("normcheck version", first.normcheck_version, p.normcheck_version);
    same("backend", first.backend, p.backend);
    same("backend version", first.backend_version, p.backend_version);
    same("suite", first.suite, p.suite);
    same("reference precision_bits", std::to_string(first.reference_bits), std::to_string(p.reference_bits));
    same("reference kind", first.reference_kind, p.reference_kind);
    same("--dtype", first.dtype_override, p.dtype_override);
    same("--convention", first.convention_override, p.convention_override);
    same("--expect file", first.expect_file, p.expect_file);
    same("shard count", std::to_string(first.shard_count), std::to_string(p.shard_count));
    same("planned cases", std::to_string(first.planned_cases), std::to_string(p.planned_cases));
    same("plan digest (the list of planned cases)", first.plan_digest, p.plan_digest);
    if (seen[static_cast<size_t>(p.shard_index)]++)
      throw Error(fmt::format("merge: shard {}/{} given twice ({})", p.shard_index, p.shard_count, names[k]));
    int own = 0;
    for (const auto& c : p.cases) {
      if (c.index < 0 || c.index >= p.planned_cases || c.index % p.shard_count != p.shard_index)
        throw Error(fmt::format("merge: {} holds case index {}, which is not in shard {}/{} of {} planned cases",
                                names[k], c.index, p.shard_index, p.shard_count, p.planned_cases));
      if (!indices.insert(c.index).second)
        throw Error(fmt::format("merge: case index {} ({}) appears twice", c.index, c.descriptor));
      ++own;
    }
    const int64_t share = (int64_t{p.planned_cases} - p.shard_index + p.shard_count - 1) / p.shard_count;
    if (p.complete && own != share)
      throw Error(fmt::format("merge: {} is marked complete but holds {} of the {} cases of shard {}/{}", names[k],
                              own, share, p.shard_index, p.shard_count));
    if (!p.complete) interrupted.push_back(fmt::format("shard {}/{} incomplete ({})", p.shard_index, p.shard_count,
                                                       p.incomplete_reason.empty() ? "interrupted" : p.incomplete_reason));
    merged.wall_seconds = std::max(merged.wall_seconds, p.wall_seconds);  // shards run side by side
    merged.cases.insert(merged.cases.end(), p.cases.begin(), p.cases.end());
  }
  std::vector<std::string> why;
  for (size_t i = 0; i < seen.size(); ++i)
    if (!seen[i]) why.push_back(fmt::format("shard {}/{} missing", i, seen.size()));
  why.insert(why.end(), interrupted.begin(), interrupted.end());
  if (!why.empty()) {
    merged.complete = false;  // a merge without every case is not the whole run
    merged.incomplete_reason = fmt::format("{}", fmt::join(why, "; "));
  }
  std::sort(merged.cases.begin(), merged.cases.end(),
            [](const CaseResult& a, const CaseResult& b) { return a.index < b.index; });
  merged.shard_index = 0;
  merged.shard_count = 1;
  return merged;
}

void write_junit(const RunReport& r, const std::string& path) {
  // Known failures (--expect) are reported as skipped, not as failures or errors.
  Tally t;
  for (const auto& c : r.cases) {
    if ((!c.known_failure.empty() && is_failure(c.verdict)) || c.verdict == Verdict::not_certifiable) ++t.unsupported;
    else t.add(c.verdict);
  }
  std::string x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  x += fmt::format("<testsuites name=\"normcheck\" tests=\"{}\" failures=\"{}\" errors=\"{}\" "
                   "skipped=\"{}\" time=\"{:.3f}\">\n",
                   t.total(), t.fail, t.error, t.unsupported, r.wall_seconds);
  x += fmt::format("  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" "
                   "time=\"{:.3f}\" timestamp=\"{}\">\n",
                   xml_escape("normcheck." + r.backend_name + "." + r.suite), t.total(), t.fail, t.error,
                   t.unsupported, r.wall_seconds, xml_escape(r.started_utc));
  x += "    <properties>\n";
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"normcheck_version", r.normcheck_version}, {"backend_version", r.backend_version},
           {"machine", r.machine}, {"compiler", r.compiler}, {"complete", r.complete ? "true" : "false"}})
    x += fmt::format("      <property name=\"{}\" value=\"{}\"/>\n", k, xml_escape(v));
  x += "    </properties>\n";
  for (const auto& c : r.cases) {
    x += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3f}\"",
                     xml_escape(fmt::format("normcheck.{}.{}.{}", r.backend_name, to_string(c.problem.op),
                                            to_string(c.problem.pass))),
                     xml_escape(c.descriptor), c.seconds);
    const std::string body = explain(c) + "reproduce: " + reproducer(r.backend, c.descriptor) + c.input_options;
    if (!c.known_failure.empty() && is_failure(c.verdict)) {  // expected by --expect: not a CI failure
      x += fmt::format(">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                       xml_escape(fmt::format("known failure ({}): {}; {}", to_string(c.verdict), c.known_failure, c.reason)));
      continue;
    }
    switch (c.verdict) {
      case Verdict::pass:
        if (c.weak_check)
          x += fmt::format(">\n      <system-out>{}</system-out>\n    </testcase>\n", xml_escape("WEAK CHECK: " + c.reason));
        else
          x += "/>\n";
        break;
      case Verdict::warn:
        x += fmt::format(">\n      <system-out>{}</system-out>\n    </testcase>\n", xml_escape("WARN: " + c.reason));
        break;
      case Verdict::not_certifiable:
        x += fmt::format(">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                         xml_escape("not certifiable: " + c.reason));
        break;
      case Verdict::fail:
      case Verdict::nondeterministic:
        x += fmt::format(">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                         c.verdict == Verdict::fail ? "mismatch" : "nondeterministic", xml_escape(c.reason),
                         xml_escape(body));
        break;
      case Verdict::error:
      case Verdict::crash:
      case Verdict::timeout:
      case Verdict::overrun:
        x += fmt::format(">\n      <error type=\"{}\" message=\"{}\">{}</error>\n    </testcase>\n",
                         c.verdict == Verdict::error ? "backend_error" : to_string(c.verdict),
                         xml_escape(c.reason), xml_escape(body));
        break;
      case Verdict::unsupported:
        x += fmt::format(">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                         xml_escape("unsupported: " + c.reason));
        break;
    }
  }
  x += "  </testsuite>\n</testsuites>\n";
  write_text_file(path, x);
}

std::string to_markdown(const RunReport& r) {
  const Tally t = tally(r.cases);
  std::string md = fmt::format("# normcheck report: {} on suite {}\n\n", r.backend, r.suite);
  md += fmt::format("- normcheck {}; backend {} ({})\n- machine: {}; compiler: {}\n"
                    "- started {} UTC; wall time {:.2f} s; reference {}\n",
                    r.normcheck_version, r.backend, r.backend_version, r.machine, r.compiler,
                    r.started_utc, r.wall_seconds, reference_label(r));
  if (!r.complete)
    md += fmt::format("- **INCOMPLETE: {}; cases below are those that ran**\n",
                      r.incomplete_reason.empty() ? "the run was interrupted" : r.incomplete_reason);
  md += fmt::format("- **{} cases: {} pass ({} with WARN), {} weak check (not a pass), {} fail, {} unsupported, {} error, "
                    "{} not certifiable**\n\n",
                    t.total(), t.pass, t.warn, t.weak, t.fail, t.unsupported, t.error, t.not_certifiable);
  md += "Tolerance rule: docs/comparison.md. `worst ratio` is max |error| / tolerance over all "
        "compared elements (≤ 1 passes).\n\n";
  md += "## By op × pass\n\n| op | pass | cases | pass | fail | unsupported | error | worst ratio |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|\n";
  std::map<std::pair<int, int>, std::vector<const CaseResult*>> groups;
  for (const auto& c : r.cases)
    groups[{static_cast<int>(c.problem.op), static_cast<int>(c.problem.pass)}].push_back(&c);
  for (const auto& [key, list] : groups) {
    Tally g;
    double worst = 0;
    for (const auto* c : list) {
      g.add(c->verdict);
      if (const auto* w = worst_tensor(*c)) worst = std::fmax(worst, w->worst_ratio);
    }
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} |\n", to_string(static_cast<Op>(key.first)),
                      to_string(static_cast<Pass>(key.second)), list.size(), g.pass, g.fail,
                      g.unsupported, g.error, fmt_num(worst));
  }
  bool any = false;
  for (const auto& c : r.cases) {
    if (c.verdict == Verdict::pass) continue;
    if (!any) md += "\n## Failures, errors and unsupported cases\n";
    any = true;
    md += fmt::format("\n### {} `{}`\n\n", to_string(c.verdict), c.descriptor);
    if (!c.note.empty()) md += fmt::format("Expected: {}\n\n", c.note);
    md += fmt::format("Reason: {}\n\n", c.reason);
    if (!c.suspected_cause.empty()) md += fmt::format("Suspected cause: {}\n\n", c.suspected_cause);
    const std::string e = explain(c);
    if (!e.empty()) md += "```\n" + e + "```\n\n";
    md += fmt::format("Reproduce: `{}`\n", reproducer(r.backend, c.descriptor) + c.input_options);
  }
  md += "\n## All cases\n\n| verdict | descriptor | worst tensor | ratio | κ1 | note |\n"
        "|---|---|---|---:|---:|---|\n";
  for (const auto& c : r.cases) {
    const auto* w = worst_tensor(c);
    std::string note = c.note;
    if (c.verdict == Verdict::pass && !c.reason.empty()) note += (note.empty() ? "" : " — ") + c.reason;
    md += fmt::format("| {} | `{}` | {} | {} | {} | {} |\n", to_string(c.verdict), c.descriptor,
                      w ? w->name : "-", w ? fmt_num(w->worst_ratio) : "-",
                      fmt_num(c.condition_number), md_escape(note));
  }
  return md;
}

void write_markdown(const RunReport& r, const std::string& path) { write_text_file(path, to_markdown(r)); }

std::string machine_description() {
  std::string model = "unknown CPU";
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return fmt::format("{}, {} hardware threads", model, std::thread::hardware_concurrency());
}

std::string host_description() {
  char buf[256] = {};
  return gethostname(buf, sizeof buf - 1) == 0 ? buf : "";
}

std::string os_description() {
  std::string name;
  std::ifstream f("/etc/os-release");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("PRETTY_NAME=", 0) == 0) {
      name = line.substr(12);
      if (name.size() >= 2 && name.front() == '"' && name.back() == '"') name = name.substr(1, name.size() - 2);
    }
  utsname u{};
  const std::string kernel = uname(&u) == 0 ? fmt::format("{} {} {}", u.sysname, u.release, u.machine) : "";
  if (name.empty()) return kernel;
  return kernel.empty() ? name : name + ", " + kernel;
}

long long memory_bytes() {
  std::ifstream f("/proc/meminfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("MemTotal:", 0) == 0) return std::atoll(line.c_str() + 9) * 1024;  // the file says kB
  return 0;
}

std::string normcheck_commit() { return kGitCommit; }

std::string compiler_description() {
#if defined(__clang__)
  return fmt::format("clang {}", __clang_version__);
#elif defined(__GNUC__)
  return fmt::format("g++ {}", __VERSION__);
#else
  return "unknown compiler";
#endif
}

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace normcheck
